"""Run inside the real paraview GUI under Xvfb (tests/test_paraview.py), both checks in one
GUI session (ParaView starts once):
    paraview --dr --script=gui_check.py   with env STSR_GUI_DATA, STSR_GUI_OUT, STSR_GUI_BAD
1. The plugin loaded (PV_PLUGIN_PATH): opens a series, applies the filter, moves the time
   keeper to an in-between time, saves a screenshot, the time keeper's steps and the
   properties panel's order and groups (gui.json).
2. Shows a working STSR-INR filter, then goes through the plugin's error paths one by one (a
   model file that does not exist, a damaged one, an array the data does not have, settings
   that do not fit, a model folder that does not exist) and aborts a filter during the
   base's fit to the data. After each: the error messages ParaView received, a screenshot of
   the view (the GUI still renders) and the working filter's output at another time (still
   updates) (gui_errors.json); last, a preset with a network trains (gui_errors.json too).
Each part writes its result even when it fails; ends with os._exit(0) (the GUI is still up
to run it)."""
import json
import os
import traceback

from paraview import simple
from paraview.simple import (ColorBy, Delete, GetActiveViewOrCreate, GetAnimationScene,
                             GetTimeKeeper, Hide, PVDReader, Render, ResetCamera,
                             SaveScreenshot, Show, servermanager)
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING, vtkCommand, vtkOutputWindow

data, out, bad = (os.environ[k] for k in ("STSR_GUI_DATA", "STSR_GUI_OUT", "STSR_GUI_BAD"))
messages = []


@calldata_type(VTK_STRING)
def _on_error(obj, event, text):
    messages.append(str(text))


vtkOutputWindow.GetInstance().AddObserver(vtkCommand.ErrorEvent, _on_error)


def time_keeper():
    reader = PVDReader(FileName=data)
    # registered in paraview.simple by PV_PLUGIN_PATH's auto-loading
    up = simple.STSRINRUpscale(Input=reader)
    up.SpatialScale = 2.0
    up.TemporalScale = 2
    up.TrainingSteps = 20
    up.TrainingMinutes = 0.0
    # the properties panel's order: the proxy's properties in XML order (as pqProxyWidget
    # walks them), whether each is behind the gear button, and the groups
    it = servermanager.vtkSMOrderedPropertyIterator()
    it.SetProxy(up.SMProxy)
    it.Begin()
    panel = []
    while not it.IsAtEnd():
        if not it.GetProperty().GetInformationOnly():
            panel.append([it.GetKey(), it.GetProperty().GetPanelVisibility()])
        it.Next()
    groups = [up.SMProxy.GetPropertyGroup(i)
              for i in range(up.SMProxy.GetNumberOfPropertyGroups())]
    groups = [[g.GetXMLLabel()] + [g.GetProperty(j).GetXMLName()
                                   for j in range(g.GetNumberOfProperties())] for g in groups]
    view = GetActiveViewOrCreate("RenderView")
    scene = GetAnimationScene()
    scene.UpdateAnimationUsingDataTimeSteps()
    tk = GetTimeKeeper()
    steps = list(tk.TimestepValues)
    between = steps[1]
    scene.AnimationTime = between
    disp = Show(up, view)
    disp.SetRepresentationType("Slice")       # a z-slice through the upsampled volume
    ColorBy(disp, ("POINTS", "temperature"))
    disp.RescaleTransferFunctionToDataRange(True, False)
    view.ViewSize = [640, 480]
    view.CameraPosition = [0, 0, 1]
    view.CameraFocalPoint = [0, 0, 0]
    view.CameraViewUp = [0, 1, 0]
    ResetCamera(view)
    Render(view)
    SaveScreenshot(os.path.join(out, "gui.png"), view, ImageResolution=[640, 480])
    result = {"ok": True, "timekeeper_steps": steps, "time": tk.Time,
              "view_time": view.ViewTime, "panel": panel, "groups": groups}
    Hide(up, view)            # the second part starts from an empty view
    Delete(up)
    Delete(reader)
    return result


def errors_and_abort():
    result = {"ok": False, "paths": {}}
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

    # a preset with a network trains in the GUI too (torch.optim: with PyPI's CUDA torch it
    # would load triton, which crashed the GUI; the plugin keeps it out)
    del messages[:]
    net = simple.STSRINRUpscale(Input=reader, Preset="siren", TrainingSteps=2,
                                TrainingMinutes=0.0)
    net.UpdatePipeline(2.25)
    result["network"] = {"errors": list(messages),
                         "points": net.GetDataInformation().GetNumberOfPoints(),
                         "training": net.GetClientSideObject().last_training}
    result["ok"] = True
    return result


for name, check in (("gui.json", time_keeper), ("gui_errors.json", errors_and_abort)):
    try:
        result = check()
    except Exception:  # noqa: BLE001 - reported to the test
        result = {"ok": False, "error": traceback.format_exc()}
    with open(os.path.join(out, name), "w") as fh:
        json.dump(result, fh, indent=1)
os._exit(0)
