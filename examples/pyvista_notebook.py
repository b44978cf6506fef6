# %% [markdown]
# # Super-resolution of a PyVista time series, in memory
#
# A notebook user's path: frames as `pyvista.ImageData`, one per timestep, in; a model;
# finer frames out, as `pyvista.ImageData` again. No files in between.
#
# Run it (cells marked `# %%` also open as a notebook in VS Code / Jupytext):
#
#     # in this repository (make setup puts pyvista, on ParaView's VTK, in .pyvista-site)
#     PYTHONPATH=.pyvista-site .venv/bin/python examples/pyvista_notebook.py
#     # or in a venv of your own: pip install torch pyvista, and this package
#
# Do not pip-install pyvista into the venv ParaView uses: it pulls PyPI's vtk.

# %%
import sys

import numpy as np

try:
    import pyvista as pv
except ImportError:
    sys.exit("this example needs pyvista: run it as PYTHONPATH=.pyvista-site .venv/bin/python "
             "examples/pyvista_notebook.py in this repository (make setup installs it "
             "there), or pip install pyvista in a venv of your own")

import stsr_core


# %% [markdown]
# A blob drifting through a warm box: the "simulation". `frame(t, n)` samples it at time t
# on n^3 points of the unit cube.

# %%
def frame(t: float, n: int) -> "pv.ImageData":
    img = pv.ImageData(dimensions=(n, n, n), spacing=(1 / (n - 1),) * 3)
    p = img.points
    centre = np.array([0.3 + 0.4 * t, 0.5, 0.5 - 0.2 * t])
    img.point_data["density"] = np.exp(-((p - centre) ** 2).sum(axis=1) / 0.03)
    img.point_data["temperature"] = 300 + 20 * p[:, 0] + 5 * np.sin(3 * p[:, 1] + t)
    img.field_data["TimeValue"] = [t]
    return img


times = np.linspace(0.0, 1.0, 9)
truth = [frame(t, 17) for t in times]          # what we would like: 17^3 points, 9 steps
coarse = [frame(t, 9) for t in times[::4]]     # what was saved: 9^3 points, every 4th step
print(f"coarse input: {len(coarse)} frames of {coarse[0].dimensions} points")

# %% [markdown]
# Fit, then ask for the fine grid (scale 2: (9 - 1) * 2 + 1 = 17 points per axis) at every
# original step (time_scale 4: three steps between each pair of kept ones).

# %%
model = stsr_core.fit(coarse, max_minutes=0.5)
fine = model.predict(scale=2, time_scale=4)
print(f"predicted: {len(fine)} frames of {fine[0].dimensions} points, a "
      f"{type(fine[0]).__name__}, arrays {fine[0].array_names}")

# %% [markdown]
# How close is it to the simulation at the steps it never saw?

# %%
psnrs = []
for t, f, g in zip(times, fine, truth):
    assert abs(f.field_data["TimeValue"][0] - t) < 1e-9
    err = f.point_data["density"] - g.point_data["density"]
    span = np.ptp(g.point_data["density"])
    psnrs.append(20 * np.log10(span) - 10 * np.log10(np.mean(err ** 2)))
    print(f"t = {t:.3f}  density PSNR {psnrs[-1]:6.2f} dB"
          + ("  (kept step)" if t in times[::4] else ""))
print(f"mean PSNR {np.mean(psnrs):.2f} dB")

# %% [markdown]
# The frames are ordinary PyVista objects: contour, slice, plot or save them as usual, e.g.
# `fine[4].contour([0.5], scalars="density").plot()` (needs a display), or
# `fine[4].save("blob.vti")`. `model.save("blob.stsr")` keeps the model for `stsr upscale`
# and the ParaView plugin.
