"""Run by tests/test_pyvista.py in a process of its own (pyvista's import redirects VTK's
error output for the whole process): the real pyvista.ImageData through stsr_core's
conversions. Prints "pyvista_check ok" and the VTK it ran on."""
import sys

import numpy as np
import pyvista as pv
import vtkmodules

import stsr_core
from stsr_core import StsrError

# frames as a user makes them: x fastest, a vector, the time in field data, and an extent
# that does not start at 0 (the origin is then the extent's first point)
img = pv.ImageData(dimensions=(5, 4, 3), spacing=(0.5, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
img.SetExtent(2, 6, 0, 3, 1, 3)
p = img.points
frames = []
for t in (0.0, 0.5, 1.0):
    f = img.copy()
    f.point_data["p"] = (p[:, 0] + 10 * p[:, 1] + 100 * p[:, 2] + t).astype(np.float32)
    f.point_data["u"] = np.stack([p[:, 0], p[:, 1], p[:, 2] * t], axis=1)
    f.field_data["TimeValue"] = [t]
    frames.append(f)

s = stsr_core.series_from_images(frames)
assert s.dims == (5, 4, 3) and s.names == ["p", "u_0", "u_1", "u_2"], (s.dims, s.names)
assert s.components == {"u": ["u_0", "u_1", "u_2"]}
np.testing.assert_allclose(s.origin, (2.0, 2.0, 5.0))          # 1 + 2 * 0.5, 3 + 1 * 2
np.testing.assert_allclose(s.times, [0, 0.5, 1])
x, y, z = s.grid.origin
np.testing.assert_allclose(s.variables["p"][1, 2, 3, 4],        # [T, Z, Y, X]
                           (x + 4 * 0.5) + 10 * (y + 3) + 100 * (z + 2 * 2) + 0.5, rtol=1e-6)

out = stsr_core.images_from_series(s)
assert all(isinstance(o, pv.ImageData) for o in out)
np.testing.assert_allclose(out[2].field_data["TimeValue"], [1.0])
np.testing.assert_allclose(out[1].points, frames[1].points)
np.testing.assert_allclose(out[1].point_data["u"], frames[1].point_data["u"], rtol=1e-6)
back = stsr_core.series_from_images(out, arrays=["p"])
assert back.names == ["p"] and not back.same_grid(s)

for bad, words in ((pv.Sphere(), "PolyData, not image data"), (42, "not a sequence")):
    try:
        stsr_core.series_from_images(bad)
    except StsrError as exc:
        assert words in str(exc), exc
    else:
        sys.exit(f"no error for {bad!r}")
rotated = img.copy()
rotated.point_data["p"] = np.zeros(rotated.n_points)
rotated.SetDirectionMatrix(0, -1, 0, 1, 0, 0, 0, 0, 1)
try:
    stsr_core.series_from_images([rotated])
except StsrError as exc:
    assert "rotated" in str(exc), exc
else:
    sys.exit("no error for a rotated image")
print("pyvista_check ok", pv.__version__, "VTK", pv.vtk_version_info, vtkmodules.__file__)
