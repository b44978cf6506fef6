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
    # the loop's throughput; on a slow machine the fit to the data (init_s, 2-4 s here) can
    # use the whole budget, and then there is no throughput to report rather than a 0
    if fast["steps"] > 0:
        assert fast["samples_per_s"] > 0 and fast["init_s"] < fast["train_s"]
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
