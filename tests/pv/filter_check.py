"""Run by tests/test_paraview.py under pvpython or pvbatch:
    filter_check.py PLUGIN INPUT.pvd MODEL OUT_DIR
Applies STSR-INR Upscale (tiny training) and reopens the saved model with STSR-INR Model;
writes what it saw to OUT_DIR/result.json and the arrays at one in-between time to .npz."""
import json
import sys

import numpy as np
from paraview.simple import (LoadPlugin, PVDReader, UpdatePipeline,  # noqa: F401
                             servermanager)
from vtkmodules.util.numpy_support import vtk_to_numpy

plugin, data, model, out = sys.argv[1:5]
LoadPlugin(plugin, ns=globals())
reader = PVDReader(FileName=data)
up = STSRINRUpscale(Input=reader)  # noqa: F821 - defined by LoadPlugin
up.SpatialScale = 2.0
up.TemporalScale = 2
up.TrainingSteps = 25
up.TrainingMinutes = 0.0
up.Seed = 3
up.TimeInterpolation = "cubic"
up.ModelFile = model
up.UpdatePipelineInformation()
times = list(up.TimestepValues)
# the drop-down lists as the proxy offers them (tests compare them with stsr_core/config.py)
lists = {}
for name in ("Preset", "Device", "TimeInterpolation"):
    domain = up.GetProperty(name).SMProperty.GetDomain("list")
    lists[name] = [domain.GetString(i) for i in range(domain.GetNumberOfStrings())]
t_mid = times[1]


def grab(proxy, t):
    proxy.UpdatePipeline(t)
    img = servermanager.Fetch(proxy)
    pd = img.GetPointData()
    arrays = {pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)).copy()
              for i in range(pd.GetNumberOfArrays())}
    return img, arrays


img, arrays = grab(up, t_mid)
algo = up.GetClientSideObject()
training = algo.last_training
# the same time again comes from the cache: no new inference
cached_before = dict(algo._cache.images)
_, again = grab(up, t_mid)

src = STSRINRModel(FileName=model)  # noqa: F821
src.SpatialScale = 2.0
src.TemporalScale = 2
src.UpdatePipelineInformation()
src_img, src_arrays = grab(src, t_mid)

# a piece: only the requested extent is computed (what MPI ranks and streaming ask for), and
# it equals that part of the whole output
piece = (2, 9, 1, 6, 3, 7)
fresh = STSRINRModel(FileName=model, SpatialScale=2.0, TemporalScale=2)  # noqa: F821
fresh.UpdatePipelineInformation()
src_algo = fresh.GetClientSideObject()
src_algo.UpdateTimeStep(t_mid, -1, 1, 0, piece)
part = src_algo.GetOutputDataObject(0)
nx, ny, _ = src_img.GetDimensions()
piece_diff = 0.0
for name in ("temperature", "rho"):
    whole = src_arrays[name].reshape(-1, ny, nx)
    sub = whole[piece[4]:piece[5] + 1, piece[2]:piece[3] + 1, piece[0]:piece[1] + 1]
    got = vtk_to_numpy(part.GetPointData().GetArray(name)).reshape(sub.shape)
    piece_diff = max(piece_diff, float(np.abs(got - sub).max() / np.ptp(whole)))

np.savez(out + "/filter.npz", **arrays)
np.savez(out + "/source.npz", **src_arrays)
json.dump({
    "times": times, "t_mid": t_mid, "lists": lists,
    "preset_help": up.GetProperty("Preset").SMProperty.GetDocumentation().GetDescription(),
    "dims": list(img.GetDimensions()), "spacing": list(img.GetSpacing()),
    "origin": list(img.GetOrigin()),
    "arrays": {k: list(v.shape) for k, v in arrays.items()},
    "training": training,
    "cache_hit": all(np.array_equal(arrays[k], again[k]) for k in arrays)
                 and t_mid in cached_before,
    "source_times": list(src.TimestepValues),
    "source_dims": list(src_img.GetDimensions()),
    "piece_extent": list(part.GetExtent()), "piece_points": part.GetNumberOfPoints(),
    "piece_diff": piece_diff,
}, open(out + "/result.json", "w"))
print("filter_check done")
