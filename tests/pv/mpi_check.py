"""Run by tests/test_paraview.py under ``mpiexec -n N pvbatch --sym``:
    mpi_check.py PLUGIN INPUT.pvd MODEL SOURCE_MODEL OUT_DIR
Every rank applies STSR-INR Upscale (rank 0 trains, writes MODEL and sends the model to the
others) and opens SOURCE_MODEL (motion-compensated in time) with STSR-INR Model; ParaView's
parallel writer gathers the ranks' pieces into OUT_DIR/filter.pvti and OUT_DIR/source.pvti
at one in-between time. Each rank
writes what it computed to OUT_DIR/rank<R>.json; rank 0 also streams the source in 4 pieces
within its own process (OUT_DIR/stream.npz)."""
import json
import sys

import numpy as np
from paraview.simple import CreateWriter, LoadPlugin, PVDReader  # noqa: F401
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkParallelCore import vtkMultiProcessController

plugin, data, model, source_model, out = sys.argv[1:6]
controller = vtkMultiProcessController.GetGlobalController()
rank, ranks = controller.GetLocalProcessId(), controller.GetNumberOfProcesses()
LoadPlugin(plugin, ns=globals())
reader = PVDReader(FileName=data)
up = STSRINRUpscale(Input=reader, SpatialScale=2.0, TemporalScale=2,  # noqa: F821
                    TrainingSteps=5, TrainingMinutes=0.0, Seed=3, ModelFile=model,
                    TimeInterpolation="cubic")
up.UpdatePipelineInformation()
t_mid = list(up.TimestepValues)[1]


def piece(proxy):
    """This rank's part of the proxy's output at t_mid: its extent."""
    proxy.UpdatePipeline(t_mid)
    return list(proxy.GetClientSideObject().GetOutputDataObject(0).GetExtent())


def save(proxy, name):
    w = CreateWriter(out + "/" + name, proxy)     # XML parallel image writer under MPI
    w.UpdatePipeline(t_mid)


result = {"rank": rank, "ranks": ranks, "t_mid": t_mid, "filter_extent": piece(up)}
save(up, "filter.pvti")
result["training"] = up.GetClientSideObject().last_training
src = STSRINRModel(FileName=source_model, SpatialScale=2.0, TemporalScale=2)  # noqa: F821
src.UpdatePipelineInformation()
result["source_extent"] = piece(src)
save(src, "source.pvti")

if rank == 0:      # one process streaming the source by pieces (a piece count of 4)
    algo = src.GetClientSideObject()
    pieces = {}
    for p in range(4):
        algo.UpdateTimeStep(t_mid, p, 4, 0)
        img = algo.GetOutputDataObject(0)
        pd = img.GetPointData()
        pieces["extent_%d" % p] = np.array(img.GetExtent())
        for i in range(pd.GetNumberOfArrays()):
            pieces["%s_%d" % (pd.GetArrayName(i), p)] = vtk_to_numpy(pd.GetArray(i)).copy()
    np.savez(out + "/stream.npz", **pieces)
json.dump(result, open("%s/rank%d.json" % (out, rank), "w"))
print("mpi_check done on rank %d of %d" % (rank, ranks))
