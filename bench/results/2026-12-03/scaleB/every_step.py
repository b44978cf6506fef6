"""Scale case B: computing alone, output steps 0..16 as the CLI run above, error arrays on."""
import json, sys, time, numpy as np, torch
from stsr_core import api
tm = api.load_model(sys.argv[1])
g = api.output_grid(tm.info.grid, scale=4)
host = torch.empty((len(tm.info.variables),) + tuple(g.shape), dtype=torch.float32)
secs = []
for t in range(17):
    t0 = time.perf_counter()
    api.predict_timestep(tm, float(t), g, error=sys.argv[2] == "1", host=host)
    secs.append(time.perf_counter() - t0)
tot = sum(secs)
print("total", round(tot, 1), "s", round(g.n_points * 17 / tot / 1e6, 2), "M points/s", [round(s, 2) for s in secs])
json.dump({"total_s": tot, "points_per_s": g.n_points * 17 / tot, "per_step": secs,
           "threads": torch.get_num_threads()}, open(sys.argv[3], "w"), indent=1)
