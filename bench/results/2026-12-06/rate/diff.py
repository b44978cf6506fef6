import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
worst = 0.0
for k in sorted(a.files):
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    r = np.abs(x - y).max() / max(1e-30, np.abs(x).max())
    worst = max(worst, r)
    if len(sys.argv) > 3: print(k, r)
print("worst relative", worst, "arrays", len(a.files), "bit-identical", all(np.array_equal(a[k], b[k]) for k in a.files))
