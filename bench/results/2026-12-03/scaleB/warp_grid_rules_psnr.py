import json, math, sys, time, numpy as np, torch, h5py
from stsr_core import api
from stsr_core.model import spline_base
tm = api.load_model("/work/scratchB/B.stsr")
g = api.output_grid(tm.info.grid, scale=4)
base = tm.model.base
f = h5py.File("/work/scratchB/data/truth.h5", "r")
steps = [float(s) for s in f.attrs["times"]]
out = {}
for rule in ("twice", "output"):
    tm.plan = None
    if rule == "output":
        spline_base.WARP_FIELD_VALUES = 1 << 40
        axes = [torch.linspace(-1.0, 1.0, n) for n in g.dims]
        tm.plan = ((g, None), base.plan_grid(axes, None, factors=(2,)))
    rows = {}
    for i, t in enumerate(steps):
        pred = api.predict_timestep(tm, t, g, error=True)
        row = {}
        for n in tm.info.variables:
            ref = f[n][i].astype(np.float64)
            e = pred[n].astype(np.float64) - ref
            row[n] = 20 * math.log10(np.ptp(ref)) - 10 * math.log10(float(np.mean(e * e)))
            row[n + "_coverage"] = float(np.mean(np.abs(e) <= pred[n + "_error"]))
        rows[str(int(t))] = row
        print(rule, t, {k: round(v, 3) for k, v in row.items()}, flush=True)
    out[rule] = rows
json.dump(out, open("/work/scratchB/psnrB.json", "w"), indent=1)
V = tm.info.variables
for rule, rows in out.items():
    print(rule, {s: round(sum(r[v] for v in V) / len(V), 2) for s, r in rows.items()})
