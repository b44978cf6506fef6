"""Run inside the real paraview GUI under Xvfb (tests/test_paraview.py):
    paraview --dr --script=gui_check.py   with env STSR_GUI_DATA, STSR_GUI_OUT
Loads the plugin (PV_PLUGIN_PATH), opens a series, applies the filter, moves the time keeper
to an in-between time, saves a screenshot and the time keeper's steps."""
import json
import os

from paraview import simple

from paraview.simple import (ColorBy, GetActiveViewOrCreate, GetAnimationScene,
                             GetTimeKeeper, PVDReader, Render, ResetCamera, SaveScreenshot,
                             Show, servermanager)

data, out = os.environ["STSR_GUI_DATA"], os.environ["STSR_GUI_OUT"]
result = {"ok": False}
try:
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
    groups = [up.SMProxy.GetPropertyGroup(i) for i in range(up.SMProxy.GetNumberOfPropertyGroups())]
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
except Exception as exc:  # noqa: BLE001 - reported to the test
    result = {"ok": False, "error": repr(exc)}
with open(os.path.join(out, "gui.json"), "w") as fh:
    json.dump(result, fh)
os._exit(0)
