"""The figure and the targets of ``bench/slab_scale.py``'s results: time and peak RSS over
output sizes (with the default budget and with ``--max-memory 1GB``), and each run's peak
against its budget (issue 29: within 10 % of ``--max-memory`` when set), from slabs.json.

    python -m bench.slab_plot DIR        # reads DIR/slabs.json, writes DIR/slabs.png

Peak RSS in slabs.json (``max_rss_mb``) is wait4's, in MiB; budgets are bytes: compared here
in bytes.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

RATE_TARGET = 60e6          # variable-points/s with the error arrays (issue 29)
RSS_TARGET = 2.5e9          # bytes, the upscale's peak (issue 29)


def peak_bytes(row: Dict[str, Any]) -> float:
    return row["max_rss_mb"] * 1024 ** 2


def targets(res: Dict[str, Any]) -> List[str]:
    """One line per size run: its peak against its budget, and its rate against 60 M."""
    lines = ["| output | --max-memory | budget | peak RSS | peak / budget | "
             "M variable-points/s (target 60) |", "|---|---|---|---|---|---|"]
    for r in res["sizes"]:
        if r.get("rc") != 0:
            lines.append(f"| {r['size']}^3 | {r['max_memory']} | - | - | refused or failed "
                         f"(rc {r.get('rc')}) | - |")
            continue
        over = peak_bytes(r) / r["budget"]
        rate = r.get("variable_points_per_s", 0) / 1e6
        lines.append(f"| {r['size']}^3 | {r['max_memory']} | {r['budget'] / 1e9:.2f} GB | "
                     f"{peak_bytes(r) / 1e9:.2f} GB | {over:.2f} | {rate:.1f} |")
    return lines


def plot(res: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mm, style in (("default", "o-"), ("1GB", "s--")):
        rows = [r for r in res["sizes"] if r["max_memory"] == mm and r.get("rc") == 0]
        if not rows:
            continue
        pts = [r["size"] ** 3 / 1e6 for r in rows]
        ax_t.plot(pts, [r["compute_s"] for r in rows], style, label=f"compute, {mm}")
        ax_t.plot(pts, [r["seconds"] for r in rows], style, alpha=0.4,
                  label=f"process wall, {mm}")
        ax_m.plot(pts, [peak_bytes(r) / 1e9 for r in rows], style, label=f"peak RSS, {mm}")
        ax_m.plot(pts, [r["budget"] / 1e9 for r in rows], ":", color="grey")
    ax_m.axhline(RSS_TARGET / 1e9, color="red", lw=0.8, label="2.5 GB target")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_xlabel("output points per step (M)")
        ax.legend(fontsize=8)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("seconds (3 steps, 5 variables + error arrays)")
    ax_m.set_ylabel("GB (dotted: the budget)")
    m = res["machine"]
    fig.suptitle(f"slabbed upscale over output sizes, {m['cores']} cores {m['cpu']}, "
                 f"{m['date']}, commit {m['git_commit'][:8]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    folder = sys.argv[1]
    with open(os.path.join(folder, "slabs.json")) as fh:
        res = json.load(fh)
    plot(res, os.path.join(folder, "slabs.png"))
    print("\n".join(targets(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
