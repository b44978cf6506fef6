"""Run by tests/test_install.py in pvpython started the way docs/paraview.md says for an
installed wheel (a venv, PV_PLUGIN_PATH set to what `stsr plugin-path` printed; no
LoadPlugin):
    installed_check.py INPUT.pvd OUT.json
Applies STSR-INR Upscale (registered by ParaView from PV_PLUGIN_PATH) with a tiny budget and
writes to OUT.json where the plugin and the engine were loaded from, the error messages
ParaView got, and the output's points, arrays and times."""
import json
import sys

from paraview import simple
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand, vtkOutputWindow

data, out = sys.argv[1:3]
messages = []


@calldata_type(VTK_STRING)
def _on_error(obj, event, text):
    messages.append(str(text))


vtkOutputWindow.GetInstance().AddObserver(vtkCommand.ErrorEvent, _on_error)
result = {"registered": hasattr(simple, "STSRINRUpscale") and hasattr(simple, "STSRINRModel"),
          "python": list(sys.version_info[:3])}
if result["registered"]:
    up = simple.STSRINRUpscale(Input=simple.PVDReader(FileName=data), TemporalScale=2,
                               TrainingMinutes=0.0, TrainingSteps=2, Preset="siren")
    up.UpdatePipeline()
    info = up.GetDataInformation()
    result.update(points=info.GetNumberOfPoints(),
                  arrays=sorted(info.GetPointDataInformation().GetArrayInformation(i).GetName()
                                for i in range(info.GetPointDataInformation()
                                               .GetNumberOfArrays())),
                  times=list(up.TimestepValues or []),
                  plugin=getattr(sys.modules.get(type(up.GetClientSideObject()).__module__),
                                 "__file__", None))
result["errors"] = messages
result["stsr_core"] = getattr(sys.modules.get("stsr_core"), "__file__", None)
result["torch"] = getattr(sys.modules.get("torch"), "__file__", None)
with open(out, "w") as fh:
    json.dump(result, fh, indent=1)
print("installed_check done")
