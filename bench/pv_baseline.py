"""Run by bench.run under pvpython: ParaView's own trilinear + linear reconstruction.
    pv_baseline.py COARSE.pvd NX NY NZ OUT.npz t1,t2,...
Resample To Image onto the fine grid over the input bounds, then Temporal Interpolator at
every fine time; saves one array per variable [T, Z, Y, X] (vectors by component)."""
import sys

import numpy as np
from paraview.simple import PVDReader, ResampleToImage, TemporalInterpolator, servermanager
from vtkmodules.util.numpy_support import vtk_to_numpy

coarse, nx, ny, nz, out, times = sys.argv[1:7]
dims = [int(nx), int(ny), int(nz)]
reader = PVDReader(FileName=coarse)
res = ResampleToImage(Input=reader)
res.UseInputBounds = 1
res.SamplingDimensions = dims
interp = TemporalInterpolator(Input=res)
arrays = {}
for t in [float(v) for v in times.split(",")]:
    interp.UpdatePipeline(t)
    img = servermanager.Fetch(interp)
    pd = img.GetPointData()
    for i in range(pd.GetNumberOfArrays()):
        name = pd.GetArrayName(i)
        if name in ("vtkValidPointMask", "vtkGhostType"):
            continue
        a = vtk_to_numpy(pd.GetArray(i))
        comps = [a] if a.ndim == 1 else [a[:, c] for c in range(a.shape[1])]
        for c, v in enumerate(comps):
            key = name if a.ndim == 1 else "%s_%d" % (name, c)
            arrays.setdefault(key, []).append(v.reshape(dims[2], dims[1], dims[0]))
np.savez(out, **{k: np.stack(v) for k, v in arrays.items()})
print("pv baseline done")
