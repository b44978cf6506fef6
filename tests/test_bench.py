"""The benchmark's baselines are exact where they must be, and the harness runs end to end."""
import json
import os
import shutil

import numpy as np
import pytest

from bench.baselines import interpolate
from stsr_core.io import write_series
from stsr_core.series import VolumeSeries


def field(fn, n=9, nt=9):
    c = np.linspace(0, 1, n)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    t = np.linspace(0, 2, nt)
    return VolumeSeries(times=t, variables={"f": np.stack([fn(x, y, z, tt) for tt in t])},
                        origin=(0, 0, 0), spacing=(1 / (n - 1),) * 3)


def test_trilinear_linear_is_exact_for_linear_fields():
    fine = field(lambda x, y, z, t: 2 * x - y + 3 * z + 0.5 * t)
    pred = interpolate(fine.subsample(2, 4), fine, order=1)
    np.testing.assert_allclose(pred.variables["f"], fine.variables["f"], atol=1e-5)


def test_tricubic_cubic_beats_trilinear_linear_on_smooth_fields():
    fine = field(lambda x, y, z, t: np.sin(2 * x) * np.cos(3 * y) * z + np.sin(t), n=17, nt=17)
    coarse = fine.subsample(2, 4)
    err = {o: np.abs(interpolate(coarse, fine, order=o).variables["f"] - fine.variables["f"])
           for o in (1, 3)}
    assert np.sqrt((err[3] ** 2).mean()) < 0.5 * np.sqrt((err[1] ** 2).mean())
    # both reproduce the kept samples exactly
    for o in (1, 3):
        np.testing.assert_allclose(err[o][::4, ::2, ::2, ::2], 0, atol=1e-5)


def test_harness_end_to_end(tmp_path):
    from bench import run
    data = tmp_path / "data" / "tiny"
    data.mkdir(parents=True)
    s = field(lambda x, y, z, t: np.sin(3 * x + t) * np.cos(2 * y) + z)
    s.variables["g"] = s.variables["f"] ** 2
    write_series(s, str(data / "tiny.pvd"))
    out = tmp_path / "res"
    paraview = shutil.which("pvpython") is not None
    budget_s = 8
    rc = run.main(["--datasets", "tiny", "--data-dir", str(tmp_path / "data"), "--scales", "2",
                   "--methods", "trilinear,tricubic,fast", "--budget-seconds", str(budget_s),
                   "--device", "cpu", "--out", str(out)] + ([] if paraview else
                                                            ["--no-paraview"]))
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["trilinear+linear", "tricubic+cubic", "fast"]
    fast = res["rows"][2]
    assert fast["model_mb"] > 0 and fast["curve"][-1]["step"] == fast["steps"]
    # the loop's throughput; the default fast model is its base alone (nothing to train: the
    # fit to the data is the whole fit, within the budget); with a network, a slow machine's
    # fit to the data can use the whole budget, and then there is no throughput to report
    if fast["steps"] > 0:
        assert fast["samples_per_s"] > 0 and fast["init_s"] < fast["train_s"]
    elif fast["stopped"] == "fitted":
        assert fast["samples_per_s"] is None and 0 < fast["init_s"] <= 1.1 * budget_s
    else:
        assert fast["samples_per_s"] is None and fast["init_s"] >= budget_s
    if paraview:   # ParaView's own trilinear + linear agrees with the numpy one
        assert res["rows"][0]["paraview"]["max_rel_diff_vs_numpy"] < 1e-4
    for f in ("results.md", "psnr_vs_time_tiny.png", "slices_tiny.png"):
        assert os.path.getsize(out / f) > 0

    # a partial re-run merged with rows kept from an earlier run: marked, ordered, re-plotted
    from bench import merge
    old = tmp_path / "old"
    old.mkdir()
    earlier = dict(res["rows"][2], method="siren", psnr=1.0)
    (old / "results.json").write_text(json.dumps({"machine": res["machine"], "rows": [earlier]}))
    assert merge.main(["--new", str(out), "--old", str(old), "--take", "siren",
                       "--note", "siren from the earlier run"]) == 0
    merged = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in merged["rows"]] == ["trilinear+linear", "tricubic+cubic",
                                                      "siren", "fast"]
    assert merged["rows"][2]["from"] == "old" and merged["rows"][2]["psnr"] == 1.0
    md = (out / "results.md").read_text()
    assert "siren (run old)" in md and "siren from the earlier run" in md
    # taking the same method twice is refused rather than duplicating rows
    assert merge.main(["--new", str(out), "--old", str(old), "--take", "siren"]) == 2


def test_slab_baselines_equal_whole_grid_ones():
    """The scale benchmark's per-step, per-slab baselines are interpolate()'s, exactly."""
    from bench.baselines import SlabResampler, combine_in_time, time_weights
    fine = field(lambda x, y, z, t: np.sin(3 * x + 0.3 * t) * np.cos(5 * y) + z * z, n=17,
                 nt=17)
    coarse = fine.subsample(2, 4)
    c = np.arange(17) / 2
    for order in (1, 3):
        ref = interpolate(coarse, fine, order).variables["f"]
        for i, t in enumerate(fine.times):
            r = SlabResampler(combine_in_time(coarse.variables["f"],
                                              time_weights(coarse.times, t, order)), order)
            got = np.concatenate([r.slab(c[a:b], c, c) for a, b in ((0, 5), (5, 17))])
            np.testing.assert_allclose(got, ref[i], atol=1e-5)


def test_scale_harness_end_to_end(tmp_path):
    """bench.scale on its tiny case, with real CLI children: every figure is there and sane
    (the full cases take hours today; this checks the harness, not the engine's speed)."""
    import math
    import subprocess
    import sys
    out = tmp_path / "scale"
    r = subprocess.run([sys.executable, "-m", "bench.scale", "--size", "tiny", "--cases",
                        "A,growth", "--fit-minutes", "0.05", "--out", str(out)],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "scale.json").read_text())
    assert res["complete"] and res["machine"]["cores"] >= 1 and res["machine"]["git_commit"]
    a = res["cases"]["A"]
    assert a["fit"]["rc"] == 0 and a["fit"]["seconds"] > 0 and a["fit"]["max_rss_mb"] > 10
    assert a["model"]["bytes"] > 0 and a["model"]["ratio_to_coarse"] > 0
    assert a["coarse_float32_bytes"] == 4 * 9 ** 3 * 3 * 4
    assert a["compute"]["points_per_step"] == 17 ** 3 and a["compute"]["points_per_s"] > 0
    for m in ("stsr", "trilinear+linear", "tricubic+cubic"):
        p = a["psnr"][m]
        assert math.isfinite(p["mean"]) and math.isfinite(p["kept"]) \
            and math.isfinite(p["between"])
        assert set(p["per_step"]) == {"1", "4", "6", "7"}
        assert 10 < p["mean"] < 200
    for fmt in ("vti-raw", "vti-zlib", "h5-raw", "h5-gzip"):
        w = a["write_rates"][fmt]
        assert w["seconds"] > 0 and w["bytes"] > 0 and w["mb_per_s"] > 0
    (e2e,) = a["end_to_end"]
    assert e2e["format"] == "h5" and "skipped" not in e2e
    for m in ("stsr", "trilinear+linear"):
        x = e2e[m]
        assert x["rc"] == 0 and x["seconds"] > 0 and x["max_rss_mb"] > 10 and x["bytes"] > 0
        assert x["points_per_s"] > 0
    assert e2e["stsr_over_trilinear_time"] > 0
    assert not (out / "tmp" / "scratch").exists()         # the outputs were removed
    (g,) = res["growth"]
    assert g["from_case"] == "A" and g["fit_s"] == a["fit"]["seconds"]
    for f in ("scale.md", "scale.png"):
        assert os.path.getsize(out / f) > 0


def test_the_quality_harness_scores_every_row_and_reports_unknown_settings(tmp_path):
    """bench.quality --quick on tiny generated data (17^3 x 9): the base and the kept-step
    fix fitted in child processes, scored kept and per phase against the classical
    baselines with the error estimate's figures; a row whose setting this engine lacks is
    reported as not available, not a failure; a row fitted by the committed engine exported
    from git (as main at 2e1fd8a is, for today's default) is scored as the reference."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "bench.quality", "--quick", "--rows", "base,faces",
                        "--row", "later=no_such_setting=1", "--engine-row", "head=HEAD",
                        "--engine-row", "old=HEAD,no_such_setting=1", "--default", "head",
                        "--cache", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "out" / "quality.json") as fh:
        report = json.load(fh)
    assert [d["dataset"] for d in report["results"]] == ["fronts", "shear"]
    for d in report["results"]:
        assert d["fine"] == [17, 17, 17] and d["steps"] == 9 and d["kept_steps"] == 3
        assert set(d["tricubic_kept"]) == {"nearest", "mirror", "reflect"}
        assert "not_available" in d["rows"]["later"]
        assert "no_such_setting" in d["rows"]["old"]["not_available"]
        # the committed engine, exported outside the worktree, fits its own row
        assert not d["rows"]["head"]["engine_file"].startswith(root + os.sep)
        assert d["rows"]["faces"]["engine_file"].startswith(root + os.sep)
        for row in ("base", "faces", "head"):
            x = d["rows"][row]
            assert set(x["phase"]) == {"0", "1", "2", "3"}
            assert np.isclose(x["kept"], x["phase"]["0"])
            assert 0.5 < x["error"]["between"]["coverage"] <= 1.0
            assert x["fit_s"] > 0 and x["upscale_rate"] > 0 and x["rss_upscale"] > 1e8
        # the fix's kept steps are the cubic B-spline of the kept points, at least as good
        assert d["rows"]["faces"]["kept"] >= d["tricubic_kept"]["nearest"] - 0.1
    md = (tmp_path / "out" / "quality.md").read_text()
    assert "not available" in md and "Trained on" in md
    assert "reference between steps: `head`" in md and "faces between - head" in md
    assert (tmp_path / "out" / "quality.png").stat().st_size > 1000
