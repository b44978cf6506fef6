"""``python -m examples.data.generated KIND --out DIR``: write one benchmark series in the
project's HDF5 layout (``DIR/KIND.h5``) or as a ParaView collection (``DIR/KIND.pvd``), which
`stsr coarsen` and `stsr fit` read directly. A stamp beside it (``DIR/KIND.json``: the
arguments and a hash of the generator's source) lets a rerun with the same arguments skip the
work; ``--force`` regenerates. ``--report`` also prints the linear-in-time figures."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence

from . import KINDS, generate


def source_hash(kind: str) -> str:
    """sha256 of the code that makes ``kind``: its module and the shared ones (all but the
    other kinds', this CLI's and measure.py)."""
    here = os.path.dirname(os.path.abspath(__file__))
    others = {f"{m}.py" for m, _ in KINDS.values()} - {f"{KINDS[kind][0]}.py"}
    h = hashlib.sha256()
    for f in sorted(set(os.listdir(here)) - others - {"__main__.py", "measure.py"}):
        if not f.endswith(".py"):
            continue
        with open(os.path.join(here, f), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def write(kind: str, out: str, n: int = 65, steps: int = 25, seed: int = 0,
          fmt: str = "h5", force: bool = False, report: bool = False) -> Dict[str, object]:
    """Generate ``kind`` into ``out`` unless a matching stamp says it is there already.
    Returns the stamp (arguments, source hash, files, generation seconds)."""
    from stsr_core.io import write_series
    path = os.path.join(out, f"{kind}.{fmt}")
    stamp_path = os.path.join(out, f"{kind}.json")
    wanted = {"kind": kind, "n": n, "steps": steps, "seed": seed, "format": fmt,
              "source_sha256": source_hash(kind)}
    stamp = None if force or not os.path.exists(path) else stamped(stamp_path, wanted)
    if stamp is not None:
        return stamp
    t0 = time.perf_counter()
    series = generate(kind, n, steps, seed)
    seconds = time.perf_counter() - t0
    files = write_series(series, path, overwrite=True)
    stamp = dict(wanted, path=path, files=len(files), generate_seconds=round(seconds, 2),
                 variables=series.names)
    if report:
        from .measure import linear_in_time_psnr, motion_per_interval
        stamp["linear_in_time_psnr_k4"] = linear_in_time_psnr(series, 4)
        stamp["motion_cells_per_4_steps"] = {v: motion_per_interval(series, v, 4)
                                             for v in series.names}
    write_stamp(stamp_path, stamp)
    return stamp


def stamped(stamp_path: str, wanted: Dict[str, object]) -> Optional[Dict[str, object]]:
    """The stamp at ``stamp_path`` (with ``cached``: True) when it holds ``wanted``'s
    values, else None: the series beside it was made by the same code and arguments."""
    if not os.path.exists(stamp_path):
        return None
    with open(stamp_path) as fh:
        stamp = json.load(fh)
    return dict(stamp, cached=True) if {k: stamp.get(k) for k in wanted} == wanted else None


def write_stamp(stamp_path: str, stamp: Dict[str, object]) -> None:
    """``stamp`` as JSON at ``stamp_path``, atomically (a temporary file, then renamed)."""
    tmp = stamp_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(stamp, fh, indent=2)
    os.replace(tmp, stamp_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.data.generated",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=list(KINDS), help="; ".join(
        f"{k}: {v[1]}" for k, v in KINDS.items()))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--n", type=int, default=65, help="points per axis (4k+1; default 65)")
    p.add_argument("--steps", type=int, default=25, help="timesteps (4k+1; default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("h5", "pvd"), default="h5")
    p.add_argument("--force", action="store_true", help="regenerate even if stamped")
    p.add_argument("--report", action="store_true",
                   help="also measure linear-in-time PSNR and how far features move (slower)")
    a = p.parse_args(argv)
    stamp = write(a.kind, a.out, a.n, a.steps, a.seed, a.format, a.force, a.report)
    print(json.dumps(stamp, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
