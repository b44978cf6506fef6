"""Upsample a time series with the STSR-INR Upscale filter, in a pvpython/pvbatch script.

    xvfb-run -a pvpython examples/upscale_example.py [--dataset tornado] [--minutes 1]

(``xvfb-run`` only because Debian's ParaView renders through X; without a display the script
still writes the data and skips the picture.) What it does, all in ParaView's pipeline:

1. opens a shipped example (``examples/data/<dataset>/<dataset>.pvd``, 33^3 points, 17 steps);
2. makes the coarse input a simulation would have saved: Extract Subset keeps every 2nd point;
3. STSR-INR Upscale trains the default preset on the coarse series (progress is printed), then
   gives it back on the fine grid (SpatialScale 2) with one new step between each pair of
   input steps (TemporalScale 2); the model is saved to ``OUT/<dataset>.stsr``;
4. writes the result as ``OUT/<dataset>_upscaled.pvd`` (every output time) and a PNG:
   coarse input | STSR-INR output | original fine data, the same slice and colour map.
"""
import argparse
import inspect
import os
import sys

# ParaView 5.11's plugin loader imports inspect.getargspec, removed in Python 3.11
if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec

from paraview.simple import (ExtractSubset, GetActiveCamera, GetColorTransferFunction,  # noqa: E402
                             LoadPlugin, PVDReader, SaveData, SaveScreenshot, Show,
                             CreateLayout, CreateView, AssignViewToLayout, ResetCamera,
                             Text)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARRAYS = {"tornado": "velocity_magnitude", "plume": "smoke", "taylor_green": "temperature"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="tornado", choices=sorted(ARRAYS))
    ap.add_argument("--minutes", type=float, default=1.0, help="training budget (default 1)")
    ap.add_argument("--out", default=os.path.join(ROOT, "examples", "output"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    name, array = args.dataset, ARRAYS[args.dataset]

    LoadPlugin(os.path.join(ROOT, "plugin", "STSRINRPlugin.py"), ns=globals())
    fine = PVDReader(FileName=os.path.join(ROOT, "examples", "data", name, name + ".pvd"))
    fine.UpdatePipeline()
    coarse = ExtractSubset(Input=fine)
    coarse.VOI = list(fine.GetDataInformation().GetExtent())
    coarse.SampleRateI = coarse.SampleRateJ = coarse.SampleRateK = 2

    model = os.path.join(args.out, name + ".stsr")
    up = STSRINRUpscale(Input=coarse)  # noqa: F821 - defined by LoadPlugin
    up.SpatialScale = 2.0
    up.TemporalScale = 2
    up.TrainingMinutes = args.minutes
    up.Device = args.device
    up.ModelFile = model   # reused on the next run if it matches the input; delete to retrain
    up.UpdatePipelineInformation()
    times = list(up.TimestepValues)
    print(f"input: {len(fine.TimestepValues)} steps; output: {len(times)} steps "
          f"({times[0]} .. {times[-1]})")
    up.UpdatePipeline(times[0])       # trains (or loads the model file) on first update
    info = up.GetDataInformation()
    if info.GetNumberOfPoints() == 0:
        sys.exit("STSR-INR Upscale produced no output (see the error above)")
    print(f"output grid {info.GetExtent()}, arrays: "
          f"{[info.GetPointDataInformation().GetArrayInformation(i).GetName() for i in range(info.GetPointDataInformation().GetNumberOfArrays())]}")

    out_pvd = os.path.join(args.out, name + "_upscaled.pvd")
    SaveData(out_pvd, proxy=up, WriteTimeSteps=1)   # every output time, one .vti each
    print(f"wrote {out_pvd}")

    if not os.environ.get("DISPLAY"):
        print("no DISPLAY: skipping the picture (run under xvfb-run -a to get it)")
        return
    t = times[2] if len(times) > 2 else times[0]    # an input time: compare like with like
    layout = CreateLayout("compare")
    layout.SplitHorizontal(0, 1.0 / 3)          # cells 1 | 2, then 2 -> 5 | 6
    layout.SplitHorizontal(2, 0.5)
    lut = GetColorTransferFunction(array)
    lut.ApplyPreset("Viridis (matplotlib)", True)
    rng = fine.PointData[array].GetRange()
    lut.RescaleTransferFunction(rng[0], rng[1])
    lut.AutomaticRescaleRangeMode = "Never"
    panels = [(coarse, "coarse input (every 2nd point)"), (up, "STSR-INR Upscale x2"),
              (fine, "original fine data")]
    for i, (src, title) in enumerate(panels):
        view = CreateView("RenderView")
        AssignViewToLayout(view=view, layout=layout, hint=(1, 5, 6)[i])
        view.ViewTime = t
        view.OrientationAxesVisibility = 0
        view.Background = [1, 1, 1]
        try:
            view.UseColorPaletteForBackground = 0
        except AttributeError:
            pass
        d = Show(src, view)
        d.SetRepresentationType("Slice")
        d.ColorArrayName = ["POINTS", array]
        d.LookupTable = lut
        d.SetScalarBarVisibility(view, False)
        label = Text(Text=f"{title}\n{array}, t = {t:g}\ncolours {rng[0]:.3g} .. {rng[1]:.3g}")
        ld = Show(label, view)
        ld.FontSize = 9
        ld.WindowLocation = "Upper Center"
        ld.Justification = "Center"
        ld.Color = [0, 0, 0]
        ResetCamera(view)
    png = os.path.join(args.out, name + "_compare.png")
    SaveScreenshot(png, layout, ImageResolution=[1500, 500])
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
