"""The plain script a user could write instead of ``stsr upscale``: read a coarse ``.pvd``
with VTK, interpolate trilinearly in space (SciPy's ``map_coordinates``, order 1) and
linearly in time, and write every step with VTK's own XML writer, uncompressed. No part
of stsr_core is used. bench/output.py times it beside ``stsr upscale`` in the same run.

    python bench/scipy_vtk_upscale.py COARSE.pvd OUT.pvd --scale 2 --time-scale 4
"""
from __future__ import annotations

import argparse
import os
import xml.etree.ElementTree as ET

import numpy as np
from scipy.ndimage import map_coordinates
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLImageDataWriter


def read_step(path):
    r = vtkXMLImageDataReader()
    r.SetFileName(path)
    r.Update()
    img = r.GetOutput()
    nx, ny, nz = img.GetDimensions()
    pd = img.GetPointData()
    arrays = {}
    for i in range(pd.GetNumberOfArrays()):
        a = vtk_to_numpy(pd.GetArray(i))
        arrays[pd.GetArrayName(i)] = a.reshape((nz, ny, nx) + a.shape[1:])   # [Z, Y, X(, C)]
    return img, arrays


def main():
    p = argparse.ArgumentParser()
    p.add_argument("coarse")
    p.add_argument("out")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--time-scale", type=int, default=4)
    a = p.parse_args()
    folder = os.path.dirname(os.path.abspath(a.coarse))
    entries = sorted((float(d.get("timestep")), os.path.join(folder, d.get("file")))
                     for d in ET.parse(a.coarse).getroot().iter("DataSet"))
    steps = [read_step(f) for _, f in entries]
    times = [t for t, _ in entries]
    img0 = steps[0][0]
    dims = [(n - 1) * a.scale + 1 for n in img0.GetDimensions()]
    spacing = [s / a.scale for s in img0.GetSpacing()]
    # fine point (k, j, i) sits at coarse index (k, j, i) / scale
    zz, yy, xx = np.meshgrid(*(np.arange(n) / a.scale for n in dims[::-1]), indexing="ij")
    coords = np.stack([zz, yy, xx])
    stem = os.path.splitext(os.path.basename(a.out))[0]
    out_dir = os.path.join(os.path.dirname(os.path.abspath(a.out)), stem)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    k = a.time_scale
    n_out = (len(times) - 1) * k + 1
    for m in range(n_out):
        j, f = min(m // k, len(times) - 2), (m - min(m // k, len(times) - 2) * k) / k
        t = times[j] + f * (times[j + 1] - times[j])
        img = vtkImageData()
        img.SetDimensions(dims)
        img.SetOrigin(img0.GetOrigin())
        img.SetSpacing(spacing)
        for name, a0 in steps[j][1].items():
            a1 = steps[j + 1][1][name]
            both = (1 - f) * a0 + f * a1                      # linear in time
            parts = [both] if both.ndim == 3 else [both[..., c] for c in range(both.shape[3])]
            fine = [map_coordinates(c, coords, order=1) for c in parts]   # trilinear
            v = fine[0] if len(fine) == 1 else np.stack(fine, axis=-1)
            arr = numpy_to_vtk(v.reshape(-1, *v.shape[3:]).astype(np.float32), deep=1)
            arr.SetName(name)
            img.GetPointData().AddArray(arr)
        name = f"{stem}_{m:04d}.vti"
        w = vtkXMLImageDataWriter()
        w.SetFileName(os.path.join(out_dir, name))
        w.SetInputData(img)
        w.SetDataModeToAppended()
        w.EncodeAppendedDataOff()
        w.SetCompressorTypeToNone()
        w.Write()
        lines.append(f'    <DataSet timestep="{t!r}" part="0" file="{stem}/{name}"/>')
    with open(a.out, "w") as fh:
        fh.write('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n'
                 "  <Collection>\n" + "\n".join(lines) + "\n  </Collection>\n</VTKFile>\n")


if __name__ == "__main__":
    main()
