"""ParaView plugin: "STSR-INR Upscale" (filter) and "STSR-INR Model" (source).

A thin adapter: pipeline data in (vtkImageData time steps -> numpy -> stsr_core.VolumeSeries),
an engine call (stsr_core.api: fit / load_model / save_model / predict_timestep), VTK out.
No training logic lives here.

Loading: Tools > Manage Plugins > Load New (this file), or PV_PLUGIN_PATH=<repo>/plugin, or
``LoadPlugin(".../STSRINRPlugin.py", ns=globals())`` in pvpython/pvbatch, or from a wheel
(``stsr plugin-path``). ParaView 5.11 on Python 3.11 also needs the getargspec shim: run
ParaView through ``scripts/stsr-paraview``. The same file serves ParaView 5.11 (VTK 9.2) and
5.13 (VTK 9.3): see _panel for what changed between them.
"""
import functools
import os
import sys

from paraview.util.vtkAlgorithm import (VTKPythonAlgorithmBase, smdomain, smhint, smproperty,
                                        smproxy)
from vtkmodules.vtkCommonCore import vtkOutputWindow
from vtkmodules.vtkCommonDataModel import vtkDataObject, vtkImageData
from vtkmodules.vtkCommonExecutionModel import (vtkAlgorithm,
                                                 vtkStreamingDemandDrivenPipeline as SDDP)

_HERE = os.path.dirname(os.path.abspath(__file__))

# Inside ParaView torch must not load triton. PyPI's CUDA builds of torch bring it (Debian 13
# gets torch from there), and the first torch.optim optimiser imports torch._dynamo, which
# imports triton to learn whether it is installed: in the GUI, where OpenGL (Mesa's llvmpipe)
# has loaded its LLVM already, loading libtriton.so ends ParaView with a segmentation fault
# (seen with ParaView 5.13.2 and torch 2.13.0+cu130; pvpython, which had not rendered, was
# not hit). The engine never compiles with triton, so the plugin hides it: 'import triton'
# then fails as it does where triton is not installed.
if "triton" not in sys.modules:
    sys.modules["triton"] = None


def _find_core():
    """Make stsr_core importable from beside this file's folder (the wheel's layout:
    site-packages/stsr_paraview/STSRINRPlugin.py beside site-packages/stsr_core; CMake's:
    STSRINR/STSRINRPlugin.py beside STSRINR/stsr_core) or from the repository this file
    lives in, behind anything already on the path."""
    for p in (_HERE, os.path.dirname(_HERE)):
        if os.path.isdir(os.path.join(p, "stsr_core")) and p not in sys.path:
            sys.path.append(p)


def _choices():
    """The settings' choices from stsr_core/config.py (which imports no torch), for the
    drop-down lists. The plugin file alone has only the defaults; using it then says what
    is missing (see _engine)."""
    _find_core()
    try:
        from stsr_core import config
    except ImportError:
        return {"fast": ""}, ("auto",), {"auto": ""}, {"off": ""}
    return (config.PRESET_DESCRIPTIONS, config.DEVICES, config.BASE_TIME_DESCRIPTIONS,
            config.SPACE_PRIOR_DESCRIPTIONS)


# TimeInterpolation: the fast base_time; SpatialPrior: its space_prior
PRESETS, DEVICES, TIME_INTERPOLATIONS, SPATIAL_PRIORS = _choices()
# the first listed is the engine's default: left at it, every preset keeps its own default
TIME_INTERPOLATION_DEFAULT = next(iter(TIME_INTERPOLATIONS))
SPATIAL_PRIOR_DEFAULT = next(iter(SPATIAL_PRIORS))


def _engine():
    """Import stsr_core.api (found as _find_core finds it) with the repository's venv
    (torch) if there is one; without them, an error that says how to get them."""
    try:
        from stsr_core import api
        return api
    except ImportError:
        pass
    import site
    _find_core()
    venv = os.path.join(os.path.dirname(_HERE), ".venv", "lib",
                        "python%d.%d" % sys.version_info[:2], "site-packages")
    if os.path.isdir(venv) and venv not in sys.path:
        # in front of Debian's dist-packages: torch needs the venv's sympy, not Debian's
        before = list(sys.path)
        site.addsitedir(venv)
        sys.path[:] = [p for p in sys.path if p not in before] + before
    try:
        from stsr_core import api
    except ImportError as exc:
        raise RuntimeError(_missing_engine(exc))
    return api


def _venv_around(folder):
    """The virtual environment (a folder with pyvenv.cfg) that ``folder`` lies in, or None."""
    while True:
        if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _venv_python(venv):
    """The venv's Python version ("3.11") and interpreter, from its pyvenv.cfg."""
    version = ""
    try:
        with open(os.path.join(venv, "pyvenv.cfg")) as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    version = ".".join(value.strip().split(".")[:2])
    except OSError:
        pass
    exe = os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else \
        os.path.join(venv, "bin", "python")
    return version, exe


def _missing_engine(exc):
    """What ParaView's output window says when torch or stsr_core cannot be imported: the
    Python that ParaView runs, where it looked, and the command that fixes it for the way
    this plugin file was installed (a repository, a venv from the wheel, a file alone)."""
    import paraview
    pv = getattr(paraview, "__version__", "")
    here = "%d.%d" % sys.version_info[:2]
    python = os.path.join(sys.base_prefix, "bin", "python" + here)
    if not os.path.isfile(python):      # ParaView's own Python (Kitware's binaries)
        python = "python" + here

    def start(venv):
        """How this ParaView starts with ``venv``'s packages (--venv since 5.12)."""
        if pv.split(".")[:2] == ["5", "11"]:
            return "start ParaView with PYTHONPATH=%s" % os.path.join(
                venv, "lib", "python" + here, "site-packages")
        return "start 'paraview --venv=%s'" % venv

    # what pip should install: torch (or another requirement); stsr_core comes with the
    # plugin in the wheel, which this project does not publish: 'pip wheel .' makes it
    missing = (getattr(exc, "name", None) or "torch").split(".")[0]
    what = "stsr_inr-*.whl (made by 'pip wheel .' in the stsr-inr repository)" \
        if missing == "stsr_core" else missing
    repo = os.path.dirname(_HERE)
    venv = _venv_around(_HERE)
    if os.path.isfile(os.path.join(repo, "scripts", "setup.sh")):
        fix = ("run 'make setup' in %s, then start ParaView with %s"
               % (repo, os.path.join(repo, "scripts", "stsr-paraview")))
    elif venv and _venv_python(venv)[0] not in ("", here):
        fix = ("the plugin's venv %s has Python %s but ParaView runs %s: make a venv with "
               "ParaView's: '%s -m venv DIR', 'DIR/bin/pip install torch stsr_inr-*.whl', "
               "then %s" % (venv, _venv_python(venv)[0], here, python, start("DIR")))
    elif venv:
        fix = "'%s' -m pip install %s, then %s" % (_venv_python(venv)[1], what, start(venv))
    else:
        fix = ("'%s -m venv DIR', 'DIR/bin/pip install torch stsr_inr-*.whl' (made by 'pip "
               "wheel .' in the stsr-inr repository), then set PV_PLUGIN_PATH to what "
               "'DIR/bin/stsr plugin-path' prints and %s" % (python, start("DIR")))
    # Python's path, then the folders the plugin itself searched for stsr_core (see
    # _find_core) and for the repository's venv (see _engine) where they are not on it
    looked = [p for p in sys.path if p]
    looked += [p for p in (_HERE, repo, os.path.join(repo, ".venv", "lib", "python" + here,
                                                      "site-packages")) if p not in looked]
    return ("STSR-INR needs PyTorch and the stsr_core package in ParaView's Python (%s).\n"
            "ParaView %s runs Python %s (%s, prefix %s).\n"
            "It looked in: %s\n"
            "To fix: %s."
            % (exc, pv, sys.version.split()[0], python, sys.prefix,
               os.pathsep.join(looked), fix))


def _error(algorithm, message):
    """A ParaView error message (Output Messages window / stderr), not a traceback."""
    vtkOutputWindow.GetInstance().DisplayErrorText(
        "ERROR: %s: %s\n" % (type(algorithm).__name__, message))


def _reports_errors(request_method):
    """For Request* methods: an exception becomes a ParaView error message and the method
    returns 0 (the pipeline stops there); a gathering filter starts its gathering afresh."""
    @functools.wraps(request_method)
    def method(self, request, inInfoVec, outInfoVec):
        try:
            return request_method(self, request, inInfoVec, outInfoVec)
        except Exception as exc:  # noqa: BLE001 - a clear message, never a crash
            request.Remove(SDDP.CONTINUE_EXECUTING())
            if hasattr(self, "_gather"):
                self._gather = []
            _error(self, str(exc))
            return 0
    return method


# --- properties: factories of decorated setters -----------------------------------------
# ParaView (5.11 and 5.13) builds a proxy's XML from each class's own __dict__, so every
# class assigns its properties in its body (SetX = _number(...)); @_panel then lists them in
# that order.

def _setter(name, attr, convert, retrain):
    """Set<name>: store convert(*values) in ``attr``; a change re-executes and, with
    ``retrain``, drops the trained model."""
    def setter(self, *values):
        value = convert(*values)
        if value != getattr(self, attr):
            setattr(self, attr, value)
            if retrain:
                self._model = None
            self.Modified()
    setter.__name__ = "Set" + name
    return setter


def _xml(tag, name, default, n=1, inner="", advanced=False, doc=""):
    return ('<%sVectorProperty name="%s" command="Set%s" number_of_elements="%d" '
            'default_values="%s"%s>%s<Documentation>%s</Documentation></%sVectorProperty>'
            % (tag, name, name, n, default,
               ' panel_visibility="advanced"' if advanced else "", inner, doc, tag))


def _number(name, attr, default, lo=None, hi=None, retrain=False, advanced=False, doc=""):
    """An int or double property (by ``default``'s type; a list: one int per element)."""
    values = default if isinstance(default, list) else [default]
    real = isinstance(values[0], float)
    tag = "Double" if real else "Int"
    rng = "" if lo is None else '<%sRangeDomain name="range" min="%s" max="%s"/>' % (
        tag, lo, hi)
    if isinstance(default, list):
        convert = lambda *v: [int(x) for x in v]   # noqa: E731
    else:
        convert = float if real else int
    xml = _xml(tag, name, " ".join(str(v) for v in values), len(values), rng, advanced, doc)
    return smproperty.xml(xml)(_setter(name, attr, convert, retrain))


def _choice(name, attr, choices, retrain=True, advanced=False, doc=""):
    """A drop-down list of ``choices`` (name -> one-line description, shown in the tooltip);
    the first is the default."""
    items = "".join('<String value="%s"/>' % c for c in choices)
    doc += " ".join("%s: %s." % (c, d) for c, d in choices.items() if d)
    xml = _xml("String", name, next(iter(choices)), 1,
               '<StringListDomain name="list">%s</StringListDomain>' % items, advanced, doc)
    return smproperty.xml(xml)(_setter(name, attr, str, retrain))


def _boolean(name, attr, default, doc=""):
    """A check box (0/1)."""
    xml = _xml("Int", name, int(default), 1, '<BooleanDomain name="bool"/>', doc=doc)
    return smproperty.xml(xml)(_setter(name, attr, lambda v: bool(int(v)), False))


def _model_path(name, attr, retrain, doc):
    """A file chooser for .stsr model files."""
    inner = ('<FileListDomain name="files"/><Hints><FileChooser extensions="stsr" '
             'file_description="STSR-INR model"/></Hints>')
    xml = _xml("String", name, "", 1, inner, doc=doc)
    return smproperty.xml(xml)(_setter(name, attr, lambda v: v or "", retrain))


# The numeric properties' ranges (stsr_core.config.Range keywords, or the name of the engine
# setting a property sets), checked before each update: out of range is one error naming the
# property, its value and its range. (The XML range domains only shape the GUI's sliders.)
PROPERTY_RANGES = {
    "SpatialScale": ("_scale", {"lo": 0, "open_lo": True}),
    "OutputDimensions": ("_dims", {"lo": 0, "integer": True}),     # 0 0 0: SpatialScale
    "TemporalScale": ("_time_scale", {"lo": 1, "integer": True}),
    "TrainingMinutes": ("_minutes", {"lo": 0}),                     # 0: no time limit
    "TrainingSteps": ("_steps", {"lo": 0, "integer": True}),        # 0: no step limit
    "Seed": ("_seed", "seed"),
}
OUTPUT_PROPERTIES = ("SpatialScale", "OutputDimensions", "TemporalScale")


def _check_ranges(algorithm, names):
    """Raise naming the first of the properties ``names`` whose value is out of range."""
    from stsr_core.config import RANGES, Range, out_of_range
    for name in names:
        attr, allowed = PROPERTY_RANGES[name]
        allowed = RANGES[allowed] if isinstance(allowed, str) else Range(**allowed)
        value = getattr(algorithm, attr)
        message = out_of_range(name, tuple(value) if isinstance(value, list) else value,
                               allowed)
        if message:
            raise RuntimeError(message)


def _output_properties(scale, min_scale):
    """SpatialScale (default ``scale``), OutputDimensions, TemporalScale and ErrorEstimate:
    the output grid, times and arrays, the same for both proxies."""
    return (_number("SpatialScale", "_scale", scale, min_scale, 16.0,
                    doc="Output spacing = input spacing / scale, over the same bounds."),
            _number("OutputDimensions", "_dims", [0, 0, 0],
                    doc="Output point counts; 0 0 0: use SpatialScale."),
            _number("TemporalScale", "_time_scale", 1, 1, 32,
                    doc="Output steps per interval between input steps."),
            _boolean("ErrorEstimate", "_error", True,
                     doc="Also output NAME_error arrays: the estimated local absolute error "
                         "(same units; about 90 % of points lie below it), for models that "
                         "have one (every fit of the fast preset, and preset liif)."))


def _timestep_values():
    """The information-only output times the GUI's time keeper shows."""
    @smproperty.doublevector(name="TimestepValues", information_only="1",
                             si_class="vtkSITimeStepsProperty")
    def GetTimestepValues(self):
        return self._out_times or None
    return GetTimestepValues


def _panel(*groups):
    """Class decorator (under @smproxy): the panel lists the properties in the order the class
    body defines them, grouped by ``groups``: (label, property names) pairs. ParaView itself
    orders a class's decorated methods by name (5.11) or by their functions' first line
    (5.13, where the factories' setters all share one line): taking them off the methods and
    listing them at class level, which both versions put first as given, gives one order on
    both."""
    def original(obj):          # ParaView's decorators wrap functions and classes alike
        while hasattr(obj, "_pv_original_func"):
            obj = obj._pv_original_func
        return obj

    def decorate(decorated):
        cls = original(decorated)
        xmls = list(cls.__dict__.get("_pvsm_property_xmls", []))     # the Input port's
        for value in map(original, cls.__dict__.values()):
            if callable(value) and hasattr(value, "_pvsm_property_xmls"):
                xmls += value._pvsm_property_xmls
                del value._pvsm_property_xmls
        xmls += ['<PropertyGroup label="%s">%s</PropertyGroup>'
                 % (label, "".join('<Property name="%s"/>' % n for n in names))
                 for label, names in groups]
        cls._pvsm_property_xmls = xmls
        return decorated
    return decorate


# --- pipeline helpers shared by both proxies ---------------------------------------------
def _output_layout(api, grid, times_in, scale, dims, time_scale):
    use_dims = dims if dims and all(int(d) > 0 for d in dims) else None
    g = api.output_grid(grid, scale=None if use_dims else float(scale), dims=use_dims)
    times = api.output_times(times_in, time_scale=int(time_scale)) if len(times_in) > 1 \
        else list(times_in)
    return g, [float(t) for t in times]


def _set_output_information(outInfo, g, times):
    nx, ny, nz = g.dims
    outInfo.Set(SDDP.WHOLE_EXTENT(), 0, nx - 1, 0, ny - 1, 0, nz - 1)
    # any sub-extent can be computed alone (MPI pieces, streaming): see _requested_extent
    outInfo.Set(vtkAlgorithm.CAN_PRODUCE_SUB_EXTENT(), 1)
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


def _image(api, tm, t, g, ext, progress=None, error=False):
    """Predict timestep ``t`` on the ``ext`` box of grid ``g`` (only that part is computed)
    and wrap it as vtkImageData (components re-assembled; with ``error``, the error
    estimate's arrays too), placed in the whole grid."""
    from stsr_core.io.vti import image_from_series
    from stsr_core.series import VolumeSeries
    values = api.predict_timestep(tm, t, g, progress=progress, extent=ext, error=error,
                                  max_memory=_rank_budget())
    if values is None:
        return None
    g = api.sub_grid(g, ext)
    series = VolumeSeries(times=[t], variables={k: v[None] for k, v in values.items()},
                          origin=g.origin, spacing=g.spacing,
                          components=api.output_arrays(tm, error)[1])
    img = image_from_series(series, 0)
    img.GetFieldData().RemoveArray("TimeValue")
    return img


def _mpi_controller():
    """ParaView's MPI controller when this process is one of several ranks (pvbatch
    under mpiexec, a parallel pvserver), else None."""
    try:
        from vtkmodules.vtkParallelCore import vtkMultiProcessController
    except ImportError:
        return None
    c = vtkMultiProcessController.GetGlobalController()
    return c if c is not None and c.GetNumberOfProcesses() > 1 else None


def _rank_budget():
    """Under MPI each rank's share of the default memory budget (the ranks of a node
    split it; each computes its piece slab by slab within it), else None (the default)."""
    controller = _mpi_controller()
    if controller is None:
        return None
    from stsr_core.slabs import default_max_memory
    return default_max_memory(share=controller.GetNumberOfProcesses())


def _broadcast_model(controller, data, error):
    """Rank 0's model bytes and error text on every rank (each rank must call it)."""
    import numpy as np
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import vtkUnsignedCharArray
    out = []
    for value in (data, error.encode("utf-8")):
        if controller.GetLocalProcessId() == 0:     # one leading byte: never empty
            arr = numpy_support.numpy_to_vtk(
                np.frombuffer(b"\1" + value, dtype=np.uint8), deep=1,
                array_type=numpy_support.get_vtk_array_type(np.uint8))
        else:
            arr = vtkUnsignedCharArray()
        if not controller.Broadcast(arr, 0):
            raise RuntimeError("could not receive the model from rank 0 (MPI broadcast)")
        out.append(numpy_support.vtk_to_numpy(arr).tobytes()[1:])
    return out[0], out[1].decode("utf-8")


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


def _requested_extent(outInfo, g):
    """The part of the output grid ``g`` the pipeline asks for: its UPDATE_EXTENT (an MPI
    rank's piece, a streamed piece; all of it when none is set), or None for an empty one
    (more ranks than points along the split axis)."""
    whole = (0, g.dims[0] - 1, 0, g.dims[1] - 1, 0, g.dims[2] - 1)
    ext = tuple(outInfo.Get(SDDP.UPDATE_EXTENT())) if outInfo.Has(SDDP.UPDATE_EXTENT()) \
        else whole
    if any(ext[2 * a] > ext[2 * a + 1] for a in range(3)):
        return None
    # clipped to the whole extent (a request with ghost levels may reach past it)
    return tuple(max(ext[2 * a], 0) if k == 0 else min(ext[2 * a + 1], whole[2 * a + 1])
                 for a in range(3) for k in (0, 1))


def _output_at_requested_time(algorithm, api, tm, outInfoVec):
    """RequestData's end for both proxies: the image at the time the pipeline asks for, on
    the extent it asks for (only that part is computed), from the cache or predicted by
    ``tm``, copied to the output."""
    outInfo = outInfoVec.GetInformationObject(0)
    t = _requested_time(outInfo, algorithm._out_times)
    t_query = t if t is not None else tm.info.times[0]
    grid = algorithm._out_grid
    ext = _requested_extent(outInfo, grid)
    out = vtkImageData.GetData(outInfoVec, 0)
    if ext is None:              # an empty piece: nothing to compute
        out.Initialize()
        return 1
    key = (id(tm), grid, ext, algorithm._error)
    img = algorithm._cache.get(key, t_query)
    if img is None:
        abort = algorithm.GetAbortExecute
        img = _image(api, tm, t_query, grid, ext,
                     progress=lambda f: (algorithm.UpdateProgress(f), not abort())[1],
                     error=algorithm._error)
        if img is None:          # aborted; VTK 9.2/9.3 keep the flag set, and every later
            algorithm.SetAbortExecute(0)     # update would stop at once: the next one computes
            return 1
        img.SetOrigin(*grid.origin)   # the piece's place in the whole grid
        img.SetExtent(*ext)
        algorithm._cache.put(t_query, img)
    out.ShallowCopy(img)
    if t is not None:
        out.GetInformation().Set(vtkDataObject.DATA_TIME_STEP(), t)
    return 1


_OUTPUT = ("Output", ["SpatialScale", "OutputDimensions", "TemporalScale", "ErrorEstimate"])


@smproxy.filter(name="STSRINRUpscale", label="STSR-INR Upscale", support_reload=False)
@_panel(("Input", ["Arrays"]), _OUTPUT,
        ("Training", ["TrainingMinutes", "TrainingSteps", "Preset", "TimeInterpolation",
                      "SpatialPrior"]),
        ("Model", ["ModelFile", "Train"]), ("Run", ["Device", "Seed"]))
@smhint.xml('<ShowInMenu category="STSR-INR"/>')
@smproperty.input(name="Input", port_index=0)
@smdomain.datatype(dataTypes=["vtkImageData"], composite_data_supported=False)
@smdomain.xml('<InputArrayDomain name="input_array" attribute_type="point"/>')
class STSRINRUpscale(VTKPythonAlgorithmBase):
    """Learns the input time series (all selected point arrays) with STSR-INR and outputs it on
    a finer grid and at in-between times, in the input's units."""

    def __init__(self):
        VTKPythonAlgorithmBase.__init__(self, nInputPorts=1, nOutputPorts=1,
                                        inputType="vtkImageData", outputType="vtkImageData")
        self._arrays = []
        self._scale = 2.0
        self._dims = [0, 0, 0]
        self._time_scale = 1
        self._error = True
        self._minutes = 1.0
        self._steps = 0
        self._preset = "fast"
        self._time_interp = TIME_INTERPOLATION_DEFAULT
        self._space_prior = SPATIAL_PRIOR_DEFAULT
        self._model_file = ""
        self._device = "auto"
        self._seed = 0
        self._input_times = []
        self._input_grid = None
        self._out_times = []
        self._out_grid = None
        self._gather = []            # the input steps gathered so far (stsr_core Frames)
        self._series = None          # the gathered VolumeSeries
        self._model = None           # stsr_core.api.TrainedModel
        self._force_train = False
        self._cache = _ImageCache()
        self.last_training = None    # history of the last training (tests read it)

    # --- properties, in the panel's order --------------------------------------------
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
            self._model = None
            self.Modified()

    def ClearArrays(self):
        if self._arrays:
            self._arrays = []
            self._model = None
            self.Modified()

    SetSpatialScale, SetOutputDimensions, SetTemporalScale, SetErrorEstimate = \
        _output_properties(2.0, 1.0)
    SetTrainingMinutes = _number("TrainingMinutes", "_minutes", 1.0, retrain=True,
                                 doc="Training time budget (0: TrainingSteps alone).")
    SetTrainingSteps = _number("TrainingSteps", "_steps", 0, retrain=True, advanced=True,
                               doc="Training steps (0: TrainingMinutes alone); with both, "
                                   "whichever ends first.")
    SetPreset = _choice("Preset", "_preset", PRESETS)
    SetTimeInterpolation = _choice("TimeInterpolation", "_time_interp", TIME_INTERPOLATIONS,
                                   advanced=True,
                                   doc="fast preset: how it fills in between input steps. ")
    SetSpatialPrior = _choice("SpatialPrior", "_space_prior", SPATIAL_PRIORS, advanced=True,
                              doc="fast preset: its kept steps' fields between the input's "
                                  "points. ")
    SetModelFile = _model_path("ModelFile", "_model_file", retrain=True,
                               doc="Model to use if it exists, else where training saves it.")

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
                self._obtain_model(_engine())
            except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
                _error(self, str(exc))
        self.Modified()

    SetDevice = _choice("Device", "_device", {d: "" for d in DEVICES}, advanced=True,
                        doc="Where to train (auto: CUDA when available).")
    SetSeed = _number("Seed", "_seed", 0, retrain=True, advanced=True)
    GetTimestepValues = _timestep_values()

    # --- pipeline ----------------------------------------------------------------------
    @_reports_errors
    def RequestInformation(self, request, inInfoVec, outInfoVec):
        inInfo = inInfoVec[0].GetInformationObject(0)
        api = _engine()            # first: without the engine, its message says what to do
        from stsr_core.grid import Grid
        _check_ranges(self, PROPERTY_RANGES)
        ext = inInfo.Get(SDDP.WHOLE_EXTENT())
        dims = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
        spacing = inInfo.Get(vtkDataObject.SPACING()) or (1.0, 1.0, 1.0)
        origin = list(inInfo.Get(vtkDataObject.ORIGIN()) or (0.0, 0.0, 0.0))
        origin = [o + e * s for o, e, s in zip(origin, ext[0::2], spacing)]
        times = list(inInfo.Get(SDDP.TIME_STEPS()) or []) if inInfo.Has(
            SDDP.TIME_STEPS()) else []
        self._input_times = times
        self._input_grid = Grid(dims, origin, spacing)
        g, out_times = _output_layout(api, self._input_grid, times or [0.0], self._scale,
                                      self._dims, self._time_scale)
        self._out_grid = g
        self._out_times = out_times if times else []
        _set_output_information(outInfoVec.GetInformationObject(0), g, self._out_times)
        return 1

    def RequestUpdateExtent(self, request, inInfoVec, outInfoVec):
        # the whole (coarse) input on every rank: the model is of all of it, and a piece's
        # warps may look anywhere; piece 0 of 1, or an MPI rank's reader sends its piece
        inInfo = inInfoVec[0].GetInformationObject(0)
        inInfo.Set(SDDP.UPDATE_EXTENT(), inInfo.Get(SDDP.WHOLE_EXTENT()), 6)
        inInfo.Set(SDDP.UPDATE_PIECE_NUMBER(), 0)
        inInfo.Set(SDDP.UPDATE_NUMBER_OF_PIECES(), 1)
        inInfo.Set(SDDP.UPDATE_NUMBER_OF_GHOST_LEVELS(), 0)
        if self._model is None and self._input_times:     # gathering: the next input step
            i = min(len(self._gather), len(self._input_times) - 1)
            inInfo.Set(SDDP.UPDATE_TIME_STEP(), self._input_times[i])
        return 1

    @_reports_errors
    def RequestData(self, request, inInfoVec, outInfoVec):
        api = _engine()
        _check_ranges(self, PROPERTY_RANGES)  # (the pipeline asks for data after a failed
        if self._model is None:               # RequestInformation too: no output then)
            if not self._gathered(request, inInfoVec):
                return 1
            self._obtain_model(api)
        return _output_at_requested_time(self, api, self._model, outInfoVec)

    def _gathered(self, request, inInfoVec):
        """Keep this update's input step; True once all are in (``self._series``), else
        ask the pipeline for the next one."""
        from stsr_core.io.vti import arrays_from_image, image_grid
        from stsr_core.series import Frame, series_from_frames
        inp = vtkImageData.GetData(inInfoVec[0], 0)
        if inp is None:
            raise RuntimeError("the input is not image data: resample it to an image "
                               "first (Filters > Resample To Image)")
        times = self._input_times
        t = times[len(self._gather)] if times else 0.0
        where = "at time %g" % t
        dims = tuple(inp.GetDimensions())
        if self._input_grid is not None and dims != tuple(self._input_grid.dims):
            raise RuntimeError("the input %s is a piece of %s points, not the whole %s: "
                               "its source cannot give the whole extent to this process"
                               % (where, "x".join(map(str, dims)),
                                  self._input_grid.text()))
        pd = inp.GetPointData()        # every array it holds, to list in an error
        stored = tuple(pd.GetArrayName(i) for i in range(pd.GetNumberOfArrays())
                       if pd.GetArrayName(i))
        self._gather.append(Frame(t, arrays_from_image(inp, " " + where, self._arrays),
                                  image_grid(inp), where, stored if self._arrays else ()))
        if len(self._gather) < len(times):
            request.Set(SDDP.CONTINUE_EXECUTING(), 1)
            return False
        request.Remove(SDDP.CONTINUE_EXECUTING())
        frames, self._gather = self._gather, []
        self._series = series_from_frames(frames, self._arrays, "the filter's input")
        self._series.check_finite()
        return True

    def _obtain_model(self, api):
        """The model: loaded from ModelFile if it exists, else trained. Under MPI (pvbatch
        or pvserver on several ranks) rank 0 alone loads or trains it (and writes
        ModelFile) and sends it to the others as bytes (no shared file system needed);
        every rank has gathered the whole input, each then computes its piece."""
        controller = _mpi_controller()
        if controller is None:
            self._obtain_model_here(api)
            return
        data, error = b"", ""
        if controller.GetLocalProcessId() == 0:
            try:
                self._obtain_model_here(api)
                data = api.model_bytes(self._model)
            except Exception as exc:  # noqa: BLE001 - the others must hear of it too
                error = str(exc) or type(exc).__name__
        data, error = _broadcast_model(controller, data, error)
        if error:
            raise RuntimeError(error if controller.GetLocalProcessId() == 0 else
                               "rank 0 could not make the model: %s" % error)
        if controller.GetLocalProcessId() != 0:
            self._model = api.load_model(self._model_file or "the model from rank 0",
                                         device=self._device, data=data)
            self.last_training = dict(self._model.info.history)
            self._force_train = False

    def _obtain_model_here(self, api):
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
        overrides = {}
        for prop, value, default, key in (
                ("TimeInterpolation", self._time_interp, TIME_INTERPOLATION_DEFAULT,
                 "base_time"),
                ("SpatialPrior", self._space_prior, SPATIAL_PRIOR_DEFAULT, "space_prior")):
            if value == default:
                continue
            if not hasattr(api.get_preset(self._preset)[0], key):
                raise RuntimeError("%s '%s' applies to the fast preset only; set it to %s "
                                   "for preset '%s'" % (prop, value, default, self._preset))
            overrides[key] = value
        tm = api.fit(self._series, self._preset, steps=steps, max_minutes=minutes,
                     device=self._device, seed=self._seed, callback=progress,
                     checkpoint_path=path, model_overrides=overrides or None)
        self.last_training = dict(tm.info.history)
        self._model = tm
        if tm.info.history.get("stopped") == "cancelled":
            # the abort is honoured (the model is what the fit made so far, saved); VTK 9.2
            # and 9.3 (ParaView 5.11, 5.13) keep the flag set, which would stop every later
            # update of this filter at once
            self.SetAbortExecute(0)
        self._force_train = False


@smproxy.source(name="STSRINRModel", label="STSR-INR Model", support_reload=False)
@_panel(("Model", ["FileName"]), _OUTPUT)
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
        self._error = True
        self._model = None
        self._model_key = None
        self._out_grid = None
        self._out_times = []
        self._cache = _ImageCache()

    SetFileName = _model_path("FileName", "_file", retrain=False, doc="The .stsr model.")
    SetSpatialScale, SetOutputDimensions, SetTemporalScale, SetErrorEstimate = \
        _output_properties(1.0, 0.25)
    GetTimestepValues = _timestep_values()

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

    @_reports_errors
    def RequestInformation(self, request, inInfoVec, outInfoVec):
        api = _engine()
        _check_ranges(self, OUTPUT_PROPERTIES)
        info = self._load(api).info
        g, times = _output_layout(api, info.grid, info.times, self._scale, self._dims,
                                  self._time_scale)
        self._out_grid, self._out_times = g, times
        _set_output_information(outInfoVec.GetInformationObject(0), g, times)
        return 1

    @_reports_errors
    def RequestData(self, request, inInfoVec, outInfoVec):
        api = _engine()
        _check_ranges(self, OUTPUT_PROPERTIES)
        return _output_at_requested_time(self, api, self._load(api), outInfoVec)
