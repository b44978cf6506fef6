"""Run by tests/test_paraview.py under pvpython: one ParaView process for the plugin's
checks that can share it (its error paths, the error estimate's arrays, its numeric
properties fuzzed), so that ParaView, the plugin and torch load once. Started as

    pvpython plugin_worker.py PLUGIN

it reads one JSON request per line on stdin and answers each with one JSON line on its own
copy of stdout (ParaView's and VTK's prints go to stderr):

    {"op": "error", "path": CASE, "args": [...]}       one of the error paths below
    {"op": "property", "path": INPUT.pvd | MODEL, "proxy": "upscale" | "model",
     "properties": {"Name": value, ...}}               a filter or source so set, updated
    {"op": "arrays", "path": MODEL, "error": 0 | 1}    the source's arrays (ErrorEstimate)
 -> {"outcome": "ok", "errors": [the error messages ParaView got], "points": n, ...}

A crash or a hang of this process is seen by the test (tests/fuzzing.py's Worker)."""
import json
import os
import sys
import traceback

from paraview.simple import Delete, LoadPlugin, PVDReader, Sphere, servermanager
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand, vtkOutputWindow

messages = []


@calldata_type(VTK_STRING)
def _on_error(obj, event, text):
    messages.append(str(text))


def _proxy(name, **properties):
    """The plugin's filter or source (LoadPlugin defined it in this module)."""
    return globals()[name](**properties)


def _points(proxy):
    return proxy.GetDataInformation().GetNumberOfPoints()


_readers = {}


def reader(path):
    """One reader per input file for the whole run."""
    if path not in _readers:
        _readers[path] = PVDReader(FileName=path)
    return _readers[path]


def error_path(case, args):
    """The plugin's error paths (each must be one ParaView error, never a crash)."""
    if case == "non-image":
        return _proxy('STSRINRUpscale', Input=Sphere(), TrainingSteps=2)
    if case == "model-mismatch":
        return _proxy('STSRINRUpscale', Input=reader(args[0]), ModelFile=args[1])
    if case in ("missing-array", "no-engine"):
        return _proxy('STSRINRUpscale', Input=reader(args[0]), TrainingSteps=2)
    if case == "time-interpolation-wrong-preset":
        return _proxy('STSRINRUpscale', Input=reader(args[0]), Preset="siren",
                                     TimeInterpolation="flow", TrainingSteps=2)
    if case == "bad-model-file":
        return _proxy('STSRINRModel', FileName=args[0])
    raise ValueError("unknown case %r" % case)


def with_properties(request):
    """The filter on an input (or the source of a model) with the given properties."""
    if request["proxy"] == "upscale":
        proxy = _proxy('STSRINRUpscale', Input=reader(request["path"]))
    else:
        proxy = _proxy('STSRINRModel', FileName=request["path"])
    for name, value in request["properties"].items():
        setattr(proxy, name, value)
    return proxy


def arrays(request):
    src = _proxy('STSRINRModel', FileName=request["path"], ErrorEstimate=request["error"])
    src.UpdatePipelineInformation()
    src.UpdatePipeline(src.TimestepValues[1])
    pd = servermanager.Fetch(src).GetPointData()
    found = {pd.GetArrayName(i): [pd.GetArray(i).GetNumberOfTuples(),
                                  pd.GetArray(i).GetNumberOfComponents(),
                                  list(pd.GetArray(i).GetRange(-1))]
             for i in range(pd.GetNumberOfArrays())}
    return src, {"arrays": found}


def handle(request):
    del messages[:]
    if request["op"] == "arrays":
        proxy, result = arrays(request)
    else:
        proxy = error_path(request["path"], request.get("args", [])) \
            if request["op"] == "error" else with_properties(request)
        proxy.UpdatePipeline()
        result = {}
    result.update(outcome="ok", errors=list(messages), points=_points(proxy))
    Delete(proxy)
    return result


def main():
    # pvpython's sys.stdin and sys.stdout are ParaView's stream helpers: the descriptors
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    LoadPlugin(sys.argv[1], ns=globals())
    vtkOutputWindow.GetInstance().AddObserver(vtkCommand.ErrorEvent, _on_error)
    for line in requests:
        try:
            result = handle(json.loads(line))
        except Exception:  # noqa: BLE001 - the test reports it
            result = {"outcome": "bug", "traceback": traceback.format_exc(limit=-8)}
        answers.write(json.dumps(result) + "\n")
        answers.flush()


main()
