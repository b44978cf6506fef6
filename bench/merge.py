"""Merge a partial benchmark re-run with rows kept from an earlier run, so that re-measuring
one method does not mean re-running every method (the full CPU suite takes ~90 min).

    python -m bench.merge --new DIR --old DIR --take siren,paper --note "..."

Rows of the methods in ``--take`` are copied from ``--old`` into ``--new`` (which keeps its
own rows for every other method); each copied row is marked ``"from": OLD`` (or keeps the
run it came from, if OLD had copied it too) and the note says so in results.md.
results.json, results.md and the PSNR-vs-time plots are rewritten in ``--new``; its slice
pictures stay those of the new run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .run import DATASETS, plot_curves, write_results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True, help="results folder of the partial re-run")
    ap.add_argument("--old", required=True, help="results folder to take rows from")
    ap.add_argument("--take", required=True, help="methods whose rows come from --old")
    ap.add_argument("--note", default="", help="said in results.md, beside the machine")
    a = ap.parse_args(argv)
    take = {m.strip() for m in a.take.split(",") if m.strip()}
    new = json.load(open(os.path.join(a.new, "results.json")))
    old = json.load(open(os.path.join(a.old, "results.json")))
    if any(r["method"] in take for r in new["rows"]):
        print(f"bench.merge: {a.new} already has rows of {sorted(take)}", file=sys.stderr)
        return 2
    old_name = os.path.basename(os.path.normpath(a.old))
    copied = [dict(r, **{"from": r.get("from") or old_name})
              for r in old["rows"] if r["method"] in take]
    if not copied:
        print(f"bench.merge: {a.old} has no rows of {sorted(take)}", file=sys.stderr)
        return 2
    names = list(DATASETS) + [r["dataset"] for r in new["rows"] + copied]
    order = {d: i for i, d in enumerate(dict.fromkeys(names))}
    method_order = ["trilinear+linear", "tricubic+cubic", "siren", "paper", "fast"]
    rows = sorted(new["rows"] + copied, key=lambda r: (
        order.get(r["dataset"], 99), r["scale"],
        method_order.index(r["method"]) if r["method"] in method_order else 99))
    info = dict(new["machine"])
    info["note"] = "; ".join(x for x in (info.get("note"), a.note) if x)
    done = [d for d in order if any(r["dataset"] == d for r in rows)]
    write_results(rows, info, a.new, done=done)
    for d in done:
        plot_curves(rows, d, os.path.join(a.new, f"psnr_vs_time_{d}.png"))
    print(f"bench.merge: {len(copied)} rows of {sorted(take)} from {a.old} into {a.new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
