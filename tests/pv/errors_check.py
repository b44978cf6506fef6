"""Run by tests/test_paraview.py under pvpython: each error path of the plugin must print a
clear ParaView error and not crash.  errors_check.py PLUGIN CASE ARGS..."""
import sys

from paraview.simple import LoadPlugin, PVDReader, Sphere

plugin, case = sys.argv[1:3]
LoadPlugin(plugin, ns=globals())
if case == "non-image":
    f = STSRINRUpscale(Input=Sphere())  # noqa: F821
    f.TrainingSteps = 2
    f.UpdatePipeline()
elif case == "model-mismatch":
    data, model = sys.argv[3:5]
    f = STSRINRUpscale(Input=PVDReader(FileName=data))  # noqa: F821
    f.ModelFile = model
    f.UpdatePipeline()
elif case == "missing-array":
    data = sys.argv[3]
    f = STSRINRUpscale(Input=PVDReader(FileName=data))  # noqa: F821
    f.TrainingSteps = 2
    f.UpdatePipeline()
elif case == "no-engine":
    data = sys.argv[3]
    f = STSRINRUpscale(Input=PVDReader(FileName=data))  # noqa: F821
    f.TrainingSteps = 2
    f.UpdatePipeline()
elif case == "time-interpolation-wrong-preset":
    f = STSRINRUpscale(Input=PVDReader(FileName=sys.argv[3]))  # noqa: F821
    f.Preset = "siren"
    f.TimeInterpolation = "flow"
    f.TrainingSteps = 2
    f.UpdatePipeline()
elif case == "bad-model-file":
    s = STSRINRModel(FileName=sys.argv[3])  # noqa: F821
    s.UpdatePipeline()
print("script finished without crashing")
