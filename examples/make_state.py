"""Write ``examples/tornado_upscale.pvsm``: a ParaView state with the shipped tornado, its
coarse version (Extract Subset, every 2nd point) and STSR-INR Upscale (x2 in space, x2 in
time) side by side, the same slice and colour map, the time keeper on an in-between time.

    pvpython examples/make_state.py

Open it in the GUI (started with ``scripts/stsr-paraview`` so the plugin is loaded):
File > Load State > ``examples/tornado_upscale.pvsm``, and in the dialog choose
"Search files under specified directory" with this ``examples`` folder (the state stores the
paths of the machine that wrote it). The filter loads ``examples/output/tornado.stsr`` when
``upscale_example.py`` made it, or trains for one minute on first show.
"""
import inspect
import os

if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec

from paraview.simple import (AssignViewToLayout, CreateLayout, CreateView,  # noqa: E402
                             ExtractSubset, GetAnimationScene, GetColorTransferFunction,
                             LoadPlugin, PVDReader, RenameSource, ResetCamera, SaveState,
                             Show, Text)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARRAY = "vorticity_magnitude"


def main():
    LoadPlugin(os.path.join(ROOT, "plugin", "STSRINRPlugin.py"), ns=globals())
    fine = PVDReader(FileName=os.path.join(HERE, "data", "tornado", "tornado.pvd"))
    RenameSource("tornado (fine original)", fine)
    fine.UpdatePipeline()
    coarse = ExtractSubset(Input=fine)
    coarse.VOI = list(fine.GetDataInformation().GetExtent())
    coarse.SampleRateI = coarse.SampleRateJ = coarse.SampleRateK = 2
    RenameSource("coarse input (every 2nd point)", coarse)
    up = STSRINRUpscale(Input=coarse)  # noqa: F821 - defined by LoadPlugin
    up.SpatialScale = 2.0
    up.TemporalScale = 2
    up.TrainingMinutes = 1.0
    up.ModelFile = os.path.join(HERE, "output", "tornado.stsr")
    RenameSource("STSR-INR Upscale x2", up)

    lut = GetColorTransferFunction(ARRAY)
    lut.ApplyPreset("Viridis (matplotlib)", True)
    layout = CreateLayout("STSR-INR: coarse | upscaled | original")
    layout.SplitHorizontal(0, 1.0 / 3)
    layout.SplitHorizontal(2, 0.5)
    for cell, (src, title) in zip((1, 5, 6), ((coarse, "coarse input"),
                                              (up, "STSR-INR Upscale x2"),
                                              (fine, "original"))):
        view = CreateView("RenderView")
        AssignViewToLayout(view=view, layout=layout, hint=cell)
        view.OrientationAxesVisibility = 0
        d = Show(src, view)
        d.SetRepresentationType("Slice")
        d.ColorArrayName = ["POINTS", ARRAY]
        d.LookupTable = lut
        Show(Text(Text=title), view)
        ResetCamera(view)
    rng = fine.PointData[ARRAY].GetRange()
    lut.RescaleTransferFunction(rng[0], rng[1])
    lut.AutomaticRescaleRangeMode = "Never"
    scene = GetAnimationScene()
    scene.UpdateAnimationUsingDataTimeSteps()
    scene.AnimationTime = 2.5          # an in-between time the filter created
    path = os.path.join(HERE, "tornado_upscale.pvsm")
    SaveState(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
