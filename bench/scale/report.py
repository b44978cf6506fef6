"""What a run records: the machine, the results as JSON (written atomically), and the
tables (scale.md, processes.md) and the cost-growth plot (scale.png)."""
from __future__ import annotations

import json
import math
import os
import subprocess
from typing import Any, Dict, Optional

from . import ROOT
from .measure import WRITE_FORMATS

TARGETS = {"fit_s": 600.0, "rss_mb": 4096.0, "model_ratio": 2.0, "points_per_s": 10e6}


def machine_info() -> Dict[str, Any]:
    """bench.run's machine description, with memory, threads and the commit measured."""
    import torch
    from bench.run import machine_info as base_info
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(next(l for l in fh if l.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        pass

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
        return r.stdout.strip()
    info = base_info("cpu")
    info.update(memory_gb=mem_gb, torch_threads=torch.get_num_threads(),
                gpu=info.get("gpu"), git_commit=git("rev-parse", "HEAD"),
                git_dirty=bool(git("status", "--porcelain")))
    return info


def save_json(obj: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
    os.replace(tmp, path)

def f(v: Any, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        format(v * scale, spec)


def verdict(value: Optional[float], target: float, le: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value <= target if le else value >= target
    return "met" if ok else "missed"


def write_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {f(m['memory_gb'], '.0f')} GB RAM, "
             f"no GPU; torch {m['torch']} ({m['torch_threads']} threads); commit "
             f"{m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; {m['date']}; "
             f"mode {res['settings']['mode']}, fit budget "
             f"{res['settings']['fit_minutes'] or 'preset default'} min.", ""]
    cases = res.get("cases", {})
    if cases:
        lines += ["| case | fine (coarse) | fit s | fit RSS MB | model MB (x coarse f32) | "
                  "compute M pts/s | PSNR stsr | trilinear | tricubic |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tag, r in cases.items():
            c = r["case"]
            p = r.get("psnr", {})
            lines.append(
                f"| {tag} | {'x'.join(map(str, c['fine']))} x {c['steps']} "
                f"({'x'.join(map(str, c['coarse']))} x {c['coarse_steps']}) | "
                f"{f(r.get('fit', {}).get('seconds'))} | "
                f"{f(r.get('fit', {}).get('max_rss_mb'), '.0f')} | "
                f"{f(r.get('model', {}).get('bytes'), '.2f', 1e-6)} "
                f"({f(r.get('model', {}).get('ratio_to_coarse'), '.2f')}) | "
                f"{f(r.get('compute', {}).get('points_per_s'), '.3f', 1e-6)} | "
                + " | ".join(f(p.get(k, {}).get('mean'), '.2f')
                             for k in ("stsr", "trilinear+linear", "tricubic+cubic")) + " |")
        lines += ["", "End to end, every fine step (child processes; output removed after):", "",
                  "| case | format | method | seconds | M pts/s | peak RSS MB | output MB | "
                  "stsr / trilinear time | compute M pts/s (apart from writing) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tag, r in cases.items():
            for e in r.get("end_to_end", []):
                if "skipped" in e:
                    lines.append(f"| {tag} | {e['format']} | - | skipped: {e['skipped']} "
                                 "| | | | |")
                    continue
                for name in ("stsr", "trilinear+linear"):
                    x = e[name]
                    lines.append(
                        f"| {tag} | {e['format']} | {name} | {f(x['seconds'])}"
                        f"{'' if x['rc'] == 0 else ' (rc ' + str(x['rc']) + ')'} | "
                        f"{f(x['points_per_s'], '.3f', 1e-6)} | {f(x['max_rss_mb'], '.0f')} | "
                        f"{f(x['bytes'], '.1f', 1e-6)} | "
                        f"{f(e['stsr_over_trilinear_time'], '.2f') if name == 'stsr' else ''} | "
                        f"{f(x.get('compute_points_per_s'), '.3f', 1e-6) if name == 'stsr' else ''} |")
        lines += ["", "Write rate of one output step (MB/s of float32 data; file MB):", "",
                  "| case | " + " | ".join(WRITE_FORMATS) + " |",
                  "|---|" + "---|" * len(WRITE_FORMATS)]
        for tag, r in cases.items():
            w = r.get("write_rates", {})
            lines.append(f"| {tag} | " + " | ".join(
                f"{f(w.get(k, {}).get('mb_per_s'), '.0f')} "
                f"({f(w.get(k, {}).get('bytes'), '.1f', 1e-6)})" for k in WRITE_FORMATS) + " |")
        lines += ["", "Targets (issue 16):", ""]
        for tag, r in cases.items():
            fit = r.get("fit", {})
            e2e = [e for e in r.get("end_to_end", []) if "skipped" not in e]
            ups_rss = max([e["stsr"]["max_rss_mb"] for e in e2e], default=None)
            ratio = min([e["stsr_over_trilinear_time"] for e in e2e
                         if e["stsr_over_trilinear_time"] is not None], default=None)
            every = max([e["stsr"].get("compute_points_per_s") or 0 for e in e2e], default=0)
            lines.append(
                f"- {tag}: fit <= 10 min {verdict(fit.get('seconds'), TARGETS['fit_s'])}; "
                f"fit RSS <= 4 GB {verdict(fit.get('max_rss_mb'), TARGETS['rss_mb'])}; "
                f"model <= 2x coarse "
                f"{verdict(r.get('model', {}).get('ratio_to_coarse'), TARGETS['model_ratio'])}; "
                f"compute >= 10 M pts/s: every step (stsr upscale's own split) "
                f"{verdict(every or None, TARGETS['points_per_s'], False)}, the scored steps "
                f"alone in-process (each in another interval: the slots evaluated anew) "
                f"{verdict(r.get('compute', {}).get('points_per_s'), TARGETS['points_per_s'], False)}; "
                f"upscale RSS <= 4 GB {verdict(ups_rss, TARGETS['rss_mb'])}; "
                f"end to end no slower than trilinear {verdict(ratio, 1.0)}")
    g = res.get("growth", [])
    if g:
        lines += ["", "Cost growth (same field, s = 2, k = 4):", "",
                  "| coarse | coarse MB | fit s | fit RSS MB | model MB (x coarse) | "
                  "compute M pts/s | upscale (few steps) M pts/s | upscale RSS MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in g:
            lines.append(
                f"| {'x'.join(map(str, r['coarse']))} x {r['coarse_steps']} | "
                f"{f(r['coarse_float32_bytes'], '.1f', 1e-6)} | {f(r['fit_s'])} | "
                f"{f(r['fit_rss_mb'], '.0f')} | {f(r['model_bytes'], '.2f', 1e-6)} "
                f"({f(r['model_ratio'], '.2f')}) | {f(r['compute_points_per_s'], '.3f', 1e-6)} | "
                f"{f(r['upscale_points_per_s'], '.3f', 1e-6)} | {f(r['upscale_rss_mb'], '.0f')} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot(res: Dict[str, Any], path: str) -> None:
    """Growth series: time, memory, size and rate against the coarse grid's point count."""
    g = [r for r in res.get("growth", [])]
    if not g:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [r["coarse"][0] * r["coarse"][1] * r["coarse"][2] for r in g]
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("fit s", [("fit", "fit_s", 1)]),
              ("peak RSS MB", [("fit", "fit_rss_mb", 1), ("upscale", "upscale_rss_mb", 1)]),
              ("MB", [("model", "model_bytes", 1e-6), ("coarse f32", "coarse_float32_bytes",
                                                         1e-6)]),
              ("M points/s", [("compute", "compute_points_per_s", 1e-6),
                              ("upscale e2e", "upscale_points_per_s", 1e-6)])]
    for a, (label, series) in zip(ax, panels):
        for name, key, sc in series:
            pts = [(xi, r[key] * sc) for xi, r in zip(x, g) if r[key] is not None]
            if pts:
                a.plot(*zip(*pts), "o-", label=name)
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("coarse points")
        a.set_ylabel(label)
        a.legend(fontsize=8)
    fig.suptitle(f"stsr cost growth, {res['machine']['cpu']}, {res['machine']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

def write_processes_markdown(res: Dict[str, Any], path: str) -> None:
    m = res["machine"]
    p = res["processes"]
    c = p["case"]
    lines = [f"# stsr fit and upscale with {', '.join(map(str, p['counts']))} process(es) "
             f"({res['date']})", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch "
             f"{m.get('torch', '?')}, commit {str(m.get('git_commit', ''))[:7]}"
             f"{' (uncommitted changes)' if m.get('git_dirty') else ''}. One process uses "
             + ("torch's default threads (all cores)" if p.get("threads") is None else
                f"OMP_NUM_THREADS={p['threads']}")
             + "; N processes are `torchrun --standalone --nproc-per-node N` (one thread "
             "each). Wall time of the whole command, start-up included; other users shared "
             "this machine's CPU during the run.", "",
             f"Case: coarse {'x'.join(map(str, c['coarse']))} x {c['coarse_steps']} steps, "
             f"output {'x'.join(map(str, c['fine']))} x {c['steps']} steps (s = {c['space']}, "
             f"k = {c['time']}), 4 variables.", "",
             "| processes | fit (s) | fit speed-up | base vs 1 process (of range) | upscale (s) "
             "| upscale speed-up | upscale M points/s (wall) |",
             "|---|---|---|---|---|---|---|"]
    for n in p["counts"]:
        fi, up = p["fit"][str(n)], p["upscale"][str(n)]
        lines.append(f"| {n} | {f(fi['seconds'])} | {f(fi.get('speedup'), '.2f')} | "
                     f"{f(fi.get('base_max_diff_of_range'), '.1e')} | {f(up['seconds'])} | "
                     f"{f(up.get('speedup'), '.2f')} | "
                     f"{f(up.get('points_per_s'), '.1f', 1e-6)} |")
    lines += ["", "Fit: the base's displacement fits without a time budget (`--steps 1`: "
              "each to its end). Upscale: every output step to a .pvd, compression "
              f"{p['compression']}; each process writes its steps' .vti files.", ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
