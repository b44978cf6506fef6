"""Scale case A: computing alone over every output step (49), as upscale computes them, with
and without error arrays; per-step seconds."""
import json, os, sys, time
import numpy as np, torch
from stsr_core import api
from stsr_core.outputs import output_arrays
d = "/work/scratchA"
tm = api.load_model(os.path.join(d, os.environ.get("MODEL", "m.stsr")))
grid = api.output_grid(tm.info.grid, scale=2)
t_out = api.output_times(tm.info.times, 4) if hasattr(api, "output_times") else None
from stsr_core.prediction import output_times
t_out = output_times(tm.info.times, 4, None)
errs = [e == "1" for e in sys.argv[1].split(",")] if len(sys.argv) > 1 else [False, True]
res = {"threads": torch.get_num_threads(), "points_per_step": grid.n_points}
for err in errs:
    secs = []
    tm.plan = None
    host = torch.empty((len(tm.info.variables),) + tuple(grid.shape), dtype=torch.float32)
    for t in t_out:
        t0 = time.perf_counter()
        api.predict_timestep(tm, float(t), grid, error=err, host=host)
        secs.append(time.perf_counter() - t0)
    tot = sum(secs)
    res[f"error={err}"] = {"total_s": tot, "points_per_s": grid.n_points * len(t_out) / tot,
                           "per_step": secs}
    print(err, round(tot, 1), "s", round(grid.n_points * len(t_out) / tot / 1e6, 2), "M points/s",
          "kept mean", round(float(np.mean(secs[::4])), 3), "between mean",
          round(float(np.mean([s for i, s in enumerate(secs) if i % 4])), 3), flush=True)
json.dump(res, open(os.path.join(d, os.environ.get("MODEL", "m.stsr") + ".all.json"), "w"), indent=1)
