"""The series a fit learns, without holding it: its names, grid and times, its statistics
from one pass over the steps, and its steps read one at a time -- from a file (a step
reader, io/stream.py) or from a :class:`VolumeSeries` the caller holds -- and normalised as
they are read (model/steps.py's :class:`Steps`). And the fit's memory plan: what the fit
will hold, checked against what this process may use before any work.

The fast default holds the model's coefficients (one per data point: the model is the size
of the data) plus what one step needs; presets that train a network on samples of the whole
series hold it normalised as well, so they say before any work when it cannot fit.
"""
from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import StsrError
from .grid import Grid
from .io import open_series_reader
from .io.base import SeriesReader
from .io.stream import human_bytes
from .io.vti import NON_IMAGE, RESAMPLE_HINT
from .model.spline_base import WARP_FIELD_VALUES
from .model.steps import Steps
from .normalize import VariableStats, compute_stats
from .series import VolumeSeries, arrays_holding

# what a fit's process holds besides its data and model (Python, torch and its libraries)
PROCESS_BYTES = 400 * 1000 ** 2


@dataclass
class FitSource:
    """A series to fit: what it is, and ``read(k)``, step ``k``'s raw arrays
    ({variable: float32 [Z, Y, X]}, at least :attr:`variables`)."""

    variables: List[str]
    components: Dict[str, List[str]]
    grid: Grid
    times: np.ndarray
    read: Callable[[int], Dict[str, np.ndarray]]
    source: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)
    series: Optional[VolumeSeries] = None       # the caller's arrays, when in memory

    @property
    def n_times(self) -> int:
        return int(len(self.times))

    @property
    def dims(self) -> Tuple[int, int, int]:
        return tuple(int(n) for n in self.grid.dims)  # type: ignore[return-value]

    @property
    def step_bytes(self) -> int:
        """Bytes of one step of every variable, float32."""
        nx, ny, nz = self.dims
        return 4 * len(self.variables) * nx * ny * nz

    def where(self) -> str:
        return f" in {self.source}" if self.source else ""


def source_of(series: VolumeSeries) -> FitSource:
    """A series held in memory (its arrays are read where they are, never copied whole)."""
    series.validate()
    return FitSource(list(series.variables), {k: list(v) for k, v in series.components.items()},
                     series.grid, series.times,
                     lambda k: {n: a[k] for n, a in series.variables.items()},
                     series.source, dict(series.metadata), series)


def open_source(path: str, arrays: Optional[Sequence[str]] = None) -> FitSource:
    """The series in file ``path`` (any format the step readers read), read step by step;
    ``arrays`` keeps those variables, in that order (a multi-component name keeps all its
    components, a component name that component), as reading the whole series would."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in NON_IMAGE and os.path.isfile(path):
        raise StsrError(f"'{path}' holds {NON_IMAGE[ext]}, not image data: {RESAMPLE_HINT}")
    reader = open_series_reader(path)
    names, comps = list(reader.variables), {k: list(v) for k, v in reader.components.items()}
    if arrays:
        stored = list(dict.fromkeys([next((o for o, p in comps.items() if n in p), n)
                                     for n in names]))
        reader = open_series_reader(path, arrays_holding(arrays, stored, f" in '{path}'"))
        keep: List[str] = []
        for n in arrays:
            keep += reader.components.get(n, [n] if n in reader.variables else [])
        names = list(dict.fromkeys(keep))
        comps = {k: list(v) for k, v in reader.components.items() if all(p in names for p in v)}
    return FitSource(names, comps, reader.grid, reader.times, reader.read_step, path,
                     dict(getattr(reader, "metadata", {}) or {}))


def fit_source(data: Union[VolumeSeries, SeriesReader, FitSource]) -> FitSource:
    """What :func:`stsr_core.fitting.fit` takes, as a FitSource."""
    if isinstance(data, FitSource):
        return data
    if isinstance(data, VolumeSeries):
        return source_of(data)
    return FitSource(list(data.variables), {k: list(v) for k, v in data.components.items()},
                     data.grid, data.times, data.read_step, data.path,
                     dict(getattr(data, "metadata", {}) or {}))


def scan_stats(src: FitSource) -> Dict[str, VariableStats]:
    """Per variable the min and max over every step (one pass over the steps of a file),
    checking that every value is finite: a NaN/Inf is reported as a whole series' check
    reports it (the first array that holds any, its count, the first step and point)."""
    if src.series is not None:
        src.series.check_finite()
        return compute_stats(src.series)
    lo = {n: np.inf for n in src.variables}
    hi = {n: -np.inf for n in src.variables}
    bad: Dict[str, List[Any]] = {}                    # name -> [count, first (t, k, j, i)]
    for t in range(src.n_times):
        arrays = src.read(t)
        for n in src.variables:
            a = arrays[n]
            finite = np.isfinite(a)
            if not finite.all():
                where = bad.setdefault(n, [0, None])
                where[0] += int(a.size - np.count_nonzero(finite))
                if where[1] is None:
                    where[1] = (t,) + tuple(int(v) for v in np.argwhere(~finite)[0])
                continue
            lo[n] = min(lo[n], float(a.min()))
            hi[n] = max(hi[n], float(a.max()))
        del arrays
    for n in src.variables:
        if n in bad:
            count, (t, k, j, i) = bad[n]
            raise StsrError(f"array '{n}'{src.where()} holds {count} NaN/Inf value(s); first "
                            f"at timestep {t} (time {src.times[t]:g}), point (i={i}, j={j}, "
                            f"k={k})")
    return {n: VariableStats(lo[n], hi[n]) for n in src.variables}


class NormalisedSteps(Steps):
    """A FitSource's steps normalised by ``stats`` as they are read: [V, Z, Y, X] float32,
    on ``device``; one step (and the reader's arrays of it) at a time."""

    def __init__(self, src: FitSource, stats: Dict[str, VariableStats],
                 device: torch.device) -> None:
        self.src, self.stats, self.device = src, stats, device
        self.n_vars, self.n_steps = len(src.variables), src.n_times
        nx, ny, nz = src.dims
        self.shape = (nz, ny, nx)

    def step(self, k: int) -> torch.Tensor:
        arrays = self.src.read(k)
        out = np.empty((self.n_vars,) + self.shape, dtype=np.float32)      # [V, Z, Y, X]
        for v, n in enumerate(self.src.variables):
            s = self.stats[n]                  # VariableStats.normalise, in place
            np.subtract(arrays[n], s.lo, out=out[v])
            out[v] /= s.half_range
            out[v] -= 1.0
        del arrays
        return torch.from_numpy(out).to(self.device)


# --- the memory plan --------------------------------------------------------------------------
@dataclass
class MemoryPlan:
    """What a fit will hold at its peak, in bytes, by part (for the message)."""

    parts: Dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def plan_fit(src: FitSource, trains_on_samples: bool, spline_base: bool,
             trainable_base: bool, base_time: str = "select",
             slots_in_file: bool = False) -> MemoryPlan:
    """The fit's peak memory: what reading and fitting one step needs (its raw and
    normalised arrays, the prefilter's float64 temporaries) or the held-out choice on the
    half series (the half series, and what its evaluation keeps), and the model's
    coefficients (one per data point and a padding layer: the fast base), held throughout,
    or with ``slots_in_file`` kept in a file while the fit works and read back once to be
    saved; for presets that train on samples also the whole normalised series (and Adam's
    two moments, the slopes and the coefficients of a trainable base)."""
    nx, ny, nz = src.dims
    v, t = len(src.variables), src.n_times
    step = src.step_bytes
    parts = {"process": PROCESS_BYTES}
    if spline_base:
        coef = 4 * t * v * (nx + 2) * (ny + 2) * (nz + 2) * (4 if trainable_base else 1)
        # a step read, normalised and prefiltered (float64, a variable at a time), or the
        # held-out steps scored on the half series
        work = max(3 * step, held_out_bytes(src.dims, v, t))
        if base_time in ("auto", "linear", "cubic"):
            work += 4 * step                      # the cross-validation's float64 sums
        if slots_in_file:
            parts["model coefficients, or fitting a step"] = max(coef, work)
        else:
            parts["model coefficients"] = coef
            parts["fitting a step"] = work
    if trains_on_samples:
        parts["the series"] = t * step
    return MemoryPlan(parts)


def held_out_bytes(dims_xyz: Sequence[int], n_vars: int, n_steps: int) -> int:
    """What scoring the held-out steps of the half series holds (time_select.py): the half
    series, its chains' coefficients and their ratios for the error estimate (each about an
    eighth of the data), and the evaluation's fields on the warps' grid, finer than the half
    series (SplineBase.plan_grid with factors 4, 2): the interval's two slots, their slopes
    along the path, and the two ends folded for the step (six fields, and one for what the
    allocator holds besides: measured at 65^3 x 33 steps, 129^3 and 257^3 x 9)."""
    half = [(n + 1) // 2 for n in dims_xyz]
    for factor in (4, 2):
        fine = math.prod(factor * (h - 1) + 1 if h > 1 else 1 for h in half)
        if factor == 2 or n_vars * fine <= WARP_FIELD_VALUES:
            break
    eighth = 4 * n_vars * n_steps * math.prod(half)
    return 3 * eighth + 7 * 4 * n_vars * fine


def memory_available() -> Tuple[int, str]:
    """What this process may still allocate, and what sets it: the memory the kernel says is
    available, or the address-space limit (``ulimit -v``) less what the process has mapped,
    whichever is smaller."""
    avail, what, mapped = None, "the available memory", 0
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(ln.split()[1]) * 1024 for ln in fh
                         if ln.startswith("MemAvailable:"))
        with open("/proc/self/status") as fh:
            mapped = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and (avail is None or soft - mapped < avail):
        avail, what = max(0, soft - mapped), "the address-space limit (ulimit -v)"
    return (avail if avail is not None else 1 << 62), what


def check_memory(plan: MemoryPlan, src: FitSource, preset: str, trains_on_samples: bool
                 ) -> None:
    """Refuse, in one line before any work, a fit whose plan exceeds what is available,
    saying what it needs and what lowers it."""
    have, what = memory_available()
    need = plan.total - plan.parts.get("process", 0)     # the process itself is there
    if need <= have:
        return
    parts = ", ".join(f"{k} {human_bytes(b)}" for k, b in plan.parts.items()
                      if b and k != "process")
    lower = ("fewer variables (--arrays) or steps, or a machine with more memory"
             if not trains_on_samples else
             f"preset '{preset}' trains on samples of the whole series held in memory; the "
             "default preset reads it from disk a step at a time (it holds the model, about "
             "the size of the data), or fit fewer variables (--arrays)")
    raise StsrError(f"the fit of {src.source or 'the series'} needs about "
                    f"{human_bytes(need)} of memory ({parts}) and {what} leaves "
                    f"{human_bytes(have)}: {lower}")
