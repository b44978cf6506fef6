"""Case B's two rules for the warps' lookup grid (warp_grid_rules.py) scored against the
truth (psnr.py): warp_grid_rules.psnr.json."""
import json
from stsr_core import api
from psnr import scores
from warp_grid_rules import plan_for

tm = api.load_model("/work/scratchB/B.stsr")
g = api.output_grid(tm.info.grid, scale=4)
out = {}
for rule in ("twice", "output"):
    plan_for(tm, g, rule)
    out[rule] = scores(tm, g, rule)
json.dump(out, open("/work/scratchB/psnrB.json", "w"), indent=1)
V = tm.info.variables
for rule, rows in out.items():
    print(rule, {s: round(sum(r[v] for v in V) / len(V), 2) for s, r in rows.items()})
