"""Run by tests/test_paraview.py under pvpython:
    prior_check.py PLUGIN INPUT.pvd MODEL OUT_DIR
STSR-INR Upscale with the spatial prior on (SpatialPrior shipped, a tiny fit), then the saved
model reopened by STSR-INR Model; the arrays of both at a kept and an in-between time go to
OUT_DIR/prior.npz, what the filter saw to OUT_DIR/prior.json."""
import json
import sys

import numpy as np
from paraview.simple import LoadPlugin, PVDReader, servermanager  # noqa: F401
from vtkmodules.util.numpy_support import vtk_to_numpy

plugin, data, model, out = sys.argv[1:5]
LoadPlugin(plugin, ns=globals())
up = STSRINRUpscale(Input=PVDReader(FileName=data))  # noqa: F821 - defined by LoadPlugin
up.SpatialScale = 2.0
up.TemporalScale = 2
up.TimeInterpolation = "linear"
up.SpatialPrior = "shipped"
up.ModelFile = model
up.UpdatePipelineInformation()
times = list(up.TimestepValues)
domain = up.GetProperty("SpatialPrior").SMProperty.GetDomain("list")
choices = [domain.GetString(i) for i in range(domain.GetNumberOfStrings())]


def grab(proxy, t):
    proxy.UpdatePipeline(t)
    pd = servermanager.Fetch(proxy).GetPointData()
    return {pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)).copy()
            for i in range(pd.GetNumberOfArrays())}


arrays = {}
for label, t in (("kept", times[2]), ("between", times[1])):
    for name, a in grab(up, t).items():
        arrays["filter_%s_%s" % (label, name)] = a
src = STSRINRModel(FileName=model, SpatialScale=2.0, TemporalScale=2)  # noqa: F821 - saved now
src.UpdatePipelineInformation()
for label, t in (("kept", times[2]), ("between", times[1])):
    for name, a in grab(src, t).items():
        arrays["source_%s_%s" % (label, name)] = a
np.savez(out + "/prior.npz", **arrays)
json.dump({"times": times, "choices": choices,
           "training": up.GetClientSideObject().last_training}, open(out + "/prior.json", "w"))
print("prior_check done")
