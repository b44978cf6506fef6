import sys, numpy as np
from stsr_core import api, slabs
tm = api.load_model(sys.argv[1], device="cpu")
n, z0, z1 = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
g = api.output_grid(tm.info.grid, dims=(n, n, n))
out = {}
for t in (25.0, 50.0, 80.0):
    r = slabs.predict_box(tm, t, g, (0, n - 1, 0, n - 1, z0, z1), True,
                          max_memory=int(sys.argv[6]) if len(sys.argv) > 6 else None)
    for k, v in r.items(): out[f"{k}@{t}"] = v.copy()
np.savez(sys.argv[2], **out)
print("ok", len(out), next(iter(out.values())).shape)
