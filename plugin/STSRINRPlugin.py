"""ParaView plugin: "STSR-INR Upscale" (filter) and "STSR-INR Model" (source).

A thin adapter: pipeline data in (vtkImageData time steps -> numpy -> stsr_core.VolumeSeries),
an engine call (stsr_core.api: fit / load_model / save_model / predict_timestep), VTK out.
No training logic lives here.

Loading: Tools > Manage Plugins > Load New (this file), or PV_PLUGIN_PATH=<repo>/plugin, or
``LoadPlugin(".../STSRINRPlugin.py", ns=globals())`` in pvpython/pvbatch. ParaView 5.11 on
Python 3.11 also needs the getargspec shim: run ParaView through ``scripts/stsr-paraview``.
"""
import os
import sys

from paraview.util.vtkAlgorithm import (VTKPythonAlgorithmBase, smdomain, smhint, smproperty,
                                        smproxy)
from vtkmodules.vtkCommonCore import vtkOutputWindow
from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkImageData
from vtkmodules.vtkCommonExecutionModel import (vtkStreamingDemandDrivenPipeline as SDDP)

_HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ["fast", "paper", "siren"]
DEVICES = ["auto", "cpu", "cuda"]
TIME_INTERPOLATIONS = ["auto", "linear", "cubic", "flow"]   # the fast preset's base_time


def _engine():
    """Import stsr_core.api, finding it beside this file (installed layout) or in the
    repository this file lives in, with the repository's venv (torch) if there is one."""
    try:
        from stsr_core import api
        return api
    except ImportError:
        pass
    import site
    root = os.path.dirname(_HERE)
    venv = os.path.join(root, ".venv", "lib", "python%d.%d" % sys.version_info[:2],
                        "site-packages")
    for p in (_HERE, root):
        if os.path.isdir(os.path.join(p, "stsr_core")) and p not in sys.path:
            sys.path.append(p)
    if os.path.isdir(venv) and venv not in sys.path:
        # in front of Debian's dist-packages: torch needs the venv's sympy, not Debian's
        before = list(sys.path)
        site.addsitedir(venv)
        sys.path[:] = [p for p in sys.path if p not in before] + before
    try:
        from stsr_core import api
    except ImportError as exc:
        raise RuntimeError(
            "STSR-INR needs PyTorch and the stsr_core package in ParaView's Python (%s). Run "
            "'make setup' in the stsr-inr repository and start ParaView with "
            "scripts/stsr-paraview, or pip-install torch==2.13.0 for /usr/bin/python3." % exc)
    return api


def _error(algorithm, message):
    """A ParaView error message (Output Messages window / stderr), not a traceback."""
    vtkOutputWindow.GetInstance().DisplayErrorText(
        "ERROR: %s: %s\n" % (type(algorithm).__name__, message))


def _output_layout(api, grid, times_in, scale, dims, time_scale):
    use_dims = dims if dims and all(int(d) > 0 for d in dims) else None
    g = api.output_grid(grid, scale=None if use_dims else float(scale), dims=use_dims)
    times = api.output_times(times_in, time_scale=int(time_scale)) if len(times_in) > 1 \
        else list(times_in)
    return g, [float(t) for t in times]


def _set_output_information(outInfo, g, times):
    nx, ny, nz = g.dims
    outInfo.Set(SDDP.WHOLE_EXTENT(), 0, nx - 1, 0, ny - 1, 0, nz - 1)
    outInfo.Set(vtkDataObject.SPACING(), *g.spacing)
    outInfo.Set(vtkDataObject.ORIGIN(), *g.origin)
    outInfo.Remove(SDDP.TIME_STEPS())
    outInfo.Remove(SDDP.TIME_RANGE())
    if times:
        for t in times:
            outInfo.Append(SDDP.TIME_STEPS(), t)
        outInfo.Append(SDDP.TIME_RANGE(), times[0])
        outInfo.Append(SDDP.TIME_RANGE(), times[-1])


def _requested_time(outInfo, times):
    """The output time step closest to what the pipeline asks for."""
    if not times:
        return None
    if outInfo.Has(SDDP.UPDATE_TIME_STEP()):
        t = outInfo.Get(SDDP.UPDATE_TIME_STEP())
        return min(times, key=lambda v: abs(v - t))
    return times[0]


def _image(api, tm, t, g, progress=None):
    """Predict timestep ``t`` on grid ``g`` and wrap it as vtkImageData (components
    re-assembled)."""
    from stsr_core.io.vti import image_from_series
    from stsr_core.series import VolumeSeries
    values = api.predict_timestep(tm, t, g, progress=progress)
    if values is None:
        return None
    series = VolumeSeries(times=[t], variables={k: v[None] for k, v in values.items()},
                          origin=g.origin, spacing=g.spacing, components=tm.info.components)
    img = image_from_series(series, 0)
    img.GetFieldData().RemoveArray("TimeValue")
    return img


class _ImageCache:
    """Output images per time; cleared whenever the model or the output grid changes."""

    def __init__(self):
        self.key = None
        self.images = {}

    def get(self, key, t):
        if key != self.key:
            self.key, self.images = key, {}
        return self.images.get(t)

    def put(self, t, img):
        self.images[t] = img


@smproxy.filter(name="STSRINRUpscale", label="STSR-INR Upscale")
@smhint.xml('<ShowInMenu category="STSR-INR"/>')
@smproperty.input(name="Input", port_index=0)
@smdomain.datatype(dataTypes=["vtkImageData"], composite_data_supported=False)
@smdomain.xml('<InputArrayDomain name="input_array" attribute_type="point"/>')
class STSRINRUpscale(VTKPythonAlgorithmBase):
    """Learns the input time series (all selected point arrays) with STSR-INR and outputs it on
    a finer grid and at in-between times, in the input's units."""

    def __init__(self):
        VTKPythonAlgorithmBase.__init__(self, nInputPorts=1, nOutputPorts=1,
                                        outputType="vtkImageData")
        self._arrays = []
        self._scale = 2.0
        self._dims = [0, 0, 0]
        self._time_scale = 1
        self._preset = "fast"
        self._time_interp = "auto"
        self._steps = 0
        self._minutes = 1.0
        self._device = "auto"
        self._seed = 0
        self._model_file = ""
        self._input_times = []
        self._input_grid = None
        self._out_times = []
        self._out_grid = None
        self._frames = []            # gathered input timesteps (numpy arrays)
        self._gather_index = 0
        self._series = None          # the gathered VolumeSeries
        self._series_key = None
        self._model = None           # stsr_core.api.TrainedModel
        self._model_key = None
        self._force_train = False
        self._cache = _ImageCache()
        self.last_training = None    # history of the last training (tests read it)

    # --- properties --------------------------------------------------------------------
    @smproperty.xml("""
        <StringVectorProperty name="Arrays" command="AddArray" clean_command="ClearArrays"
            repeat_command="1" number_of_elements_per_command="1" element_types="2">
          <ArrayListDomain name="array_list" input_domain_name="input_array">
            <RequiredProperties><Property name="Input" function="Input"/></RequiredProperties>
          </ArrayListDomain>
          <Documentation>Point arrays to learn (none selected: all).</Documentation>
        </StringVectorProperty>""")
    def AddArray(self, name):
        if name not in self._arrays:
            self._arrays.append(name)
            self._training_changed()

    def ClearArrays(self):
        if self._arrays:
            self._arrays = []
            self._training_changed()

    @smproperty.doublevector(name="SpatialScale", default_values=2.0)
    @smdomain.doublerange(min=1.0, max=16.0)
    def SetSpatialScale(self, value):
        if value != self._scale:
            self._scale = float(value)
            self.Modified()

    @smproperty.intvector(name="OutputDimensions", default_values=[0, 0, 0])
    def SetOutputDimensions(self, x, y, z):
        if [x, y, z] != self._dims:
            self._dims = [int(x), int(y), int(z)]
            self.Modified()

    @smproperty.intvector(name="TemporalScale", default_values=1)
    @smdomain.intrange(min=1, max=32)
    def SetTemporalScale(self, value):
        if value != self._time_scale:
            self._time_scale = int(value)
            self.Modified()

    @smproperty.xml("""
        <StringVectorProperty name="Preset" command="SetPreset" number_of_elements="1"
            default_values="fast">
          <StringListDomain name="list">%s</StringListDomain>
          <Documentation>fast: the project's default; paper: the reference network
          (needs GPU-hours); siren: plain SIREN baseline.</Documentation>
        </StringVectorProperty>""" % "".join('<String value="%s"/>' % p for p in PRESETS))
    def SetPreset(self, value):
        if value != self._preset:
            self._preset = value
            self._training_changed()

    @smproperty.xml("""
        <StringVectorProperty name="TimeInterpolation" command="SetTimeInterpolation"
            number_of_elements="1" default_values="auto">
          <StringListDomain name="list">%s</StringListDomain>
          <Documentation>fast preset: how it fills in between input steps. auto:
          motion-compensated, plus per array the share of cubic that best predicts held-out
          input steps; linear: like Temporal Interpolator; cubic: natural cubic spline in time;
          flow: motion-compensated (follows features that move between steps).</Documentation>
        </StringVectorProperty>""" % "".join('<String value="%s"/>' % t
                                            for t in TIME_INTERPOLATIONS))
    def SetTimeInterpolation(self, value):
        if value != self._time_interp:
            self._time_interp = value
            self._training_changed()

    @smproperty.intvector(name="TrainingSteps", default_values=0)
    def SetTrainingSteps(self, value):
        if value != self._steps:
            self._steps = int(value)
            self._training_changed()

    @smproperty.doublevector(name="TrainingMinutes", default_values=1.0)
    def SetTrainingMinutes(self, value):
        if value != self._minutes:
            self._minutes = float(value)
            self._training_changed()

    @smproperty.xml("""
        <StringVectorProperty name="Device" command="SetDevice" number_of_elements="1"
            default_values="auto">
          <StringListDomain name="list">%s</StringListDomain>
        </StringVectorProperty>""" % "".join('<String value="%s"/>' % d for d in DEVICES))
    def SetDevice(self, value):
        if value != self._device:
            self._device = value
            self._training_changed()

    @smproperty.intvector(name="Seed", default_values=0)
    def SetSeed(self, value):
        if value != self._seed:
            self._seed = int(value)
            self._training_changed()

    @smproperty.stringvector(name="ModelFile", default_values="")
    @smdomain.filelist()
    @smhint.filechooser(extensions="stsr", file_description="STSR-INR model")
    def SetModelFile(self, value):
        if value != self._model_file:
            self._model_file = value or ""
            self._model = None
            self.Modified()

    @smproperty.xml("""<Property name="Train" command="Train" panel_widget="command_button">
          <Documentation>Train now (replaces the model and ModelFile).</Documentation>
        </Property>""")
    def Train(self):
        """Train on demand. With the input already gathered this trains at once; otherwise
        training happens on the next update."""
        self._force_train = True
        self._model = None
        if self._series is not None:
            try:
                self._train(_engine())
            except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
                _error(self, str(exc))
        self.Modified()

    @smproperty.doublevector(name="TimestepValues", information_only="1",
                             si_class="vtkSITimeStepsProperty")
    def GetTimestepValues(self):
        return self._out_times or None

    def _training_changed(self):
        self._model = None
        self.Modified()

    # --- pipeline ----------------------------------------------------------------------
    def FillInputPortInformation(self, port, info):
        info.Set(self.INPUT_REQUIRED_DATA_TYPE(), "vtkImageData")
        return 1

    def RequestInformation(self, request, inInfoVec, outInfoVec):
        inInfo = inInfoVec[0].GetInformationObject(0)
        outInfo = outInfoVec.GetInformationObject(0)
        try:
            api = _engine()
            ext = inInfo.Get(SDDP.WHOLE_EXTENT())
            dims = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
            spacing = inInfo.Get(vtkDataObject.SPACING()) or (1.0, 1.0, 1.0)
            origin = list(inInfo.Get(vtkDataObject.ORIGIN()) or (0.0, 0.0, 0.0))
            origin = [o + e * s for o, e, s in zip(origin, ext[0::2], spacing)]
            times = list(inInfo.Get(SDDP.TIME_STEPS()) or []) if inInfo.Has(
                SDDP.TIME_STEPS()) else []
            self._input_times = times
            from stsr_core.grid import Grid
            self._input_grid = Grid(dims, origin, spacing)
            g, out_times = _output_layout(api, self._input_grid, times or [0.0], self._scale,
                                          self._dims, self._time_scale)
            self._out_grid = g
            self._out_times = out_times if times else []
            _set_output_information(outInfo, g, self._out_times)
        except Exception as exc:  # noqa: BLE001
            _error(self, str(exc))
            return 0
        return 1

    def RequestUpdateExtent(self, request, inInfoVec, outInfoVec):
        inInfo = inInfoVec[0].GetInformationObject(0)
        inInfo.Set(SDDP.UPDATE_EXTENT(), inInfo.Get(SDDP.WHOLE_EXTENT()), 6)
        if self._needs_gather() and self._input_times:
            i = min(self._gather_index, len(self._input_times) - 1)
            inInfo.Set(SDDP.UPDATE_TIME_STEP(), self._input_times[i])
        return 1

    def _needs_gather(self):
        return self._model is None

    def RequestData(self, request, inInfoVec, outInfoVec):
        try:
            return self._request_data(request, inInfoVec, outInfoVec)
        except Exception as exc:  # noqa: BLE001 - a clear message, never a crash
            request.Remove(SDDP.CONTINUE_EXECUTING())
            self._gather_index = 0
            self._frames = []
            _error(self, str(exc))
            return 0

    def _request_data(self, request, inInfoVec, outInfoVec):
        api = _engine()
        if self._model is None:
            inp = vtkImageData.GetData(inInfoVec[0], 0)
            if inp is None:
                raise RuntimeError("the input is not image data: resample it to an image "
                                   "first (Filters > Resample To Image)")
            from stsr_core.io.vti import arrays_from_image
            i = self._gather_index
            t = self._input_times[i] if self._input_times else 0.0
            self._frames.append((t, arrays_from_image(inp, " at time %g" % t),
                                 inp.GetDimensions()))
            if self._input_times and i + 1 < len(self._input_times):
                self._gather_index += 1
                request.Set(SDDP.CONTINUE_EXECUTING(), 1)
                return 1
            request.Remove(SDDP.CONTINUE_EXECUTING())
            frames, self._frames, self._gather_index = self._frames, [], 0
            self._series = self._assemble(frames)
            self._obtain_model(api)
        out = vtkImageData.GetData(outInfoVec, 0)
        outInfo = outInfoVec.GetInformationObject(0)
        t = _requested_time(outInfo, self._out_times)
        t_query = t if t is not None else self._series.times[0]
        key = (id(self._model), self._out_grid)
        img = self._cache.get(key, t_query)
        if img is None:
            abort = self.GetAbortExecute
            img = _image(api, self._model, t_query, self._out_grid,
                         progress=lambda f: (self.UpdateProgress(f), not abort())[1])
            if img is None:
                return 1
            self._cache.put(t_query, img)
        out.ShallowCopy(img)
        if t is not None:
            out.GetInformation().Set(vtkDataObject.DATA_TIME_STEP(), t)
        return 1

    def _assemble(self, frames):
        from stsr_core.errors import StsrError
        from stsr_core.series import VolumeSeries, split_components
        names = list(frames[0][1])
        wanted = self._arrays or names
        for t, arrays, dims in frames:
            if dims != frames[0][2]:
                raise StsrError("timesteps have different grids: %s at time %g vs %s at time %g"
                                % (dims, t, frames[0][2], frames[0][0]))
            missing = [n for n in wanted if n not in arrays]
            if missing:
                raise StsrError("array(s) %s missing at time %g (present at time %g)"
                                % (missing, t, frames[0][0]))
        variables, components = {}, {}
        for n in wanted:
            stacked = __import__("numpy").stack([f[1][n] for f in frames])
            parts = split_components(n, stacked)
            if stacked.ndim == 5:
                components[n] = list(parts)
            variables.update(parts)
        g = self._input_grid
        series = VolumeSeries(times=[f[0] for f in frames], variables=variables,
                              origin=g.origin, spacing=g.spacing, components=components,
                              source="the filter's input")
        series.check_finite()
        return series

    def _obtain_model(self, api):
        path = self._model_file
        if path and os.path.exists(path) and not self._force_train:
            tm = api.load_model(path, device=self._device)
            api.check_compatible(tm, self._series)
            self._model = tm
            return
        self._train(api)

    def _train(self, api):
        abort = self.GetAbortExecute

        def progress(p):
            self.UpdateProgress(0.99 * p.fraction)
            return not abort()

        steps = self._steps if self._steps > 0 else None
        minutes = self._minutes if self._minutes > 0 else None
        if steps is None and minutes is None:
            minutes = 1.0
        path = self._model_file or None
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise RuntimeError("ModelFile folder '%s' does not exist"
                               % os.path.dirname(os.path.abspath(path)))
        overrides = None
        if self._time_interp != "auto":
            if not hasattr(api.get_preset(self._preset)[0], "base_time"):
                raise RuntimeError("TimeInterpolation '%s' applies to the fast preset only; "
                                   "set it to auto for preset '%s'"
                                   % (self._time_interp, self._preset))
            overrides = {"base_time": self._time_interp}
        tm = api.fit(self._series, self._preset, steps=steps, max_minutes=minutes,
                     device=self._device, seed=self._seed, callback=progress,
                     checkpoint_path=path, model_overrides=overrides)
        self.last_training = dict(tm.info.history)
        self._model = tm
        self._force_train = False


@smproxy.source(name="STSRINRModel", label="STSR-INR Model")
@smhint.xml('<ShowInMenu category="STSR-INR"/>')
class STSRINRModel(VTKPythonAlgorithmBase):
    """A saved STSR-INR model as a time-varying image source: the model alone is a compact,
    continuous stand-in for the data it learned."""

    def __init__(self):
        VTKPythonAlgorithmBase.__init__(self, nInputPorts=0, nOutputPorts=1,
                                        outputType="vtkImageData")
        self._file = ""
        self._scale = 1.0
        self._dims = [0, 0, 0]
        self._time_scale = 1
        self._model = None
        self._model_key = None
        self._out_grid = None
        self._out_times = []
        self._cache = _ImageCache()

    @smproperty.stringvector(name="FileName", default_values="")
    @smdomain.filelist()
    @smhint.filechooser(extensions="stsr", file_description="STSR-INR model")
    def SetFileName(self, value):
        if value != self._file:
            self._file = value or ""
            self.Modified()

    @smproperty.doublevector(name="SpatialScale", default_values=1.0)
    @smdomain.doublerange(min=0.25, max=16.0)
    def SetSpatialScale(self, value):
        if value != self._scale:
            self._scale = float(value)
            self.Modified()

    @smproperty.intvector(name="OutputDimensions", default_values=[0, 0, 0])
    def SetOutputDimensions(self, x, y, z):
        if [x, y, z] != self._dims:
            self._dims = [int(x), int(y), int(z)]
            self.Modified()

    @smproperty.intvector(name="TemporalScale", default_values=1)
    @smdomain.intrange(min=1, max=32)
    def SetTemporalScale(self, value):
        if value != self._time_scale:
            self._time_scale = int(value)
            self.Modified()

    @smproperty.doublevector(name="TimestepValues", information_only="1",
                             si_class="vtkSITimeStepsProperty")
    def GetTimestepValues(self):
        return self._out_times or None

    def _load(self, api):
        if not self._file:
            raise RuntimeError("no model file given (FileName)")
        if not os.path.exists(self._file):
            raise RuntimeError("model file '%s' does not exist" % self._file)
        key = (os.path.abspath(self._file), os.path.getmtime(self._file))
        if self._model is None or key != self._model_key:
            self._model = api.load_model(self._file)
            self._model_key = key
        return self._model

    def RequestInformation(self, request, inInfoVec, outInfoVec):
        try:
            api = _engine()
            tm = self._load(api)
            info = tm.info
            g, times = _output_layout(api, info.grid, info.times, self._scale, self._dims,
                                      self._time_scale)
            self._out_grid, self._out_times = g, times
            _set_output_information(outInfoVec.GetInformationObject(0), g, times)
        except Exception as exc:  # noqa: BLE001
            _error(self, str(exc))
            return 0
        return 1

    def RequestData(self, request, inInfoVec, outInfoVec):
        try:
            api = _engine()
            tm = self._load(api)
            outInfo = outInfoVec.GetInformationObject(0)
            t = _requested_time(outInfo, self._out_times)
            key = (id(tm), self._out_grid)
            img = self._cache.get(key, t)
            if img is None:
                abort = self.GetAbortExecute
                img = _image(api, tm, t, self._out_grid,
                             progress=lambda f: (self.UpdateProgress(f), not abort())[1])
                if img is None:
                    return 1
                self._cache.put(t, img)
            out = vtkImageData.GetData(outInfoVec, 0)
            out.ShallowCopy(img)
            out.GetInformation().Set(vtkDataObject.DATA_TIME_STEP(), t)
        except Exception as exc:  # noqa: BLE001
            _error(self, str(exc))
            return 0
        return 1
