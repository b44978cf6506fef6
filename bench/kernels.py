"""How the warped lookups are done (issue 29: "choose by measurement"): the two-sided warped
trilinear lookup of 5 variables on a 129^3 output from fields on the same grid, with a
displacement carried from a 17^3 flow grid, by

* numba: stsr_core/model/kernels.py (one pass, coordinates shared by the variables);
* torch eager: what the engine did before (displacement carried, grid_sample per side);
* torch.compile of the same eager function (inductor, C++/OpenMP on the CPU);
* VTK: vtkImageReslice with a vtkGridTransform (the displacement grid), multi-threaded,
  every variable as one 5-component array, per side.

Each is timed (best of 3 after a warm-up; compile and first-call times apart) on this
machine's threads, and checked against torch eager (max |difference| / max |value|).

    python -m bench.kernels [--n 129] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def timed(fn: Callable[[], Any], repeat: int = 3):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=129)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                 time.strftime("%Y-%m-%d")))
    a = p.parse_args()
    from stsr_core.model import kernels
    from stsr_core.model.grid_plan import linear_matrix
    torch.manual_seed(0)
    n, v, w = a.n, 5, 0.4
    c = torch.linspace(0, 1, n)
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    f0 = torch.stack([torch.sin(6 * xx + k) * torch.cos(5 * yy - k) * zz for k in range(v)])
    f1 = torch.roll(f0, 2, dims=3).contiguous()
    flow = 0.05 * torch.randn(3, 17, 17, 17)
    g = torch.linspace(-1, 1, n)
    mx, my, mz = (linear_matrix(g, 17) for _ in range(3))
    disp = my @ (flow @ mx.t())                                    # [3, 17, n, n]
    index = [((n - 1) / 2, 0.0)] * 3
    rows: Dict[str, Dict[str, Any]] = {}

    def eager() -> torch.Tensor:
        d = (mz @ disp.reshape(3, 17, -1)).view(3, n, n, n)
        out = None
        for f, sh, wt in ((f0, -w, 1 - w), (f1, 1 - w, w)):
            s = sh * d
            pts = torch.stack([(g.view(1, 1, -1) + s[0]).clamp(-1, 1),
                               (g.view(1, -1, 1) + s[1]).clamp(-1, 1),
                               (g.view(-1, 1, 1) + s[2]).clamp(-1, 1)], -1)
            got = F.grid_sample(f[None], pts[None], align_corners=True,
                                padding_mode="border")[0] * wt
            out = got if out is None else out + got
        return out

    ref, first, best = timed(eager)
    rows["torch eager (grid_sample)"] = {"first_s": first, "seconds": best}

    def numba_run() -> torch.Tensor:
        return kernels.warp_lookup((f0, f1), (torch.full((v,), 1 - w), torch.full((v,), w)),
                                   disp, None, 0.0, mz, (g, g, g), w, index,
                                   kernels.BLEND)[0]
    got, first, best = timed(numba_run)
    rows["numba (kernels.warp_lookup)"] = {"first_s": first, "seconds": best,
                                           "rel_diff": float((got - ref).abs().max()
                                                             / ref.abs().max())}
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(eager)
        got, first, best = timed(compiled)
        rows["torch.compile (inductor)"] = {"first_s": first, "seconds": best,
                                            "rel_diff": float((got - ref).abs().max()
                                                              / ref.abs().max())}
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        rows["torch.compile (inductor)"] = {"error": str(exc).splitlines()[0][:200]}
    try:
        rows["VTK vtkImageReslice + vtkGridTransform"] = vtk_reslice(f0, f1, flow, w, n,
                                                                    ref)
    except Exception as exc:  # noqa: BLE001
        rows["VTK vtkImageReslice + vtkGridTransform"] = {"error": str(exc)[:200]}
    pts = n ** 3 * v
    for r in rows.values():
        if "seconds" in r:
            r["M_variable_points_per_s"] = pts / r["seconds"] / 1e6
    os.makedirs(a.out, exist_ok=True)
    res = {"n": n, "variables": v, "threads": torch.get_num_threads(), "rows": rows}
    with open(os.path.join(a.out, "kernels.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    lines = [f"Two-sided warped trilinear lookup, {n}^3 output x {v} variables, "
             f"{torch.get_num_threads()} threads:", "",
             "| how | first call s | best s | M variable-points/s | rel. diff to eager |",
             "|---|---|---|---|---|"]
    for k, r in rows.items():
        if "error" in r:
            lines.append(f"| {k} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {k} | {r['first_s']:.2f} | {r['seconds']:.3f} | "
                         f"{r['M_variable_points_per_s']:.1f} | {r.get('rel_diff', 0):.1e} |")
    with open(os.path.join(a.out, "kernels.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def vtk_reslice(f0, f1, flow, w, n, ref) -> Dict[str, Any]:
    """Each side by vtkImageReslice through a vtkGridTransform whose displacement grid is
    the flow times the side's shift (physical units of a [-1, 1] box)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersHybrid import vtkGridTransform
    from vtkmodules.vtkImagingCore import vtkImageReslice

    def image(arr: np.ndarray, dims, spacing) -> vtkImageData:
        img = vtkImageData()
        img.SetDimensions(*dims)
        img.SetOrigin(-1.0, -1.0, -1.0)
        img.SetSpacing(*spacing)
        comps = arr.shape[0]
        flat = np.ascontiguousarray(np.moveaxis(arr, 0, -1).reshape(-1, comps))
        img.GetPointData().SetScalars(numpy_to_vtk(flat, deep=1))
        return img
    h = 2.0 / (n - 1)
    fields = [image(f.numpy(), (n, n, n), (h, h, h)) for f in (f0, f1)]
    hf = 2.0 / (flow.shape[-1] - 1)

    def run() -> np.ndarray:
        out = None
        for f, sh, wt in ((fields[0], -w, 1 - w), (fields[1], 1 - w, w)):
            grid = image((sh * flow).numpy(), flow.shape[:0:-1], (hf, hf, hf))
            tr = vtkGridTransform()
            tr.SetDisplacementGridData(grid)
            tr.SetInterpolationModeToLinear()
            rs = vtkImageReslice()
            rs.SetInputData(f)
            rs.SetResliceTransform(tr.GetInverse())     # output point -> input point
            rs.SetInterpolationModeToLinear()
            rs.SetOutputExtent(0, n - 1, 0, n - 1, 0, n - 1)
            rs.SetOutputSpacing(h, h, h)
            rs.SetOutputOrigin(-1.0, -1.0, -1.0)
            rs.SetNumberOfThreads(torch.get_num_threads())
            rs.BorderOn()
            rs.Update()
            got = vtk_to_numpy(rs.GetOutput().GetPointData().GetScalars())
            got = np.moveaxis(got.reshape(n, n, n, -1), -1, 0) * wt
            out = got if out is None else out + got
        return out
    got, first, best = timed(run)
    return {"first_s": first, "seconds": best,
            "rel_diff": float(np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max()),
            "note": "vtkGridTransform's inverse is iterative; the forward map is what the "
                    "engine needs, so the numbers differ by the inverse's tolerance"}


if __name__ == "__main__":
    sys.exit(main())
