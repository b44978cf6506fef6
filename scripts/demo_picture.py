"""Side-by-side slices for the demo: fine truth, the coarse input (nearest), the upscaled
result and its error, at an in-between timestep (one the model never saw)."""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stsr_core.io import read_series  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("fine")
    ap.add_argument("coarse")
    ap.add_argument("upscaled")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--array", help="variable to show (default: the first)")
    a = ap.parse_args()
    fine, coarse, up = read_series(a.fine), read_series(a.coarse), read_series(a.upscaled)
    name = a.array or next(iter(fine.variables))
    kept = set(np.round(coarse.times, 9))
    between = [i for i, t in enumerate(fine.times) if round(t, 9) not in kept]
    ti = between[len(between) // 2] if between else fine.n_times // 2
    t = fine.times[ti]
    tc = int(np.argmin(np.abs(coarse.times - t)))
    k = fine.dims[2] // 2
    truth = fine.variables[name][ti, k]
    pred = up.variables[name][int(np.argmin(np.abs(up.times - t))), k]
    ratio = max(1, round(fine.spacing[2] and coarse.spacing[2] / fine.spacing[2]))
    inp = coarse.variables[name][tc, min(k // ratio, coarse.dims[2] - 1)]
    lo, hi = float(truth.min()), float(truth.max())
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.2))
    panels = [(truth, f"fine truth (t={t:g})"),
              (inp, f"coarse input, nearest step t={coarse.times[tc]:g}"),
              (pred, "STSR-INR upscaled"), (np.abs(pred - truth), "|error|")]
    for axis, (img, title) in zip(ax, panels):
        kw = dict(vmin=lo, vmax=hi) if title != "|error|" else {}
        im = axis.imshow(img, origin="lower", cmap="viridis" if title != "|error|" else "magma",
                         **kw)
        axis.set_title(title, fontsize=10)
        axis.set_xticks([]), axis.set_yticks([])
        fig.colorbar(im, ax=axis, fraction=0.046)
    fig.suptitle(f"'{name}', z-slice {k}, an in-between timestep the model never saw")
    fig.tight_layout()
    fig.savefig(a.output, dpi=80)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
