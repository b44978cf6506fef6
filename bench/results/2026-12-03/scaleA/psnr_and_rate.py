"""Scale case A (257^3 x 49, kept 129^3 x 13): compute rate with and without the error arrays,
PSNR per phase against the analytic truth (steps 1, 24, 26, 47), model size."""
import json, math, os, sys, time
import h5py, numpy as np, torch
from stsr_core import api

d = "/work/scratchA"
tm = api.load_model(os.path.join(d, os.environ.get("MODEL", "m.stsr")))
grid = api.output_grid(tm.info.grid, scale=2)
res = {"points_per_step": grid.n_points, "threads": torch.get_num_threads()}
# warm-up, then timed
api.predict_timestep(tm, 25.0, grid)
for err in (False, True):
    secs = []
    for step in (24, 25, 26, 27):
        t0 = time.perf_counter()
        out = api.predict_timestep(tm, float(step), grid, error=err)
        secs.append(time.perf_counter() - t0)
        del out
    res[f"error={err}"] = {"seconds": secs, "points_per_s": grid.n_points * 4 / sum(secs)}
    print(err, secs, grid.n_points * 4 / sum(secs) / 1e6, "M points/s", flush=True)
f = h5py.File(os.path.join(d, "truth.h5"), "r")
ps = {}
for i, step in enumerate(f.attrs["times"]):
    pred = api.predict_timestep(tm, float(step), grid, error=True)
    row = {}
    for n in f.attrs["variables"]:
        ref = f[n][i].astype(np.float64)
        e = pred[n].astype(np.float64) - ref
        peak = ref.max() - ref.min()
        row[n] = 20 * math.log10(peak) - 10 * math.log10(float(np.mean(e * e)))
        row[n + "_coverage"] = float(np.mean(np.abs(e) <= pred[n + "_error"]))
    ps[str(int(step))] = row
    print(step, row, flush=True)
res["psnr"] = ps
json.dump(res, open(os.path.join(d, os.environ.get("MODEL", "m.stsr") + ".scaleA.json"), "w"), indent=1)
