"""Run by bench/output.py under pvpython: how long ParaView 5.11 takes to read every step of
an output with the reader and settings a user gets (OpenDataFile; for .nc the NetCDF CF
reader, "NetCDF Reader", since OpenDataFile picks the CAM reader for any .nc).
    pv_read.py FILE OUT.json"""
import json
import sys
import time

from paraview.simple import NetCDFReader, OpenDataFile

path, out = sys.argv[1:3]
t0 = time.perf_counter()
reader = NetCDFReader(FileName=[path]) if path.endswith(".nc") else OpenDataFile(path)
reader.UpdatePipelineInformation()
times = list(reader.TimestepValues)
points = arrays = 0
for t in times:
    reader.UpdatePipeline(t)
    info = reader.GetDataInformation()
    points, arrays = info.GetNumberOfPoints(), reader.PointData.GetNumberOfArrays()
seconds = time.perf_counter() - t0
json.dump({"seconds": seconds, "steps": len(times), "points": points, "arrays": arrays,
           "reader": reader.GetXMLName()}, open(out, "w"))
