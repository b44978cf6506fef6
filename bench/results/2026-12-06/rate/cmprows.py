"""MODEL OUT N ROWS: write_slabs at n^3, times 25,50,75(,80 kept), slabs of ROWS rows, every array kept."""
import sys, numpy as np
from stsr_core import api, slabs
from stsr_core.outputs import has_error_estimate
tm = api.load_model(sys.argv[1], device="cpu")
n, rows = int(sys.argv[3]), int(sys.argv[4])
g = api.output_grid(tm.info.grid, dims=(n, n, n))
t_out = [25.0, 50.0, 75.0, 80.0]
error = has_error_estimate(tm)
names = len(tm.info.variables) * (2 if error else 1)
box = (0, n - 1, 0, n - 1, 0, n - 1)
mem = slabs.plan_memory(tm, g, box, names, error, None, group_steps=1)
mem.rows = rows
out = {}
class W:
    max_open_steps = 16
    def write_slab(self, i, z0, arrays):
        for k, a in arrays.items():
            full = out.setdefault(f"{k}@{t_out[i]}", np.zeros((n, n, n), np.float32))
            full[z0:z0 + a.shape[0]] = a
    def slab_bytes(self, rows, steps=1): return 0
slabs.write_slabs(tm, g, t_out, list(range(len(t_out))), W(), error, mem, overlap=False)
np.savez(sys.argv[2], **out)
print("ok", len(out))
