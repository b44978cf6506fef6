"""Run by tests/test_paraview.py under pvpython:
    readers_check.py OUT.npz FILE...
Opens every FILE with ParaView's own reader and its default settings -- OpenDataFile for a
.pvd, the NetCDF CF reader ("NetCDF Reader", netCDFReader) for a .nc, since OpenDataFile
takes the CAM reader for any .nc -- and saves, per file, the class of the data, the times,
and every point array at every time (``<k>/<time index>/<array>``), for the test to compare
with the engine's values."""
import json
import sys

import numpy as np
from paraview.simple import NetCDFReader, OpenDataFile, servermanager
from vtkmodules.util.numpy_support import vtk_to_numpy

out, files = sys.argv[1], sys.argv[2:]
arrays, info = {}, []
for k, path in enumerate(files):
    reader = NetCDFReader(FileName=[path]) if path.endswith(".nc") else OpenDataFile(path)
    reader.UpdatePipelineInformation()
    times = list(reader.TimestepValues)
    kinds = set()
    for i, t in enumerate(times):
        reader.UpdatePipeline(t)
        data = servermanager.Fetch(reader)
        kinds.add(data.GetClassName())
        pd = data.GetPointData()
        for j in range(pd.GetNumberOfArrays()):
            arrays[f"{k}/{i}/{pd.GetArrayName(j)}"] = vtk_to_numpy(pd.GetArray(j)).copy()
        if data.GetCellData().GetNumberOfArrays():
            kinds.add("cell data")
    info.append({"file": path, "reader": reader.GetXMLName(), "times": times,
                 "kinds": sorted(kinds), "dims": list(data.GetDimensions()),
                 "bounds": list(data.GetBounds())})
np.savez(out, **arrays)
json.dump(info, open(out + ".json", "w"))
print("readers_check done")
