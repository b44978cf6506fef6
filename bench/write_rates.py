"""Write rate of the streaming writers (io/stream.py) per format and compression, whole
steps against z-slabs: steps of 4 float32 variables on an n^3 grid (smooth moving fields
with full float32 mantissas, like simulation output), written to a scratch folder, fsync
included. Rate = uncompressed bytes / seconds.

Two ways of writing the same steps, each case in a child process of its own (its peak RSS
from wait4, beside the RSS of its input arrays alone):
  - ``step``: ``write_step`` one step after the other (what every writer did before);
  - ``slab``: ``write_slab`` as the slabbed upscale writes, ``--open`` steps at a time (an
    interval), slab k of every one of them before slab k + 1, ``--rows`` rows a slab, the
    writer told so (``slab_rows``: an .h5's or .nc's chunks divide the slabs).
The two modes run one after the other for each case, ``--repeat`` times alternately (the
median is reported), so that the machine's load weighs on both alike. With ``--paraview``,
pvpython reads every step of each .pvd and .nc output (bench/pv_read.py), so the cost of
one piece per slab in a compressed .vti is measured where it lands.

    python -m bench.write_rates [--sizes 129,257] [--steps 4] [--rows 8] [--open 4]
                                [--repeat 3] [--dir D] [--cases vti-lz4,h5-none,...]
                                [--paraview] [--out DIR]

Writes OUT/write_rates.json (after every case), write_rates.md and write_rates.png
(OUT: bench/results/<date>/ by default).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (format, extension, compression) in the order of docs/formats.md's table
CASES = [("vti", ".pvd", "lz4"), ("vti", ".pvd", "none"), ("vti", ".pvd", "zlib"),
         ("h5", ".h5", "none"), ("h5", ".h5", "zlib"), ("h5", ".h5", "gzip"),
         ("h5", ".h5", "lzf"), ("netcdf", ".nc", "none"), ("netcdf", ".nc", "zlib"),
         ("raw", ".json", "none")]


def fields(n: int, t: float) -> Dict[str, np.ndarray]:
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n, dtype=np.float32),) * 3, indexing="ij")
    return {"temperature": np.sin(6 * x + t) * np.cos(5 * y) + z,          # [Z, Y, X]
            "pressure": np.exp(-((x - 0.5 - 0.1 * t) ** 2 + (y - 0.5) ** 2) * 8) * (1 + z),
            "density": np.cos(4 * (x + y + z) - t) ** 2,
            "vorticity": np.sin(9 * x * y + t) * np.sin(7 * z)}


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def size_of(files: List[str]) -> int:
    return sum(os.path.getsize(f) for f in files)


def child(a: argparse.Namespace) -> None:
    """One case in this process: writes the output (kept for --paraview) and prints JSON."""
    from stsr_core.grid import Grid
    from stsr_core.io import open_series_writer
    n, fmt, comp = a.n, a.fmt, a.comp
    g = Grid((n,) * 3)
    steps = [{k: v.astype(np.float32) for k, v in fields(n, 0.3 * i).items()}
             for i in range(a.steps)]
    raw = sum(v.nbytes for v in steps[0].values()) * a.steps
    base = rss_mb()
    t0 = time.perf_counter()
    with open_series_writer(a.path, g, range(a.steps), list(steps[0]), {}, format=fmt,
                            compression=comp,
                            slab_rows=a.rows if a.mode == "slab" else None) as w:
        if a.mode == "step":
            for i, s in enumerate(steps):
                w.write_step(i, s)
        else:
            for first in range(0, a.steps, a.open):
                group = range(first, min(first + a.open, a.steps))
                for z0 in range(0, n, a.rows):
                    for i in group:
                        w.write_slab(i, z0, {k: v[z0:z0 + a.rows] for k, v in steps[i].items()})
        files = w.close()
    seconds = time.perf_counter() - t0
    json.dump({"seconds": seconds, "mb_s": raw / 1e6 / seconds, "size_fraction":
               size_of(files) / raw, "raw_mb": raw / 1e6, "input_rss_mb": base,
               "slab_bytes_mb": w.slab_bytes(a.rows, a.open) / 1e6,
               "row_multiple": w.row_multiple,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6},
              sys.stdout)


def run_child(n: int, fmt: str, ext: str, comp: str, mode: str, a: argparse.Namespace,
              work: str) -> Dict[str, Any]:
    path = os.path.join(work, f"{fmt}-{comp}-{mode}{ext}")
    cmd = [sys.executable, "-m", "bench.write_rates", "--child", "--n", str(n), "--fmt", fmt,
           "--comp", comp, "--mode", mode, "--steps", str(a.steps), "--rows", str(a.rows),
           "--open", str(a.open), "--path", path]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"[write_rates] {fmt} {comp} {mode} failed: {err.decode()[-2000:]}")
    r = json.loads(out)
    r["path"] = path
    r["load"] = os.getloadavg()[0]
    return r


def pv_read(path: str) -> Optional[float]:
    pv = shutil.which("pvpython")
    if pv is None:
        return None
    out = path + ".read.json"
    r = subprocess.run([pv, os.path.join(ROOT, "bench", "pv_read.py"), path, out],
                       capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(out):
        print(f"[write_rates] pvpython could not read {path}: {r.stderr[-500:]}",
              file=sys.stderr)
        return None
    return json.load(open(out))["seconds"]


def remove(path: str) -> None:
    for p in (path, path + ".read.json"):
        if os.path.isfile(p):
            os.remove(p)
    for folder in (os.path.splitext(path)[0], os.path.join(os.path.dirname(path), "temperature"),
                   os.path.join(os.path.dirname(path), "pressure"),
                   os.path.join(os.path.dirname(path), "density"),
                   os.path.join(os.path.dirname(path), "vorticity")):
        if os.path.isdir(folder):
            shutil.rmtree(folder)


def measure(a: argparse.Namespace) -> Dict[str, Any]:
    out_dir = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat())
    os.makedirs(out_dir, exist_ok=True)
    res: Dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"),
                           "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
                           "steps": a.steps, "rows": a.rows, "open": a.open,
                           "repeat": a.repeat, "sizes": {}}
    wanted = set(a.cases.split(",")) if a.cases else None
    for n in a.sizes:
        rows = []
        for fmt, ext, comp in CASES:
            if wanted and f"{fmt}-{comp}" not in wanted:
                continue
            work = tempfile.mkdtemp(prefix="write-rates-", dir=a.dir)
            try:
                runs: Dict[str, List[Dict[str, Any]]] = {"step": [], "slab": []}
                for k in range(a.repeat):
                    for mode in (("step", "slab") if k % 2 == 0 else ("slab", "step")):
                        r = run_child(n, fmt, ext, comp, mode, a, work)
                        if a.paraview and fmt in ("vti", "netcdf"):
                            r["pv_read_s"] = pv_read(r["path"])
                        remove(r["path"])
                        runs[mode].append(r)
                row: Dict[str, Any] = {"format": fmt, "compression": comp}
                for mode, rs in runs.items():
                    best = {key: statistics.median(x[key] for x in rs)
                            for key in ("seconds", "mb_s", "peak_rss_mb", "load")}
                    reads = [x["pv_read_s"] for x in rs if x.get("pv_read_s") is not None]
                    best["pv_read_s"] = statistics.median(reads) if reads else None
                    best.update({key: rs[0][key] for key in ("size_fraction", "input_rss_mb",
                                                             "slab_bytes_mb", "raw_mb",
                                                             "row_multiple")})
                    best["all_mb_s"] = [x["mb_s"] for x in rs]
                    row[mode] = best
                row["slab_over_step"] = row["slab"]["mb_s"] / row["step"]["mb_s"]
                rows.append(row)
                print(f"{n}^3 {fmt:6s} {comp:5s} step {row['step']['mb_s']:6.0f} MB/s  slab "
                      f"{row['slab']['mb_s']:6.0f} MB/s  ({row['slab_over_step']:.2f}x)  size "
                      f"{row['slab']['size_fraction']:.1%}  RSS {row['step']['peak_rss_mb']:.0f}"
                      f"/{row['slab']['peak_rss_mb']:.0f} MB", flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            res["sizes"][str(n)] = rows
            json.dump(res, open(os.path.join(out_dir, "write_rates.json"), "w"), indent=1)
    write_md(res, out_dir)
    plot(res, out_dir)
    return res


def write_md(res: Dict[str, Any], out_dir: str) -> None:
    lines = [f"# Write rates, whole steps against slabs ({res['date']}, {res['machine']})", "",
             f"{res['steps']} steps of 4 float32 variables per size; slabs of {res['rows']} rows, "
             f"{res['open']} steps open at once (slab k of each before slab k + 1); median of "
             f"{res['repeat']} runs per mode, alternating; each run a child process, fsync "
             "included. MB/s of uncompressed data; peak RSS of the child beside the RSS of "
             "its input arrays alone.", "",
             "| n | format | compression | step MB/s | slab MB/s | slab / step | size / raw "
             "| peak RSS MB step / slab (input) | slab_bytes MB | ParaView reads s step / slab |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, rows in res["sizes"].items():
        for r in rows:
            s, b = r["step"], r["slab"]
            pv = "-" if s.get("pv_read_s") is None or b.get("pv_read_s") is None else \
                f"{s['pv_read_s']:.2f} / {b['pv_read_s']:.2f}"
            lines.append(f"| {n}^3 | {r['format']} | {r['compression']} | {s['mb_s']:.0f} | "
                         f"{b['mb_s']:.0f} | {r['slab_over_step']:.2f} | "
                         f"{b['size_fraction']:.1%} | {s['peak_rss_mb']:.0f} / "
                         f"{b['peak_rss_mb']:.0f} ({s['input_rss_mb']:.0f}) | "
                         f"{b['slab_bytes_mb']:.1f} | {pv} |")
    lines += ["", "Load average (1 min) during the runs: " + ", ".join(
        f"{r['step']['load']:.1f}" for rows in res["sizes"].values() for r in rows), ""]
    open(os.path.join(out_dir, "write_rates.md"), "w").write("\n".join(lines))


def plot(res: Dict[str, Any], out_dir: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    sizes = list(res["sizes"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        rows = res["sizes"][n]
        labels = [f"{r['format']}\n{r['compression']}" for r in rows]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["step"]["mb_s"] for r in rows], 0.4, label="whole steps")
        ax.bar(x + 0.2, [r["slab"]["mb_s"] for r in rows], 0.4,
               label=f"slabs of {res['rows']} rows")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("MB/s (uncompressed)")
        ax.set_title(f"{n}^3 x 4 variables")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "write_rates.png"), dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="129", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--open", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default=None, help="scratch folder (default: the temp folder)")
    p.add_argument("--cases", default=None, help="e.g. vti-lz4,h5-none (default: all)")
    p.add_argument("--paraview", action="store_true", help="time pvpython reading them")
    p.add_argument("--out", default=None)
    # one case, in a child
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--fmt", help=argparse.SUPPRESS)
    p.add_argument("--comp", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
    else:
        measure(a)


if __name__ == "__main__":
    main()
