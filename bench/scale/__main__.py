"""``python -m bench.scale``: the arguments, then each case in turn (the package's docstring
says what is measured), the results saved after every case."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from typing import Any, Dict, Optional, Sequence

from . import ROOT, __doc__ as PACKAGE_DOC
from .cases import growth_row, run_case
from .children import cli_formats, start_launcher
from .data import gen_module
from .measure import baseline_upscale
from .processes import main_processes
from .report import machine_info, plot, save_json, write_markdown

# sizes per mode: the two cases and the growth series (generate.CASES keys)
SIZES = {"full": {"A": "A", "B": "B", "growth": ["growth33", "growth65", "growth129"]},
         "quick": {"A": "quickA", "B": "quickB", "growth": ["quick9", "quick17", "quick33"]},
         "tiny": {"A": "tinyA", "B": "tinyA", "growth": ["tinyA"]}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=PACKAGE_DOC.split("\n\n")[0])
    p.add_argument("--cases", default="A,B,growth", help="comma list of A, B, growth")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--size", choices=sorted(SIZES), help="sizes (overrides --quick)")
    p.add_argument("--fit-minutes", type=float, help="stsr fit --max-minutes (default: the "
                   "preset's budget)")
    p.add_argument("--formats", default="h5", help="end-to-end output formats, among those "
                   "`stsr upscale --format` offers")
    p.add_argument("--upscale-timeout-minutes", dest="upscale_timeout_min", type=float,
                   help="kill an upscale child after this long (recorded as timed out)")
    p.add_argument("--keep-output", action="store_true", help="keep the upscaled outputs")
    p.add_argument("--out", help="results folder (default bench/results/<date>, "
                   "<date>-quick for --quick)")
    p.add_argument("--baseline-upscale", nargs=2, metavar=("COARSE", "OUT"),
                   help=argparse.SUPPRESS)   # the SciPy child of the end-to-end comparison
    p.add_argument("--space", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--time-scale", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--format", default="h5", help=argparse.SUPPRESS)
    p.add_argument("--compression", default="none", help="end-to-end outputs' compression "
                   "(both stsr and the SciPy baseline write it through stsr_core's writers)")
    p.add_argument("--processes", metavar="1,2", help="only the table of stsr fit and "
                   "upscale with these numbers of processes (torchrun), on --process-case")
    p.add_argument("--process-case", help="the case of --processes (default growth65: "
                   "coarse 65^3 x 13; quick17 with --quick)")
    p.add_argument("--process-threads", type=int, help="OMP_NUM_THREADS of the --processes "
                   "children (default: torch's; results then in processes-threadsN.*)")
    a = p.parse_args(argv)
    if a.baseline_upscale:
        return baseline_upscale(*a.baseline_upscale, a.space, a.time_scale, a.format,
                                a.compression)
    start_launcher()
    a.upscale_timeout = None if a.upscale_timeout_min is None else 60 * a.upscale_timeout_min
    mode = a.size or ("quick" if a.quick else "full")
    if a.processes:
        return main_processes(a, mode)
    sizes = SIZES[mode]
    wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in wanted if c not in ("A", "B", "growth")]
    if bad:
        p.error(f"unknown case(s) {bad}; choose among A, B, growth")
    offered = cli_formats()
    formats = [x for x in a.formats.split(",") if x in offered]
    if not formats:
        p.error(f"--formats {a.formats}: `stsr upscale` offers {offered}")
    # a smoke run never overwrites a real one
    out = a.out or os.path.join(ROOT, "bench", "results", dt.date.today().isoformat()
                                + ("" if mode == "full" else f"-{mode}"))
    tmp = os.path.join(out, "tmp")
    dirs = {k: os.path.join(tmp, k) for k in ("data", "models", "logs", "scratch")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    gen = gen_module()
    json_path = os.path.join(out, "scale.json")
    res: Dict[str, Any] = {"machine": machine_info(),
                           "settings": {"mode": mode, "cases": wanted,
                                        "fit_minutes": a.fit_minutes, "formats": formats,
                                        "cli_formats": offered,
                                        "upscale_timeout_min": a.upscale_timeout_min},
                           "cases": {}, "growth": [], "complete": False}

    def save() -> None:
        save_json(res, json_path)
        write_markdown(res, os.path.join(out, "scale.md"))
    done: Dict[Any, Dict[str, Any]] = {}
    for tag in ("A", "B"):
        if tag in wanted:
            case = gen.CASES[sizes[tag]]
            res["cases"][tag] = done[case] = run_case(tag, gen, case, a, dirs, formats, True)
            save()
    if "growth" in wanted:
        for name in sizes["growth"]:
            case = gen.CASES[name]
            r = done.get(case) or run_case(name, gen, case, a, dirs, formats, False)
            row = growth_row(name, r)
            if case in done:
                row["from_case"] = next(t for t, v in res["cases"].items() if v is r)
            res["growth"].append(row)
            save()
    res["complete"] = True
    save()
    plot(res, os.path.join(out, "scale.png"))
    shutil.rmtree(dirs["scratch"], ignore_errors=True)
    print(open(os.path.join(out, "scale.md")).read())
    print(f"[scale] wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
