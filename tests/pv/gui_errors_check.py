"""Run inside the real paraview GUI under Xvfb (tests/test_paraview.py):
    paraview --dr --script=gui_errors_check.py   with env STSR_GUI_DATA, STSR_GUI_OUT,
    STSR_GUI_BAD (a damaged model file)
Shows a working STSR-INR filter, then goes through the plugin's error paths one by one (a
model file that does not exist, a damaged one, an array the data does not have, settings
that do not fit, a model folder that does not exist) and aborts a filter during the base's
fit to the data. After each: the error messages ParaView received, a screenshot of the view
(the GUI still renders) and the working filter's output at another time (still updates).
Writes gui_errors.json; ends with os._exit(0) (the GUI is still up to run it)."""
import json
import os
import traceback

from paraview import simple
from paraview.simple import (ColorBy, Delete, GetActiveViewOrCreate, PVDReader, Render,
                             ResetCamera, SaveScreenshot, Show)
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand, vtkOutputWindow

data, out, bad = (os.environ[k] for k in ("STSR_GUI_DATA", "STSR_GUI_OUT", "STSR_GUI_BAD"))
messages = []


@calldata_type(VTK_STRING)
def _on_error(obj, event, text):
    messages.append(str(text))


vtkOutputWindow.GetInstance().AddObserver(vtkCommand.ErrorEvent, _on_error)
result = {"ok": False, "paths": {}}
try:
    view = GetActiveViewOrCreate("RenderView")
    view.ViewSize = [320, 240]
    reader = PVDReader(FileName=data)
    good = simple.STSRINRUpscale(Input=reader)
    good.TrainingSteps = 5
    good.TrainingMinutes = 0.0
    disp = Show(good, view)
    disp.SetRepresentationType("Slice")
    ColorBy(disp, ("POINTS", "temperature"))
    disp.RescaleTransferFunctionToDataRange(True, False)
    ResetCamera(view)
    times = iter([1.75, 2.25, 2.75, 3.25, 1.5, 2.0, 2.5, 3.0])

    def still_working(name):
        """After an error: the view renders and the working filter updates at a new time."""
        Render(view)
        SaveScreenshot(os.path.join(out, "after-%s.png" % name), view,
                       ImageResolution=[320, 240])
        good.UpdatePipeline(next(times))
        return good.GetDataInformation().GetNumberOfPoints()

    result["points_before"] = still_working("start")

    def error_path(name, make):
        del messages[:]
        proxy = make()
        proxy.UpdatePipeline()
        points = proxy.GetDataInformation().GetNumberOfPoints()
        Delete(proxy)
        result["paths"][name] = {"errors": list(messages), "points": points,
                                 "points_after": still_working(name)}

    error_path("missing model file",
               lambda: simple.STSRINRModel(FileName=os.path.join(out, "nothere.stsr")))
    error_path("damaged model file", lambda: simple.STSRINRModel(FileName=bad))
    error_path("unknown array",
               lambda: simple.STSRINRUpscale(Input=reader, Arrays=["nope"], TrainingSteps=2,
                                             TrainingMinutes=0.0))
    error_path("settings that do not fit",
               lambda: simple.STSRINRUpscale(Input=reader, Preset="siren",
                                             TimeInterpolation="flow", TrainingSteps=2))
    error_path("model folder missing",
               lambda: simple.STSRINRUpscale(Input=reader, TrainingSteps=2,
                                             ModelFile=os.path.join(out, "no", "m.stsr")))

    # abort during the base's fit to the data, as the progress bar's abort button does: the
    # algorithm's abort flag, set once while it reports progress
    aborted = []
    stopper = simple.STSRINRUpscale(Input=reader, TrainingMinutes=1.0,
                                    ModelFile=os.path.join(out, "aborted.stsr"))
    alg = stopper.GetClientSideObject()

    def abort_once(obj, event):
        if not aborted and 0.05 < obj.GetProgress() < 1.0:
            aborted.append(obj.GetProgress())
            obj.SetAbortExecute(1)

    tag = alg.AddObserver(vtkCommand.ProgressEvent, abort_once)
    del messages[:]
    stopper.UpdatePipeline(2.0)
    alg.RemoveObserver(tag)
    result["abort"] = {"at": aborted, "training": alg.last_training, "errors": list(messages),
                       "points": stopper.GetDataInformation().GetNumberOfPoints()}
    Show(stopper, view)
    result["abort"]["points_after"] = still_working("abort")
    stopper.UpdatePipeline(2.25)
    result["abort"]["points_next_time"] = stopper.GetDataInformation().GetNumberOfPoints()
    result["ok"] = True
except Exception:  # noqa: BLE001 - reported to the test
    result["error"] = traceback.format_exc()
with open(os.path.join(out, "gui_errors.json"), "w") as fh:
    json.dump(result, fh, indent=1)
os._exit(0)
