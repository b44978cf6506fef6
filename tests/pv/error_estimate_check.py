"""Run by tests/test_paraview.py under pvpython:
    error_estimate_check.py PLUGIN LIIF_MODEL FAST_MODEL OUT.json
Opens a liif model and a model of the default preset (both have an error estimate) with the
STSR-INR Model source, with the ErrorEstimate check box on and off; writes the arrays (name:
tuples, components) each output had, and their ranges, to OUT.json."""
import json
import sys

from paraview.simple import LoadPlugin, servermanager

plugin, liif, fast, out = sys.argv[1:5]
LoadPlugin(plugin, ns=globals())


def arrays(model, error):
    src = STSRINRModel(FileName=model)  # noqa: F821 - defined by LoadPlugin
    src.ErrorEstimate = error
    src.UpdatePipeline(src.TimestepValues[1])
    pd = servermanager.Fetch(src).GetPointData()
    return {pd.GetArrayName(i): [pd.GetArray(i).GetNumberOfTuples(),
                                 pd.GetArray(i).GetNumberOfComponents(),
                                 list(pd.GetArray(i).GetRange(-1))]
            for i in range(pd.GetNumberOfArrays())}


res = {"liif_on": arrays(liif, 1), "liif_off": arrays(liif, 0), "fast_on": arrays(fast, 1),
       "fast_off": arrays(fast, 0)}
with open(out, "w") as f:
    json.dump(res, f)
print("error_estimate_check done")
