"""One case from its data to its figures: ``stsr fit`` as a child, the model loaded, the
scored steps measured, and the upscale (every step end to end, or a few for the growth
series); and a growth-table row out of a case's result."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import asdict
from typing import Any, Dict, List

from .children import run_child, stsr_cmd
from .data import ensure_data
from .measure import end_to_end, score_steps


def run_case(tag: str, gen: Any, case: Any, a: argparse.Namespace, dirs: Dict[str, str],
             formats: List[str], full: bool) -> Dict[str, Any]:
    """Everything measured for one case; ``full``: also the end-to-end upscale of every
    step (the growth series only times a few steps)."""
    from stsr_core import api
    from stsr_core.io import read_series
    res: Dict[str, Any] = {"case": {**asdict(case), "coarse": list(case.coarse),
                                    "coarse_steps": case.coarse_steps}}
    coarse_path, gen_s = ensure_data(gen, case, dirs["data"])
    res["generate_s"] = gen_s
    n_vars = len(gen.VARIABLES)
    cx, cy, cz = case.coarse
    res["coarse_float32_bytes"] = 4 * cx * cy * cz * case.coarse_steps * n_vars
    model = os.path.join(dirs["models"], f"{tag}.stsr")
    cmd = stsr_cmd() + ["fit", coarse_path, "-o", model, "--device", "cpu", "--quiet",
                        "--overwrite", "--seed", "0"]
    if a.fit_minutes is not None:
        cmd += ["--max-minutes", str(a.fit_minutes)]
    print(f"[scale] {tag}: fit on coarse {cx}x{cy}x{cz} x {case.coarse_steps}", file=sys.stderr)
    fit = run_child(cmd, os.path.join(dirs["logs"], f"{tag}-fit.log"))
    res["fit"] = fit
    if fit["rc"] != 0 or not os.path.exists(model):
        print(f"[scale] {tag}: fit failed (rc {fit['rc']}); see {fit['log']}", file=sys.stderr)
        return res
    stem = os.path.basename(model)
    beside = {f: os.path.getsize(os.path.join(dirs["models"], f))
              for f in os.listdir(dirs["models"]) if f.startswith(stem) and f != stem}
    size = os.path.getsize(model)
    res["model"] = {"bytes": size, "files_beside": beside,
                    "ratio_to_coarse": size / res["coarse_float32_bytes"]}
    tm = api.load_model(model, device="cpu")
    h = tm.info.history
    fit.update(train_steps=h.get("steps"), train_s=h.get("elapsed_s"), init_s=h.get("init_s"),
               parameters=tm.n_parameters())
    grid = api.output_grid(tm.info.grid, scale=case.space)
    coarse = read_series(coarse_path)
    steps = case.truth_steps() if full else case.truth_steps()[:2]
    compute, psnr, writes = score_steps(gen, case, coarse.variables, coarse.times, tm, grid,
                                        steps, os.path.join(dirs["scratch"], "write"))
    del tm, coarse
    res.update(compute=compute, psnr=psnr, write_rates=writes)
    if full:
        res["end_to_end"] = [end_to_end(model, coarse_path, case, f,
                                        os.path.join(dirs["scratch"], f"{tag}-upscale"),
                                        dirs["logs"], tag, a.upscale_timeout, a.keep_output,
                                        a.compression)
                             for f in formats]
    else:   # a few steps through the CLI: its peak RSS and rate with load and write
        times = ",".join(str(float(s)) for s in steps)
        folder = os.path.join(dirs["scratch"], f"{tag}-upscale")
        os.makedirs(folder, exist_ok=True)
        r = run_child(stsr_cmd() + ["upscale", model, "-o", os.path.join(folder, "out.h5"),
                                    "--scale", str(case.space), "--times", times, "--device",
                                    "cpu", "--quiet", "--format", "h5", "--compression",
                                    a.compression],
                      os.path.join(dirs["logs"], f"{tag}-upscale-steps.log"), a.upscale_timeout)
        r["steps"] = len(steps)
        r["points_per_s"] = grid.n_points * len(steps) / r["seconds"] if r["rc"] == 0 else None
        res["upscale_steps"] = r
        if not a.keep_output:
            shutil.rmtree(folder, ignore_errors=True)
    return res


def growth_row(tag: str, r: Dict[str, Any]) -> Dict[str, Any]:
    """The growth table's figures out of one case's result (None where not measured)."""
    fit, model, comp = r.get("fit", {}), r.get("model", {}), r.get("compute", {})
    ups = r.get("upscale_steps")
    if ups is None and r.get("end_to_end"):
        ups = r["end_to_end"][0].get("stsr")
    return {"tag": tag, "coarse": r["case"]["coarse"], "coarse_steps": r["case"]["coarse_steps"],
            "coarse_float32_bytes": r.get("coarse_float32_bytes"),
            "fit_s": fit.get("seconds"), "fit_rss_mb": fit.get("max_rss_mb"),
            "model_bytes": model.get("bytes"), "model_ratio": model.get("ratio_to_coarse"),
            "compute_points_per_s": comp.get("points_per_s"),
            "upscale_rss_mb": ups.get("max_rss_mb") if ups else None,
            "upscale_points_per_s": ups.get("points_per_s") if ups else None}
