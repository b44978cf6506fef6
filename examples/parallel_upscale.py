"""The STSR-INR Upscale filter on several MPI ranks: every rank reads the whole (coarse)
input, rank 0 fits the model (or loads MODEL when it exists) and sends it to the others,
each rank computes its piece of every output step, and ParaView's parallel writer writes
one ``.pvti`` per step (a piece file per rank) listed in ``OUT/upscaled.pvd``.

    mpiexec -n 2 scripts/stsr-paraview pvbatch --sym examples/parallel_upscale.py \\
        INPUT.pvd --out OUT [--model MODEL] [--scale 2] [--time-scale 4] [--minutes 1]

(as root, Open MPI's mpiexec also needs OMPI_ALLOW_RUN_AS_ROOT=1
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). Runs on one process too (plain pvbatch).
"""
import argparse
import inspect
import os

# ParaView 5.11's plugin loader imports inspect.getargspec, removed in Python 3.11
if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec

from paraview.simple import CreateWriter, LoadPlugin, PVDReader  # noqa: E402
from vtkmodules.vtkParallelCore import vtkMultiProcessController  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="the coarse series (.pvd)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--model", default="", help="model file: used if it exists, else where "
                                                "rank 0 saves the fitted one")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--time-scale", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.0, help="fit budget")
    args = ap.parse_args()
    controller = vtkMultiProcessController.GetGlobalController()
    rank = controller.GetLocalProcessId() if controller else 0
    ranks = controller.GetNumberOfProcesses() if controller else 1
    os.makedirs(args.out, exist_ok=True)

    LoadPlugin(os.path.join(ROOT, "plugin", "STSRINRPlugin.py"), ns=globals())
    reader = PVDReader(FileName=os.path.abspath(args.input))
    up = STSRINRUpscale(Input=reader, SpatialScale=args.scale,  # noqa: F821
                        TemporalScale=args.time_scale, TrainingMinutes=args.minutes,
                        ModelFile=os.path.abspath(args.model) if args.model else "")
    up.UpdatePipelineInformation()
    times = list(up.TimestepValues)
    for i, t in enumerate(times):           # every rank writes its piece of each step
        writer = CreateWriter(os.path.join(args.out, "upscaled_%04d.pvti" % i), up)
        writer.UpdatePipeline(t)
        del writer
    if rank == 0:
        lines = ['<?xml version="1.0"?>', '<VTKFile type="Collection" version="0.1">',
                 "  <Collection>"]
        lines += ['    <DataSet timestep="%r" part="0" file="upscaled_%04d.pvti"/>' % (t, i)
                  for i, t in enumerate(times)]
        lines += ["  </Collection>", "</VTKFile>", ""]
        with open(os.path.join(args.out, "upscaled.pvd"), "w") as fh:
            fh.write("\n".join(lines))
        print("wrote %s: %d steps, one piece per rank (%d ranks)"
              % (os.path.join(args.out, "upscaled.pvd"), len(times), ranks))


if __name__ == "__main__":
    main()
