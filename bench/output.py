"""Output at the speed of compute (issue 24): what ``stsr upscale`` costs end to end per
output format and compression, beside a plain SciPy + VTK script doing the same job, on the
project's tornado as a user would run it.

Per grid size n (the fine tornado n^3 x 17 steps from examples/data/tornado/
generate_tornado.py; ``stsr coarsen --space 2 --time 4``; ``stsr fit`` with its default
budget), every run a child process (wall time, peak RSS from wait4):
  - start-up: what the first seconds of ``stsr upscale`` go to (interpreter, imports, torch,
    the model file, the first step);
  - computing alone: every output step computed as ``stsr upscale`` computes it, nothing
    written;
  - ``stsr upscale MODEL -o OUT --scale 2 --time-scale 4`` for each format and compression
    (its own split: computing, writing on the writer's thread, waiting for the writer), the
    output's size, and the seconds ParaView 5.11 takes to read every step (pvpython,
    bench/pv_read.py);
  - bench/scipy_vtk_upscale.py (SciPy trilinear + linear, VTK's XML writer uncompressed);
  - PSNR (``stsr eval``) of the default output and of the script's, kept and in-between
    steps apart and per phase of the interval;
and once, on one upscaled step: size and speed of each block compressor (one thread and
all threads), with and without a byte shuffle, and of Blosc/Zstd (hdf5plugin) when it can
be imported, each with what ParaView 5.11 reads it as.

    python -m bench.output [--sizes 65,129] [--full-size 129] [--fit-minutes M]
                           [--data DIR] [--out DIR] [--cases vti-none,h5-zlib,...]

Writes bench/results/<date>/output.json (after every run: a cut-off run keeps what it
measured), output.md and output.png. Outputs are removed after each run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(ROOT, "examples", "data", "tornado", "generate_tornado.py")
SPACE, TIME = 2, 4
# (format, extension, compression); the first is what `stsr upscale -o OUT.pvd` writes by
# default, and the only one also run at the other sizes
CASES = [("vti", ".pvd", None), ("vti", ".pvd", "none"), ("vti", ".pvd", "lz4"),
         ("vti", ".pvd", "zlib"), ("h5", ".h5", "none"), ("h5", ".h5", "zlib"),
         ("h5", ".h5", "lzf"), ("netcdf", ".nc", "none"), ("netcdf", ".nc", "zlib")]
PARAVIEW_READS = {"vti": "yes: OpenDataFile / File > Open (PVD reader)",
                  "netcdf": "yes: NetCDF CF reader (\"NetCDF Reader\") with its defaults; "
                            "OpenDataFile picks the CAM reader, which shows nothing",
                  "h5": "no (no ParaView 5.11 reader for this layout)"}


def env() -> Dict[str, str]:
    """This tree first on the path (the venv's stsr may be another checkout's)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def stsr(*args: str) -> List[str]:
    return [sys.executable, "-m", "stsr_core.cli", *args]


def run(cmd: Sequence[str], log: str, cwd: Optional[str] = None) -> Dict[str, Any]:
    """A child: wall seconds, peak RSS (MB, wait4), exit status; its output in ``log``."""
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env(),
                                cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode,
           "log": log, "load": os.getloadavg()[0]}
    if proc.returncode != 0:
        print(f"[output] failed (rc {proc.returncode}): {' '.join(cmd)}; see {log}",
              file=sys.stderr)
    return out


def size_of(path: str) -> int:
    """Bytes of an output: the file, or a .pvd and its folder."""
    total = os.path.getsize(path) if os.path.isfile(path) else 0
    folder = os.path.splitext(path)[0]
    if path.endswith(".pvd") and os.path.isdir(folder):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    return total


def remove_output(path: str) -> None:
    if os.path.isfile(path):
        os.remove(path)
    if path.endswith(".pvd"):
        shutil.rmtree(os.path.splitext(path)[0], ignore_errors=True)


# what a child measures in Python: start-up phases, and computing alone
STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import stsr_core.cli                      # what `stsr` imports before it parses arguments
t1 = time.perf_counter()
import torch                              # imported by the upscale command
t2 = time.perf_counter()
from stsr_core import api
t3 = time.perf_counter()
tm = api.load_model(sys.argv[1], device="cpu")
t4 = time.perf_counter()
grid = api.output_grid(tm.info.grid, scale=%d)
api.predict_timestep(tm, float(tm.info.times[0]), grid)
t5 = time.perf_counter()
json.dump({"import_cli_s": t1 - t0, "import_torch_s": t2 - t1, "import_api_s": t3 - t2,
           "load_model_s": t4 - t3, "first_step_s": t5 - t4}, open(sys.argv[2], "w"))
""" % SPACE
COMPUTE = r"""
import json, sys
from stsr_core import api
from bench.slab_scale import engine_alone   # the slab loop as stsr upscale runs it
model, scale, k, first, out = sys.argv[1:6]
tm = api.load_model(model, device="cpu")
grid = api.output_grid(tm.info.grid, scale=float(scale))
times = api.output_times(tm.info.times, time_scale=int(k))
times = times[:int(first)] if int(first) else times
r = engine_alone(tm, grid, [float(t) for t in times])
json.dump({"compute_s": r["compute_s"], "steps": len(times),
           "points_per_step": grid.n_points}, open(out, "w"))
"""


def prepare(n: int, data: str, logs: str, fit_minutes: Optional[float]) -> Dict[str, Any]:
    """Fine tornado, its coarse input and the fitted model (reused when already there)."""
    folder = os.path.join(data, f"tornado{n}")
    fine, coarse = os.path.join(folder, "fine", "tornado.pvd"), os.path.join(folder, "c.pvd")
    model = os.path.join(folder, "m.stsr")
    res: Dict[str, Any] = {"fine": fine, "coarse": coarse, "model": model}
    if not os.path.exists(fine):
        res["generate"] = run([sys.executable, GENERATOR, "--n", str(n), "--steps", "17",
                               "--out", os.path.dirname(fine)], os.path.join(logs, f"gen{n}.log"))
    if not os.path.exists(coarse):
        res["coarsen"] = run(stsr("coarsen", fine, "-o", coarse, "--space", str(SPACE),
                                  "--time", str(TIME)), os.path.join(logs, f"coarsen{n}.log"))
    if not os.path.exists(model):
        cmd = stsr("fit", coarse, "-o", model, "--quiet", "--device", "cpu", "--seed", "0")
        if fit_minutes is not None:
            cmd += ["--max-minutes", str(fit_minutes)]
        res["fit"] = run(cmd, os.path.join(logs, f"fit{n}.log"))
    return res


def kept_times(coarse: str) -> str:
    import xml.etree.ElementTree as ET
    return ",".join(d.get("timestep") for d in ET.parse(coarse).getroot().iter("DataSet"))


def psnr(pred: str, data: Dict[str, Any], work: str, tag: str) -> Optional[Dict[str, Any]]:
    """stsr eval of ``pred`` against the fine truth: mean, kept, in-between, per phase."""
    out = os.path.join(work, f"eval-{tag}.json")
    r = run(stsr("eval", pred, "--reference", data["fine"], "--kept-times",
                 kept_times(data["coarse"]), "--json", out), os.path.join(work, f"eval-{tag}.log"))
    if r["rc"] != 0:
        return None
    res = json.load(open(out))
    steps = res["psnr_per_step"]
    phases = {f"{p}/{TIME}": sum(steps[p::TIME]) / len(steps[p::TIME]) for p in range(TIME)
              if steps[p::TIME]}
    return {"mean": res["psnr_mean"], "kept": res.get("psnr_kept"),
            "between": res.get("psnr_between"), "per_phase": phases}


def pv_read(path: str, work: str, tag: str) -> Optional[float]:
    if shutil.which("pvpython") is None:
        return None
    out = os.path.join(work, f"pvread-{tag}.json")
    r = run(["pvpython", os.path.join(ROOT, "bench", "pv_read.py"), path, out],
            os.path.join(work, f"pvread-{tag}.log"))
    if r["rc"] != 0 or not os.path.exists(out):
        return None
    got = json.load(open(out))
    return got["seconds"] if got["steps"] > 0 and got["arrays"] > 0 else None


def upscale_case(data: Dict[str, Any], fmt: str, ext: str, comp: Optional[str], work: str,
                 scratch: str, read_back: bool, which: Sequence[str] = ("--scale", str(SPACE),
                                                                      "--time-scale", str(TIME))
                 ) -> Dict[str, Any]:
    """``stsr upscale`` of ``data["model"]`` (``which``: the output grid and times) into
    ``fmt``; with ``read_back`` also ParaView's read time, and for the default output the
    PSNR against ``data["fine"]`` when there is one."""
    tag = f"{fmt}-{comp or 'default'}"
    out = os.path.join(scratch, "up" + ext)
    timings = os.path.join(work, f"timings-{tag}-{os.path.basename(scratch)}.json")
    cmd = stsr("upscale", data["model"], "-o", out, *which, "--device", "cpu", "--quiet",
               "--overwrite", "--timings", timings)
    if comp is not None:
        cmd += ["--compression", comp]
    r = run(cmd, os.path.join(work, f"upscale-{tag}-{os.path.basename(scratch)}.log"))
    r.update(format=fmt, compression=comp or "default")
    if r["rc"] == 0:
        r["timings"] = json.load(open(timings))
        r["bytes"] = size_of(out)
        if read_back and fmt in ("vti", "netcdf"):
            r["paraview_read_s"] = pv_read(out, work, tag)
        if comp is None and "fine" in data:
            r["psnr"] = psnr(out, data, work, f"stsr-{os.path.basename(scratch)}")
    remove_output(out)
    print(f"[output] {tag}: {r['seconds']:.1f} s, {r.get('bytes', 0) / 1e6:.0f} MB, "
          f"peak RSS {r['rss_mb']:.0f} MB (load {r['load']:.1f})", file=sys.stderr)
    return r


def baseline(data: Dict[str, Any], work: str, scratch: str) -> Dict[str, Any]:
    out = os.path.join(scratch, "scipy.pvd")
    r = run([sys.executable, os.path.join(ROOT, "bench", "scipy_vtk_upscale.py"),
             data["coarse"], out, "--scale", str(SPACE), "--time-scale", str(TIME)],
            os.path.join(work, f"scipy-{os.path.basename(scratch)}.log"))
    if r["rc"] == 0:
        r["bytes"] = size_of(out)
        r["psnr"] = psnr(out, data, work, f"scipy-{os.path.basename(scratch)}")
    remove_output(out)
    print(f"[output] scipy+vtk: {r['seconds']:.1f} s", file=sys.stderr)
    return r


def python_child(code: str, args: Sequence[str], work: str, tag: str) -> Optional[Dict]:
    out = os.path.join(work, f"{tag}.json")
    r = run([sys.executable, "-c", code, *args, out], os.path.join(work, f"{tag}.log"))
    if r["rc"] != 0:
        return None
    got = json.load(open(out))
    got.update(wall_s=r["seconds"], rss_mb=r["rss_mb"], load=r["load"])
    return got


# --- the block compressors on one real step -----------------------------------------------
def codec_table(step_file: str) -> List[Dict[str, Any]]:
    """Every compressor on one upscaled step (a .vti of the uncompressed output): bytes
    kept and MB/s on one thread and on all of them, in this process."""
    import numpy as np
    from stsr_core.io import compress
    from stsr_core.io.vti import read_vti
    frame = read_vti(step_file)
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in frame.arrays.values()]
    raw = sum(a.nbytes for a in arrays)
    block = 1 << 20
    rows = []

    def measure(name: str, fn, shuffle: bool, reads: str) -> None:
        for threads in (1, compress.THREADS):
            t0 = time.perf_counter()
            size = 0
            for a in arrays:
                data = compress.shuffled(a) if shuffle else compress.as_bytes(a)
                blocks = compress.split_blocks(data, block)
                size += sum(len(b) for b in compress.compress_all(blocks, fn, threads))
            s = time.perf_counter() - t0
            rows.append({"codec": name, "shuffle": shuffle, "threads": threads,
                         "ratio": size / raw, "mb_per_s": raw / 1e6 / s, "paraview": reads,
                         "load": os.getloadavg()[0]})
    measure("lz4", compress.codec("lz4"), False, "yes (.vti lz4)")
    measure("zlib-1", compress.codec("zlib", 1), False, "yes (.vti zlib)")
    measure("lz4", compress.codec("lz4"), True, "no (no shuffle in VTK's XML format)")
    measure("zlib-1", compress.codec("zlib", 1), True,
            "yes as netCDF (CF reader); .h5 layout: no reader")
    measure("zlib-4", compress.codec("zlib", 4), True,
            "yes as netCDF (CF reader); .h5 layout: no reader")
    try:
        import hdf5plugin  # noqa: F401 - registers the filters with h5py
        import h5py
    except ImportError:
        rows.append({"codec": "blosc/zstd (hdf5plugin)", "note": "hdf5plugin not importable"})
        return rows
    import tempfile
    for name, opts in (("zstd-1 (hdf5plugin)", hdf5plugin.Zstd(clevel=1)),
                       ("blosc-lz4 + shuffle (hdf5plugin)",
                        hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
                       ("blosc-zstd-1 + shuffle (hdf5plugin)",
                        hdf5plugin.Blosc(cname="zstd", clevel=1,
                                         shuffle=hdf5plugin.Blosc.SHUFFLE))):
        with tempfile.TemporaryDirectory(dir=os.path.dirname(step_file)) as d:
            path = os.path.join(d, "c.h5")
            t0 = time.perf_counter()
            with h5py.File(path, "w") as fh:
                for k, a in enumerate(arrays):
                    rows_ = min(a.shape[0], max(1, block // a[0].nbytes))   # z-slabs
                    fh.create_dataset(str(k), data=a, chunks=(rows_,) + a.shape[1:], **opts)
            s = time.perf_counter() - t0
            rows.append({"codec": name, "shuffle": "blosc" in name, "threads": 1,
                         "ratio": os.path.getsize(path) / raw, "mb_per_s": raw / 1e6 / s,
                         "paraview": "no (HDF5 filter plugin not in ParaView; .h5 layout: "
                                     "no reader)", "load": os.getloadavg()[0]})
    return rows


# --- report -----------------------------------------------------------------------------------
def f(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def write_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    lines = [f"# stsr upscale end to end per output (bench/output.py, {res['date']})", "",
             f"Machine: {m['cpus']} CPUs, {m['platform']}; load average at start "
             f"{m['load_start']:.2f}. Data: the project's tornado (generate_tornado.py "
             f"--n N --steps 17), `stsr coarsen --space {SPACE} --time {TIME}`, `stsr fit` "
             "(default budget); output `--scale 2 --time-scale 4` = the fine grid and "
             "steps. Each figure from one child process; ratios within this run.", ""]
    for size in res["sizes"]:
        r = res["by_size"].get(str(size))
        if not r:
            continue
        comp = (r.get("compute") or {}).get("compute_s")
        base = (r.get("baseline") or {}).get("seconds")
        base_mb = (r.get("baseline") or {}).get("bytes", 0) / 1e6
        lines += [f"## {size}^3 x 17 steps", "",
                  f"Computing alone: {f(comp)} s. SciPy + VTK uncompressed script: "
                  f"{f(base)} s end to end, {f(base_mb, '.0f')} MB.", "",
                  "| output | compression | end to end s | / script | / computing alone | "
                  "computing s | writing s (thread) | waited s | MB | peak RSS MB | "
                  "ParaView reads all steps s | load |", "|---" * 12 + "|"]
        for c in r["cases"]:
            t = c.get("timings", {})
            lines.append(
                f"| {c['format']} | {c['compression']} | {f(c['seconds'])} | "
                f"{f(c['seconds'] / base if base else None, '.2f')} | "
                f"{f(c['seconds'] / comp if comp else None, '.2f')} | {f(t.get('compute_s'))} | "
                f"{f(t.get('write_s'))} | {f(t.get('wait_s'))} | "
                f"{f(c.get('bytes', 0) / 1e6, '.0f')} | {f(c['rss_mb'], '.0f')} | "
                f"{f(c.get('paraview_read_s'))} | {c['load']:.1f} |")
        rp = r.get("repeats")
        if rp:
            lines.append("\nThe default output against the script, alternating (s): " + ", ".join(
                f"{q['stsr']:.1f} / {q['script']:.1f} (load {q['load']:.1f})"
                for q in rp["pairs"]) + f"; median ratio {rp['median_ratio']:.2f}")
        for name, x in (("stsr upscale (default)", next((c for c in r["cases"]
                                                         if c["compression"] == "default"), {})),
                        ("SciPy + VTK script", r.get("baseline") or {})):
            p = x.get("psnr")
            if p:
                phases = ", ".join(f"{k}: {v:.2f}" for k, v in p["per_phase"].items())
                lines.append(f"\nPSNR {name}: mean {p['mean']:.2f} dB, kept {f(p['kept'], '.2f')}, "
                             f"in-between {f(p['between'], '.2f')} (per phase {phases})")
        lines.append("")
    s = res.get("startup")
    if s:
        lines += ["## Start-up (the first seconds of `stsr upscale`)", "",
                  "| import stsr_core.cli | import torch | import api | load model | first step "
                  "| child wall |", "|---|---|---|---|---|---|",
                  f"| {s['import_cli_s']:.2f} | {s['import_torch_s']:.2f} | "
                  f"{s['import_api_s']:.2f} | {s['load_model_s']:.2f} | "
                  f"{s['first_step_s']:.2f} | {s['wall_s']:.2f} |", ""]
    if res.get("codecs"):
        lines += ["## Block compressors on one upscaled step", "",
                  "| codec | shuffle | threads | size / raw | MB/s | ParaView 5.11 reads it | "
                  "load |", "|---" * 7 + "|"]
        for c in res["codecs"]:
            if "note" in c:
                lines.append(f"| {c['codec']} | - | - | - | - | {c['note']} | - |")
                continue
            lines.append(f"| {c['codec']} | {'yes' if c['shuffle'] else 'no'} | {c['threads']} | "
                         f"{c['ratio']:.0%} | {c['mb_per_s']:.0f} | {c['paraview']} | "
                         f"{c['load']:.1f} |")
    lines += ["", "ParaView: " + "; ".join(f"{k}: {v}" for k, v in PARAVIEW_READS.items()), ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


def plot(res: Dict[str, Any], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    r = res["by_size"].get(str(res["full_size"]))
    if not r or not r["cases"]:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{c['format']}\n{c['compression']}" for c in r["cases"]]
    a1.bar(labels, [c["seconds"] for c in r["cases"]], color="tab:blue")
    for y, name, col in (((r.get("baseline") or {}).get("seconds"), "SciPy+VTK script", "red"),
                         ((r.get("compute") or {}).get("compute_s"), "computing alone", "green")):
        if y:
            a1.axhline(y, color=col, ls="--", label=name)
    a1.set_ylabel("end to end (s)")
    a1.legend()
    a1.tick_params(axis="x", labelsize=7)
    a2.bar(labels, [c.get("bytes", 0) / 1e6 for c in r["cases"]], color="tab:orange")
    a2.set_ylabel("output (MB)")
    a2.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"stsr upscale, tornado {res['full_size']}^3 x 17 ({res['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def model_mode(a: argparse.Namespace, out: str, work: str) -> int:
    """``--model``: computing alone against ``stsr upscale`` end to end for a model fitted
    elsewhere (the scale cases: bench.scale fits them), on the first ``--first-steps``
    output steps (all with 0); computing alone is measured before and after the upscale
    runs and the ratio taken to their mean (the machine's load drifts); writes
    output-<tag>.json."""
    scratch = os.path.join(out, "tmp", f"scratch-{a.tag}")
    os.makedirs(scratch, exist_ok=True)
    which = ["--scale", str(a.scale), "--time-scale", str(a.time_scale)]
    if a.first_steps:
        code = ("import sys; from stsr_core import api; tm = api.load_model(sys.argv[1]); "
                "print(','.join(repr(float(t)) for t in api.output_times(tm.info.times, "
                "time_scale=int(sys.argv[2]))[:int(sys.argv[3])]))")
        times = subprocess.run([sys.executable, "-c", code, a.model, str(a.time_scale),
                                str(a.first_steps)], capture_output=True, text=True, env=env(),
                               check=True).stdout.strip()
        which = ["--scale", str(a.scale), "--times", times]
    res: Dict[str, Any] = {"date": dt.date.today().isoformat(), "model": a.model,
                           "scale": a.scale, "time_scale": a.time_scale,
                           "first_steps": a.first_steps, "load_start": os.getloadavg()[0],
                           "compute": python_child(COMPUTE, [a.model, str(a.scale),
                                                             str(a.time_scale),
                                                             str(a.first_steps)],
                                                   work, f"compute-{a.tag}"),
                           "cases": []}
    path = os.path.join(out, f"output-{a.tag}.json")
    for comp in [None] + [c for c in (a.compare or "").split(",") if c]:
        free = shutil.disk_usage(scratch).free
        need = res["compute"]["points_per_step"] * res["compute"]["steps"] * 4 * 8 \
            if res["compute"] else 0
        if need > free:
            res["cases"].append({"skipped": f"{free / 1e9:.1f} GB free, {need / 1e9:.1f} "
                                            "GB needed"})
            break
        r = upscale_case({"model": a.model}, "vti", ".pvd", comp, work, scratch, False, which)
        if res["compute"] and r["rc"] == 0:
            r["over_computing_alone"] = r["seconds"] / res["compute"]["compute_s"]
        res["cases"].append(r)
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1)
    after = python_child(COMPUTE, [a.model, str(a.scale), str(a.time_scale),
                                   str(a.first_steps)], work, f"compute-after-{a.tag}")
    res["compute_after"] = after
    if res["compute"] and after:
        mean = (res["compute"]["compute_s"] + after["compute_s"]) / 2
        res["compute_mean_s"] = mean
        for r in res["cases"]:
            if r.get("rc") == 0:
                r["over_computing_alone"] = r["seconds"] / mean
    with open(path, "w") as fh:
        json.dump(res, fh, indent=1)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"compute_s": (res["compute"] or {}).get("compute_s"),
                      "cases": [{k: c.get(k) for k in ("compression", "seconds", "rss_mb",
                                                       "bytes", "over_computing_alone",
                                                       "load", "timings")}
                                for c in res["cases"]]}, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="65,129", help="fine grid sizes n (n^3 x 17 steps)")
    p.add_argument("--full-size", type=int, default=129, help="the size every case runs at "
                   "(the others run the default output and the script only)")
    p.add_argument("--cases", help="comma list of FORMAT-COMPRESSION (default: all)")
    p.add_argument("--repeat", type=int, default=1, help="at the full size, run the default "
                   "output and the script this many times, alternating (a loaded machine's "
                   "noise; the median ratio is reported)")
    p.add_argument("--fit-minutes", type=float, help="stsr fit --max-minutes (default: the "
                   "preset's budget)")
    p.add_argument("--data", help="folder for the tornado data and models (kept; default "
                   "OUT/tmp/data)")
    p.add_argument("--out", help="results folder (default bench/results/<date>)")
    p.add_argument("--model", help="only computing alone against `stsr upscale` (default "
                   "output, .pvd) for this model (e.g. a scale case's, fitted by bench.scale)")
    p.add_argument("--tag", default="model", help="with --model: names output-<tag>.json")
    p.add_argument("--scale", type=float, default=SPACE, help="with --model")
    p.add_argument("--time-scale", type=int, default=TIME, help="with --model")
    p.add_argument("--first-steps", type=int, default=0, help="with --model: only the first "
                   "N output steps (0: all)")
    p.add_argument("--compare", help="with --model: also these compressions, e.g. none")
    a = p.parse_args(argv)
    date = dt.date.today().isoformat()
    out = a.out or os.path.join(ROOT, "bench", "results", date)
    work = os.path.join(out, "tmp", "logs")
    data_dir = a.data or os.path.join(out, "tmp", "data")
    for d in (work, data_dir):
        os.makedirs(d, exist_ok=True)
    if a.model:
        return model_mode(a, out, work)
    sizes = [int(s) for s in a.sizes.split(",")]
    wanted = None if not a.cases else set(a.cases.split(","))
    res: Dict[str, Any] = {"date": date, "sizes": sizes, "full_size": a.full_size,
                           "machine": {"cpus": os.cpu_count(), "platform": sys.platform,
                                       "load_start": os.getloadavg()[0]},
                           "by_size": {}, "complete": False}
    json_path = os.path.join(out, "output.json")

    def save() -> None:
        tmp = json_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(res, fh, indent=1)
        os.replace(tmp, json_path)
        write_markdown(res, os.path.join(out, "output.md"))
    for size in sizes:
        data = prepare(size, data_dir, work, a.fit_minutes)
        scratch = os.path.join(data_dir, f"scratch{size}")
        os.makedirs(scratch, exist_ok=True)
        r: Dict[str, Any] = {"prepare": data, "cases": []}
        res["by_size"][str(size)] = r
        full = size == a.full_size
        if full:
            res["startup"] = python_child(STARTUP, [data["model"]], work, "startup")
        r["compute"] = python_child(COMPUTE, [data["model"], str(SPACE), str(TIME), "0"],
                                    work, f"compute{size}")
        r["baseline"] = baseline(data, work, scratch)
        save()
        for fmt, ext, comp in CASES if full else CASES[:1]:
            if wanted and f"{fmt}-{comp or 'default'}" not in wanted and comp is not None:
                continue
            r["cases"].append(upscale_case(data, fmt, ext, comp, work, scratch, full))
            save()
        if full and a.repeat > 1:      # the default against the script, alternating
            pairs = [{"stsr": r["cases"][0]["seconds"], "script": r["baseline"]["seconds"],
                      "load": r["cases"][0]["load"]}]
            for _ in range(a.repeat - 1):
                u = upscale_case(data, *CASES[0], work, scratch, False)
                b = baseline(data, work, scratch)
                pairs.append({"stsr": u["seconds"], "script": b["seconds"], "load": u["load"]})
            ratios = sorted(q["stsr"] / q["script"] for q in pairs)
            r["repeats"] = {"pairs": pairs, "median_ratio": ratios[len(ratios) // 2]}
            save()
        if full:       # one uncompressed step for the compressor table
            step_dir = os.path.join(scratch, "step")
            t0, t1 = (float(t) for t in kept_times(data["coarse"]).split(",")[:2])
            cmd = stsr("upscale", data["model"], "-o", os.path.join(step_dir, "s.pvd"),
                       "--scale", str(SPACE), "--times", repr((t0 + t1) / 2),
                       "--compression", "none", "--quiet", "--overwrite", "--device", "cpu")
            if run(cmd, os.path.join(work, "step.log"))["rc"] == 0:
                res["codecs"] = codec_table(os.path.join(step_dir, "s", "s_0000.vti"))
            shutil.rmtree(step_dir, ignore_errors=True)
        save()
    res["complete"] = True
    save()
    plot(res, os.path.join(out, "output.png"))
    print(open(os.path.join(out, "output.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
