"""The in-memory data model: a multivariate time series of volumes on one regular grid.

Every reader returns a :class:`VolumeSeries` and every writer takes one, so the engine
never sees file formats. Arrays are stored as VTK stores them: ``[T, Z, Y, X]`` with x
fastest in memory, float32.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import StsrError
from .grid import GRID_RTOL, Grid

# Multi-component arrays (e.g. velocity) are split into scalar variables named
# "<name>_<component>"; ``components`` maps the original name to those variables in order so
# that writers can put them back together.
ComponentMap = Dict[str, List[str]]


@dataclass
class VolumeSeries:
    """T volumes of V named scalar variables on one image grid.

    Attributes:
        times: strictly increasing physical times, length T.
        variables: name -> float32 array ``[T, Z, Y, X]`` (x fastest).
        origin: (x, y, z) of the first point.
        spacing: (dx, dy, dz) between points, all > 0.
        components: original multi-component array name -> its scalar variables.
        source: where it was read from (for error messages), or "".
        metadata: what a reader keeps of its file for writing back (JSON-like, by format:
            ``{"netcdf": {...}}`` holds attributes and dimension names); the engine ignores
            it, models keep it, writers of that format use it.
    """

    times: np.ndarray
    variables: Dict[str, np.ndarray]
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    components: ComponentMap = field(default_factory=dict)
    source: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.origin = tuple(float(v) for v in self.origin)  # type: ignore[assignment]
        self.spacing = tuple(float(v) for v in self.spacing)  # type: ignore[assignment]
        self.variables = {
            k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.variables.items()
        }
        self.validate()

    # --- shape -----------------------------------------------------------------------
    @property
    def names(self) -> List[str]:
        return list(self.variables)

    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    @property
    def dims(self) -> Tuple[int, int, int]:
        """Point counts (nx, ny, nz), in VTK order."""
        shape = next(iter(self.variables.values())).shape
        return (int(shape[3]), int(shape[2]), int(shape[1]))

    @property
    def grid(self) -> Grid:
        """The grid of every variable at every step (dims, origin, spacing)."""
        return Grid(self.dims, self.origin, self.spacing)

    @property
    def bounds(self) -> Tuple[float, float, float, float, float, float]:
        """(xmin, xmax, ymin, ymax, zmin, zmax) of the grid's points."""
        return self.grid.bounds

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.variables.values()))

    def where(self) -> str:
        return f" in {self.source}" if self.source else ""

    # --- checks ----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`StsrError` naming what is wrong; the engine relies on these."""
        if not self.variables:
            raise StsrError(f"no point-data arrays to learn{self.where()}")
        if self.n_times < 1:
            raise StsrError(f"no timesteps{self.where()}")
        if not np.all(np.isfinite(self.times)):
            raise StsrError(f"time values must be finite{self.where()}: {self.times.tolist()}")
        if self.n_times > 1 and np.any(np.diff(self.times) <= 0):
            raise StsrError(
                f"time values must be strictly increasing{self.where()}: {self.times.tolist()}"
            )
        if any(s <= 0 or not np.isfinite(s) for s in self.spacing):
            raise StsrError(f"grid spacing must be positive{self.where()}: {self.spacing}")
        shape0: Optional[Tuple[int, ...]] = None
        for name, arr in self.variables.items():
            if arr.ndim != 4:
                raise StsrError(
                    f"array '{name}'{self.where()} has shape {arr.shape}; expected [T, Z, Y, X]"
                )
            if arr.shape[0] != self.n_times:
                raise StsrError(
                    f"array '{name}'{self.where()} has {arr.shape[0]} timesteps but the series "
                    f"has {self.n_times} times"
                )
            if shape0 is None:
                shape0 = arr.shape
            elif arr.shape != shape0:
                raise StsrError(
                    f"array '{name}'{self.where()} has shape {arr.shape}, other arrays {shape0}: "
                    "all variables must share one grid"
                )
        if shape0 is not None and min(shape0[1:]) < 1:
            raise StsrError(f"the arrays{self.where()} have shape {shape0}: a grid needs at "
                            "least one point per axis")
        for orig, parts in self.components.items():
            missing = [p for p in parts if p not in self.variables]
            if missing:
                raise StsrError(f"components {missing} of array '{orig}' are missing{self.where()}")

    def check_finite(self) -> None:
        """Raise naming the first array, timestep and point that holds NaN or Inf."""
        for name, arr in self.variables.items():
            bad = ~np.isfinite(arr)
            if bad.any():
                t, k, j, i = (int(v) for v in np.argwhere(bad)[0])
                count = int(bad.sum())
                raise StsrError(
                    f"array '{name}'{self.where()} holds {count} NaN/Inf value(s); first at "
                    f"timestep {t} (time {self.times[t]:g}), point (i={i}, j={j}, k={k})"
                )

    # --- derived series ----------------------------------------------------------------
    def select(self, names: Sequence[str]) -> "VolumeSeries":
        """Keep only ``names``; a multi-component name selects all its components."""
        keep: List[str] = []
        for n in names:
            if n in self.components:
                keep += self.components[n]
            elif n in self.variables:
                keep.append(n)
            else:
                avail = sorted(set(self.variables) | set(self.components))
                raise StsrError(f"no array named '{n}'{self.where()}; available: {', '.join(avail)}")
        keep = list(dict.fromkeys(keep))
        comps = {k: v for k, v in self.components.items() if all(p in keep for p in v)}
        return VolumeSeries(
            times=self.times.copy(),
            variables={k: self.variables[k] for k in keep},
            origin=self.origin,
            spacing=self.spacing,
            components=comps,
            source=self.source,
            metadata=self.metadata,
        )

    def subsample(self, space: int = 1, time: int = 1) -> "VolumeSeries":
        """Every ``space``-th point per axis and every ``time``-th step (the coarse input of
        the paper's protocol); origin is kept, spacing grows by ``space``."""
        if space < 1 or time < 1:
            raise StsrError("subsample factors must be >= 1")
        sl = (slice(None, None, time), slice(None, None, space), slice(None, None, space),
              slice(None, None, space))
        return VolumeSeries(
            times=self.times[::time].copy(),
            variables={k: np.ascontiguousarray(v[sl]) for k, v in self.variables.items()},
            origin=self.origin,
            spacing=tuple(s * space for s in self.spacing),  # type: ignore[arg-type]
            components={k: list(v) for k, v in self.components.items()},
            source=self.source,
            metadata=self.metadata,
        )

    def same_grid(self, other: "VolumeSeries", rtol: float = GRID_RTOL) -> List[str]:
        """Differences in grid and times between two series, as phrases (empty = same)."""
        diffs = self.grid.differences(other.grid, rtol)
        if self.n_times != other.n_times:
            diffs.append(f"{self.n_times} vs {other.n_times} timesteps")
        elif not np.allclose(self.times, other.times, rtol=rtol,
                             atol=rtol * max(1.0, float(np.abs(self.times).max()))):
            diffs.append(f"times {self.times.tolist()} vs {other.times.tolist()}")
        return diffs


@dataclass
class Frame:
    """One timestep as a reader or the ParaView plugin sees it, before it joins a series.

    Attributes:
        time: its time value (None: the file holds none; its reader numbers the steps).
        arrays: point arrays by name, ``[Z, Y, X]`` or ``[Z, Y, X, C]``.
        grid: the grid its arrays lie on.
        where: where it came from, for errors ("in 'x_1.vti'", "at time 2.5").
        stored: every array the step holds, read or not (empty: those in ``arrays``).
    """

    time: Optional[float]
    arrays: Dict[str, np.ndarray]
    grid: Grid
    where: str
    stored: Tuple[str, ...] = ()


def arrays_holding(names: Sequence[str], available: Sequence[str], where: str = "",
                   strict: bool = True) -> List[str]:
    """The stored arrays that hold ``names``, in their order: a name itself, or for a
    component name such as ``v_0`` the array ``v`` it is split from. Readers use it to read
    only what was asked for. An unknown name is an error listing the available ones, or
    (not ``strict``) left for :func:`series_from_frames` to report."""
    keep: List[str] = []
    for n in names:
        m = re.fullmatch(r"(.+)_\d+", n)
        owner = n if n in available else m.group(1) if m and m.group(1) in available else None
        if owner is None and not strict:
            continue
        if owner is None:
            raise StsrError(f"no array named '{n}'{where}; available: {', '.join(available)}")
        keep.append(owner)
    return list(dict.fromkeys(keep))


def series_from_frames(frames: Sequence[Frame], arrays: Optional[Sequence[str]] = None,
                       source: str = "") -> VolumeSeries:
    """Stack timesteps into a series (multi-component arrays split into scalar variables).
    ``arrays``: keep those (default: all of the first step's, which every step must then
    have, and no more). Every step must have the first step's grid and the kept arrays."""
    if not frames:
        raise StsrError(f"no timesteps{' in ' + source if source else ''}")
    first = frames[0]
    names = arrays_holding(arrays, list(first.stored or first.arrays), f" {first.where}") \
        if arrays else list(first.arrays)
    for f in frames[1:]:
        diffs = f.grid.differences(first.grid)
        if diffs:
            raise StsrError(f"timesteps have different grids: {f.where} vs {first.where}: "
                            + "; ".join(diffs))
        missing = [n for n in names if n not in f.arrays]
        if missing:
            raise StsrError(f"array '{missing[0]}' is missing {f.where} (present {first.where})")
        extra = [n for n in f.arrays if n not in names] if not arrays else []
        if extra:
            raise StsrError(f"array '{extra[0]}' is missing {first.where} (present {f.where})")
    variables: Dict[str, np.ndarray] = {}
    components: ComponentMap = {}
    for n in names:
        stacked = np.stack([f.arrays[n] for f in frames])
        parts = split_components(n, stacked)
        if stacked.ndim == 5:
            components[n] = list(parts)
        variables.update(parts)
    return VolumeSeries(times=[f.time for f in frames], variables=variables,
                        origin=first.grid.origin, spacing=first.grid.spacing,
                        components=components, source=source)


def split_components(name: str, array: np.ndarray) -> Dict[str, np.ndarray]:
    """Split ``[T, Z, Y, X, C]`` into C scalar variables ``name_0 .. name_{C-1}``."""
    if array.ndim == 4:
        return {name: array}
    return {f"{name}_{c}": array[..., c] for c in range(array.shape[-1])}


def merge_components(arrays: Dict[str, np.ndarray], order: Sequence[str],
                     components: ComponentMap) -> Dict[str, np.ndarray]:
    """Scalar arrays as writers emit them: each multi-component array put back together
    (parts stacked on a last axis, ``[..., C]``), scalars unchanged, in ``order``. One rule for
    whole series and single steps, so every writer names and orders arrays the same way."""
    out: Dict[str, np.ndarray] = {}
    owner = {p: orig for orig, parts in components.items() for p in parts}
    for name in order:
        orig = owner.get(name)
        if orig is None:
            out[name] = arrays[name]
        elif orig not in out:
            out[orig] = np.stack([arrays[p] for p in components[orig]], axis=-1)
    return out


def merged_arrays(series: VolumeSeries, t: int) -> Dict[str, np.ndarray]:
    """Arrays of timestep ``t`` as writers emit them: components put back together
    (``[Z, Y, X, C]``), scalars ``[Z, Y, X]``, in the series' variable order."""
    return merge_components({n: v[t] for n, v in series.variables.items()}, series.names,
                            series.components)
