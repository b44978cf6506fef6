"""Open a saved STSR-INR model alone (no original data) with the STSR-INR Model source and
write a few of its timesteps, in a pvpython/pvbatch script.

    pvpython examples/open_model.py [MODEL] [--scale 2] [--time-scale 4] [--steps 3]

MODEL defaults to ``examples/output/tornado.stsr`` (made by ``upscale_example.py``); any file
written by ``stsr fit -o`` or by the Upscale filter's ModelFile works. The source answers at
any resolution (``--scale`` relative to the grid the model learned, or ``--dims X Y Z``) and at
the model's times plus ``time-scale - 1`` in-between times; each timestep written is a
``.vti`` in ``OUT/`` (default ``examples/output/from_model``) with the model's arrays in
physical units.
"""
import argparse
import inspect
import os
import sys

# ParaView 5.11's plugin loader imports inspect.getargspec, removed in Python 3.11
if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec

from paraview.simple import LoadPlugin, SaveData  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=os.path.join(HERE, "output", "tornado.stsr"))
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--dims", type=int, nargs=3, metavar=("X", "Y", "Z"))
    ap.add_argument("--time-scale", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="how many timesteps to write")
    ap.add_argument("--out", default=os.path.join(HERE, "output", "from_model"))
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        sys.exit(f"no model file '{args.model}': run examples/upscale_example.py first, "
                 "or give a file written by 'stsr fit -o MODEL'")
    os.makedirs(args.out, exist_ok=True)

    LoadPlugin(os.path.join(ROOT, "plugin", "STSRINRPlugin.py"), ns=globals())
    src = STSRINRModel(FileName=args.model)  # noqa: F821 - defined by LoadPlugin
    src.SpatialScale = args.scale
    if args.dims:
        src.OutputDimensions = args.dims
    src.TemporalScale = args.time_scale
    src.UpdatePipelineInformation()
    times = list(src.TimestepValues)
    if not times:
        sys.exit("the model source reported no time steps (see the error above)")
    print(f"model {args.model}: {len(times)} output times {times[0]:g} .. {times[-1]:g}")
    pick = times[:args.steps]      # the first input time and the in-between times after it
    stem = os.path.splitext(os.path.basename(args.model))[0]
    for i, t in enumerate(pick):
        src.UpdatePipeline(t)
        info = src.GetDataInformation()
        if info.GetNumberOfPoints() == 0:
            sys.exit(f"no output at t = {t:g} (see the error above)")
        path = os.path.join(args.out, f"{stem}_t{i}.vti")
        SaveData(path, proxy=src)
        pd = info.GetPointDataInformation()
        names = [pd.GetArrayInformation(k).GetName() for k in range(pd.GetNumberOfArrays())]
        print(f"t = {t:g}: extent {info.GetExtent()}, arrays {names} -> {path}")


if __name__ == "__main__":
    main()
