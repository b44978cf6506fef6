"""1 process against several (issue 18): ``stsr fit`` and ``stsr upscale`` of one case with
each number of processes (torchrun), into processes.json and processes.md."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence

from . import ROOT
from .children import folder_bytes, run_child, stsr_cmd
from .data import ensure_data, gen_module
from .report import machine_info, save_json, write_processes_markdown

PROCESS_CASES = {"full": "growth65", "quick": "quick17", "tiny": "tinyA"}


def launched(n: int, args: Sequence[str]) -> List[str]:
    """``stsr ARGS`` as one process (all cores to torch's threads) or as ``n`` under
    ``torchrun --standalone`` (one thread each: torchrun's default)."""
    if n == 1:
        return stsr_cmd() + list(args)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [torchrun, "--standalone", "--nproc-per-node", str(n), "-m", "stsr_core.cli",
            *args]


def run_processes(counts: Sequence[int], gen: Any, case: Any, dirs: Dict[str, str],
                  compression: str, threads: Optional[int] = None) -> Dict[str, Any]:
    """``stsr fit`` and ``stsr upscale`` (every fine step, .pvd) of one case with each
    number of processes in ``counts``: wall time of the whole child (start-up included),
    the speed-up over the first count, and how far each base is from the first's. The fit
    runs without a time budget (``--steps 1`` on the base alone: every displacement fit to
    its end), so the runs do the same work. ``threads``: OMP_NUM_THREADS of every child (a
    process under torchrun has 1 anyway), to tell processes from threads apart."""
    from stsr_core import api
    env = None if threads is None else {"OMP_NUM_THREADS": str(threads)}
    tag = "" if threads is None else f"-threads{threads}"
    coarse_path, _ = ensure_data(gen, case, dirs["data"])
    res: Dict[str, Any] = {"case": {**asdict(case), "coarse": list(case.coarse),
                                    "coarse_steps": case.coarse_steps},
                           "counts": list(counts), "fit": {}, "upscale": {}}
    first = None
    for n in counts:
        model = os.path.join(dirs["models"], f"processes-{n}{tag}.stsr")
        r = run_child(launched(n, ["fit", coarse_path, "-o", model, "--device", "cpu",
                                   "--quiet", "--overwrite", "--steps", "1"]),
                      os.path.join(dirs["logs"], f"processes-{n}{tag}-fit.log"), env=env)
        if r["rc"] == 0:
            tm = api.load_model(model, device="cpu")
            base = tm.model.base
            if first is None:
                first = base
            # the largest difference of any coefficient, in units of the variables' range
            # (the model's values are normalised to a range of 2)
            r["base_max_diff_of_range"] = max(
                float((a - b).abs().max()) / 2.0 for a, b in
                zip(first.state_dict().values(), base.state_dict().values()))
            r["init_s"] = tm.info.history.get("init_s")
        res["fit"][str(n)] = r
        print(f"[scale] fit with {n} process(es): rc {r['rc']}, {r['seconds']:.1f} s",
              file=sys.stderr)
    model = os.path.join(dirs["models"], f"processes-{counts[0]}{tag}.stsr")
    for n in counts:
        folder = os.path.join(dirs["scratch"], f"processes-{n}{tag}")
        timings = os.path.join(dirs["logs"], f"processes-{n}{tag}-upscale-timings.json")
        r = run_child(launched(n, ["upscale", model, "-o", os.path.join(folder, "out.pvd"),
                                   "--scale", str(case.space), "--time-scale", str(case.time),
                                   "--compression", compression, "--device", "cpu",
                                   "--quiet", "--overwrite", "--timings", timings]),
                      os.path.join(dirs["logs"], f"processes-{n}{tag}-upscale.log"), env=env)
        if r["rc"] == 0:
            with open(timings) as fh:
                r["timings"] = json.load(fh)
            r["bytes"] = folder_bytes(folder)
            n_out = case.fine[0] * case.fine[1] * case.fine[2] * case.steps
            r["points_per_s"] = n_out / r["seconds"]
        shutil.rmtree(folder, ignore_errors=True)
        res["upscale"][str(n)] = r
        print(f"[scale] upscale with {n} process(es): rc {r['rc']}, {r['seconds']:.1f} s",
              file=sys.stderr)
    for what in ("fit", "upscale"):
        base_s = res[what][str(counts[0])]["seconds"]
        for n in counts:
            r = res[what][str(n)]
            r["speedup"] = base_s / r["seconds"] if r["rc"] == 0 else None
    return res

def main_processes(a: argparse.Namespace, mode: str) -> int:
    """``--processes 1,2``: the process table alone (processes.json / processes.md)."""
    counts = [int(x) for x in a.processes.split(",") if x.strip()]
    if not counts or any(n < 1 for n in counts):
        raise SystemExit(f"--processes {a.processes}: give process counts >= 1, e.g. 1,2")
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat()
                                + ("" if mode == "full" else f"-{mode}"))
    tmp = os.path.join(out, "tmp")                 # git-ignored; data shared with scale runs
    dirs = {k: os.path.join(tmp, k) for k in ("data", "models", "logs", "scratch")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    gen = gen_module()
    case = gen.CASES[a.process_case or PROCESS_CASES[mode]]
    res = {"machine": machine_info(), "date": dt.date.today().isoformat(),
           "processes": run_processes(counts, gen, case, dirs, a.compression,
                                      a.process_threads)}
    res["processes"].update(compression=a.compression, threads=a.process_threads)
    name = "processes" + ("" if a.process_threads is None else
                          f"-threads{a.process_threads}")
    save_json(res, os.path.join(out, name + ".json"))
    write_processes_markdown(res, os.path.join(out, name + ".md"))
    shutil.rmtree(dirs["scratch"], ignore_errors=True)
    print(open(os.path.join(out, name + ".md")).read())
    return 0
