"""netCDF series (classic or netCDF-4) through the ``netCDF4`` module (Debian's
python3-netcdf4: it links the same HDF5 1.10 as Debian's h5py and ParaView, so it also
works inside pvpython; the PyPI wheel bundles another HDF5).

Reading: the variables on one regular grid, ``(time, z, y, x)`` or ``(time, y, x)`` (a
single z layer), in any dimension order the coordinates make clear. Each dimension's role
comes from its coordinate variable (``axis``, ``standard_name``, ``units`` such as
"days since ...", ``positive``), else from its name (time/t, z/lev/depth..., y/lat...,
x/lon...), else from its place (the last unknown dimension is x, then y, z, time). A last
dimension named ``*component`` holds the components of a vector, and so do scalar
variables that name it in their ``stsr_vector`` attribute (as stsr writes them). Coordinates must be
regularly spaced (a descending one, such as latitude from north to south, is flipped and
written back descending); times come from the ``time`` coordinate, in its units (kept,
with the calendar, for writing back). Missing values (``_FillValue``/``missing_value``)
are refused like NaN, naming the first one.

Writing: netCDF-4, time along an unlimited dimension filled one step at a time, each
variable float32 chunked by z-slabs; the source's global, variable and coordinate
attributes and dimension names come back from the series' ``metadata["netcdf"]`` (attributes
that describe the stored values rather than the field, such as ``_FillValue``,
``scale_factor`` or ``valid_range``, are dropped), with a line added to ``history``.
Written so that ParaView's NetCDF CF reader ("NetCDF Reader") opens every array with its
default settings, as image data with point arrays: a vector is one variable per component
(``v_0``, ``v_1``, ... with ``stsr_vector = "v"``; the CF reader refuses a fourth spatial
dimension), and the spatial coordinates carry no ``axis`` attribute (with ``axis = X/Y``
the CF reader takes them for longitude and latitude and makes a spherical grid of cells);
time keeps ``axis = T``, which is how the CF reader finds it.
"""
from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..grid import Grid
from ..series import VolumeSeries, arrays_holding, split_components
from .base import (ChunkRows, SeriesReader, SeriesWriter, chunk_starts, discard_file,
                   fsync_file, remove_quietly, rows_held)
from .hdf5 import slab_chunks

ROLES = ("t", "z", "y", "x")
AXIS_OF_ROLE = {"t": 0, "z": 1, "y": 2, "x": 3}     # in [T, Z, Y, X]
DEFAULT_DIMS = {"t": "time", "z": "z", "y": "y", "x": "x"}
# names and standard names that say which axis a dimension is (CF conventions)
ROLE_NAMES = {
    "t": {"time", "t"},
    "z": {"z", "lev", "level", "levels", "depth", "height", "altitude", "plev", "zc"},
    "y": {"y", "lat", "latitude", "yc", "nlat"},
    "x": {"x", "lon", "longitude", "xc", "nlon"},
}
ROLE_STANDARD_NAMES = {
    "t": {"time"},
    "z": {"depth", "height", "altitude", "air_pressure", "model_level_number",
          "atmosphere_sigma_coordinate", "ocean_sigma_coordinate"},
    "y": {"latitude", "projection_y_coordinate", "grid_latitude"},
    "x": {"longitude", "projection_x_coordinate", "grid_longitude"},
}
# Attributes that describe how values are stored or what range they had, not the field:
# wrong for the upscaled float32 values, so not written back. ``bounds``, ``coordinates``,
# ``grid_mapping`` and ``cell_measures`` name variables that are not written.
DROPPED_ATTRS = {"_FillValue", "missing_value", "scale_factor", "add_offset", "valid_min",
                 "valid_max", "valid_range", "actual_range", "_Unsigned", "bounds",
                 "coordinates", "grid_mapping", "cell_measures", "chunksizes"}
# Coordinates regular to this fraction of their step (plus float rounding of the values).
REGULAR_RTOL = 1e-4
# The attribute that makes scalar variables the components of one vector (its name).
VECTOR_ATTR = "stsr_vector"
# Free bytes under which a failed write is put down to a full disk (the netCDF library
# reports HDF5's "No space left on device" as "HDF error").
FULL_DISK_BYTES = 1024 ** 2
# What ``compression`` means for netCDF-4 variables (as for HDF5: deflate level 1 + shuffle).
NC_FILTERS: Dict[str, Dict[str, Any]] = {
    "none": {"zlib": False},
    "zlib": {"zlib": True, "complevel": 1, "shuffle": True},
}


def _netcdf4():
    try:
        import netCDF4
    except ImportError:
        raise StsrError("the netCDF4 module is needed for netCDF files (Debian: apt install "
                        "python3-netcdf4; 'make setup' installs it)") from None
    return netCDF4


def _open(path: str):
    """The netCDF file for reading (values masked where missing, packed values unpacked),
    or an error naming it."""
    nc = _netcdf4()
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        ds = nc.Dataset(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise StsrError(f"'{path}' is not a readable netCDF file ({exc})") from None
    ds.set_auto_maskandscale(True)
    return ds


def plain(value: Any) -> Any:
    """An attribute value as JSON-like Python (model files keep it as JSON)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _attrs(var) -> Dict[str, Any]:
    return {k: plain(var.getncattr(k)) for k in var.ncattrs()}


def _coordinate(ds, dim: str):
    """The coordinate variable of ``dim`` (a 1-D variable of the same name), or None."""
    v = ds.variables.get(dim)
    return v if v is not None and tuple(v.dimensions) == (dim,) else None


def _role(ds, dim: str) -> Optional[str]:
    """t|z|y|x from the coordinate's attributes, then the name; None when neither says."""
    coord = _coordinate(ds, dim)
    attrs = _attrs(coord) if coord is not None else {}
    axis = str(attrs.get("axis", "")).strip().lower()
    if axis in ROLES:
        return axis
    sn = str(attrs.get("standard_name", "")).strip().lower()
    units = str(attrs.get("units", "")).strip().lower()
    for role in ROLES:
        if sn in ROLE_STANDARD_NAMES[role]:
            return role
    if " since " in units:
        return "t"
    if units in ("degrees_north", "degree_north", "degrees_n", "degree_n"):
        return "y"
    if units in ("degrees_east", "degree_east", "degrees_e", "degree_e"):
        return "x"
    if "positive" in attrs:
        return "z"
    for role in ROLES:
        if dim.lower() in ROLE_NAMES[role]:
            return role
    if ds.dimensions[dim].isunlimited():
        return "t"
    return None


@dataclass
class _VarLayout:
    """Where a data variable's axes go: ``roles`` maps each dimension (but the component
    one) to t|z|y|x; ``component`` is the vector-component dimension, or None."""

    name: str
    dims: Tuple[str, ...]
    roles: Dict[str, str]
    component: Optional[str] = None

    def key(self) -> Tuple[Optional[str], ...]:
        """The grid it lies on: its dimension per role (None where absent)."""
        by_role = {r: d for d, r in self.roles.items()}
        return tuple(by_role.get(r) for r in ROLES)

    def to_tzyx(self, a: np.ndarray) -> np.ndarray:
        """Its values (the dimensions it has, read for ``a``) as ``[T, Z, Y, X(, C)]``, with
        length-1 axes where it has no time or z dimension."""
        dims = [d for d in self.dims if d in self.roles or d == self.component]
        order = sorted(range(len(dims)), key=lambda i: ROLES.index(self.roles[dims[i]])
                       if dims[i] in self.roles else len(ROLES))
        a = np.transpose(a, order)
        present = [self.roles[dims[i]] for i in order if dims[i] in self.roles]
        for role in ROLES:
            if role not in present:
                a = np.expand_dims(a, AXIS_OF_ROLE[role])
        return a


def _var_layout(ds, name: str, roles: Dict[str, Optional[str]]) -> Optional[_VarLayout]:
    """The layout of ``name`` if it is a data variable on a 2-D or 3-D grid, else None."""
    var = ds.variables[name]
    dims = tuple(var.dimensions)
    if var.dtype.kind not in "fiu" or _coordinate(ds, name) is not None or len(dims) < 2:
        return None
    comp = dims[-1] if dims[-1].lower().endswith(("component", "components")) else None
    rest = dims[:-1] if comp else dims
    if len(rest) > 4 or len(set(rest)) != len(rest):
        return None
    found = {d: roles[d] for d in rest if roles[d] is not None}
    if len(set(found.values())) != len(found):
        return None
    free = [r for r in ("x", "y", "z", "t") if r not in found.values()]
    for d in reversed([d for d in rest if d not in found]):   # by place, from the last
        if not free:
            return None
        found[d] = free.pop(0)
    if "x" not in found.values() or "y" not in found.values():
        return None
    return _VarLayout(name, dims, found, comp)


def _axis(ds, dim: str, path: str) -> Tuple[float, float, bool]:
    """(origin, spacing, descending) of a spatial dimension from its coordinate variable;
    (0, 1) without one. Refuses coordinates that are not regularly spaced."""
    coord = _coordinate(ds, dim)
    if coord is None:
        return 0.0, 1.0, False
    try:
        raw = coord[:]
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        raise StsrError(f"coordinate '{dim}' of '{path}' is unreadable ({exc})") from None
    if np.ma.is_masked(raw) or raw.dtype.kind not in "fiu":
        raise StsrError(f"coordinate '{dim}' of '{path}' has missing or non-numeric values")
    v = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise StsrError(f"coordinate '{dim}' of '{path}' has NaN/Inf values")
    if v.size == 1:
        return float(v[0]), 1.0, False
    step = (v[-1] - v[0]) / (v.size - 1)
    d = np.diff(v)
    if step == 0 or np.any(np.sign(d) != np.sign(step)):
        raise StsrError(f"coordinate '{dim}' of '{path}' is not strictly increasing or "
                        f"decreasing ({v[:6].tolist()}...)")
    eps = np.finfo(coord.dtype).eps if coord.dtype.kind == "f" else 0.0
    tol = REGULAR_RTOL * abs(step) + 4 * eps * float(np.abs(v).max())
    bad = np.abs(d - step) > tol
    if bad.any():
        i = int(np.argmax(bad))
        raise StsrError(
            f"coordinate '{dim}' of '{path}' is not regularly spaced: step {d[i]:.6g} from "
            f"point {i} to {i + 1} ({v[i]:.6g} to {v[i + 1]:.6g}), {step:.6g} on average; stsr "
            "needs a regular grid: resample it first (e.g. cdo remapbil, xarray's interp, or "
            "ParaView's Resample To Image)")
    if step < 0:
        return float(v[-1]), float(-step), True
    return float(v[0]), float(step), False


def _times(ds, dim: Optional[str], path: str) -> np.ndarray:
    if dim is None:
        return np.zeros(1)
    coord = _coordinate(ds, dim)
    n = len(ds.dimensions[dim])
    if coord is None:
        return np.arange(n, dtype=np.float64)
    raw = coord[:]
    if np.ma.is_masked(raw) or raw.dtype.kind not in "fiu":
        raise StsrError(f"time coordinate '{dim}' of '{path}' has missing or non-numeric "
                        "values")
    return np.asarray(raw, dtype=np.float64).reshape(-1)


@dataclass
class NetCDFLayout:
    """What a netCDF file holds for stsr: the chosen variables, their grid and times, and
    what is kept for writing back (``metadata``)."""

    path: str
    layouts: List[_VarLayout]
    grid: Grid
    times: np.ndarray
    descending: List[str] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    n_components: Dict[str, int] = field(default_factory=dict)
    # vectors stored one variable per component: vector -> its variables, in order
    vectors: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def variables(self) -> List[str]:
        """Scalar variable names as the series holds them (components split)."""
        out: List[str] = []
        for lay in self.layouts:
            out += self.components.get(lay.name, [lay.name])
        return out

    @property
    def components(self) -> Dict[str, List[str]]:
        split = {lay.name: [f"{lay.name}_{c}" for c in range(self.n_components[lay.name])]
                 for lay in self.layouts if lay.component is not None}
        return {**split, **self.vectors}

    def values(self, ds, lay: _VarLayout, step: Optional[int] = None) -> np.ndarray:
        """One variable as float32 ``[T, Z, Y, X(, C)]`` (all steps, or ``[1, ...]`` for
        ``step``), descending axes flipped, missing values refused."""
        var = ds.variables[lay.name]
        try:
            if step is not None and lay.key()[0] is not None:
                index = tuple(slice(step, step + 1) if lay.roles.get(d) == "t" else slice(None)
                              for d in lay.dims)
                raw = var[index]
            else:
                raw = var[...]
        except (OSError, RuntimeError, ValueError, IndexError) as exc:
            raise StsrError(f"variable '{lay.name}' in '{self.path}' is unreadable ({exc})") \
                from None
        mask = np.ma.getmaskarray(raw) if np.ma.is_masked(raw) else None
        a = lay.to_tzyx(np.ma.getdata(raw))
        if mask is not None:           # point indices as the series has them (flipped)
            m = lay.to_tzyx(mask)
            for role in self.descending:
                m = np.flip(m, AXIS_OF_ROLE[role])
            first = np.argwhere(m)[0]
            t = int(first[0]) + (step or 0)
            k, j, i = (int(v) for v in first[1:4])
            raise StsrError(
                f"variable '{lay.name}' in '{self.path}' has {int(m.sum())} missing value(s) "
                f"(_FillValue/missing_value); first at timestep {t} (time "
                f"{self.times[t]:g}), point (i={i}, j={j}, k={k}): stsr needs a value at "
                "every grid point (fill them, e.g. with cdo fillmiss, or choose other "
                "variables with --arrays)")
        for role in self.descending:
            a = np.flip(a, AXIS_OF_ROLE[role])
        return np.ascontiguousarray(a, dtype=np.float32)


def inspect_netcdf(ds, path: str, arrays: Optional[Sequence[str]] = None) -> NetCDFLayout:
    """Choose the variables (``arrays``, else those on the file's largest time-varying grid),
    check their grid, and collect what is kept for writing back."""
    roles = {d: _role(ds, d) for d in ds.dimensions}
    bounds = {str(v.getncattr("bounds")) for v in ds.variables.values()
              if "bounds" in v.ncattrs()}
    layouts = {n: lay for n in ds.variables if n not in bounds
               for lay in [_var_layout(ds, n, roles)] if lay is not None}
    if not layouts:
        raise StsrError(f"'{path}' has no variable on a 2-D or 3-D grid (dimensions such as "
                        "(time, z, y, x) or (time, lat, lon)); its variables: "
                        + ", ".join(f"{n}{tuple(v.dimensions)}" for n, v in ds.variables.items()))
    vectors: Dict[str, List[str]] = {}
    for n in layouts:                  # scalar variables that are one vector's components
        owner = ds.variables[n].__dict__.get(VECTOR_ATTR)
        if isinstance(owner, str) and owner and owner not in layouts:
            vectors.setdefault(owner, []).append(n)
    if arrays:
        asked = [p for a in arrays for p in vectors.get(a, [a])]
        names = arrays_holding(asked, list(layouts), f" in '{path}'")
    else:    # the grid with time and the most points, its variables in file order
        def size(lay: _VarLayout) -> Tuple[bool, int]:
            return (lay.key()[0] is not None,
                    int(np.prod([len(ds.dimensions[d]) for d in lay.roles])))
        best = max(layouts.values(), key=size)
        names = [n for n, lay in layouts.items() if lay.key() == best.key()]
    chosen = [layouts[n] for n in names]
    key = chosen[0].key()
    for lay in chosen[1:]:
        if lay.key() != key:
            raise StsrError(f"variable '{lay.name}' in '{path}' has dimensions {lay.dims}, "
                            f"'{chosen[0].name}' has {chosen[0].dims}: the variables learned "
                            "together must share one grid (choose them with --arrays)")
    dims = dict(zip(ROLES, key))
    origin, spacing, descending, counts = [], [], [], []
    for role in ("x", "y", "z"):
        d = dims[role]
        if d is None:
            o, s, desc, n = 0.0, 1.0, False, 1
        else:
            (o, s, desc), n = _axis(ds, d, path), len(ds.dimensions[d])
        origin.append(o)
        spacing.append(s)
        counts.append(n)
        if desc:
            descending.append(role)
    n_comp = {lay.name: len(ds.dimensions[lay.component]) for lay in chosen
              if lay.component is not None}
    coords = {role: _attrs(_coordinate(ds, d)) for role, d in dims.items()
              if d is not None and _coordinate(ds, d) is not None}
    meta = {"dims": dims, "coords": coords, "descending": descending,
            "global": {k: plain(ds.getncattr(k)) for k in ds.ncattrs()},
            "variables": {lay.name: _attrs(ds.variables[lay.name]) for lay in chosen},
            "component_dims": {lay.name: lay.component for lay in chosen
                               if lay.component is not None}}
    vectors = {v: parts for v, parts in vectors.items()     # whole vectors among the chosen
               if len(parts) > 1 and all(p in names for p in parts)}
    return NetCDFLayout(path, chosen, Grid(tuple(counts), tuple(origin), tuple(spacing)),
                        _times(ds, dims["t"], path), descending, {"netcdf": meta}, n_comp,
                        vectors)


def read_netcdf(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    """The whole series in ``path`` (see the module's docstring for what is read)."""
    ds = _open(path)
    try:
        layout = inspect_netcdf(ds, path, arrays)
        variables: Dict[str, np.ndarray] = {}
        for lay in layout.layouts:
            variables.update(split_components(lay.name, layout.values(ds, lay)))
    finally:
        ds.close()
    g = layout.grid
    return VolumeSeries(times=layout.times, variables=variables, origin=g.origin,
                        spacing=g.spacing, components=layout.components, source=path,
                        metadata=layout.metadata)


class NetCDFReader(SeriesReader):
    """Step by step over a netCDF series: opening reads the layout; each ``read_step``
    opens the file and reads that step alone."""

    def __init__(self, path: str, arrays: Optional[Sequence[str]] = None) -> None:
        ds = _open(path)
        try:
            self.layout = inspect_netcdf(ds, path, arrays)
        finally:
            ds.close()
        lay = self.layout
        super().__init__(path, lay.grid, lay.times, lay.variables, lay.components)
        self.metadata = lay.metadata

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        i = self._check(i)
        ds = _open(self.path)
        out: Dict[str, np.ndarray] = {}
        try:
            for lay in self.layout.layouts:
                a = self.layout.values(ds, lay, i)                  # [1, Z, Y, X(, C)]
                out.update({k: np.ascontiguousarray(v[0])
                            for k, v in split_components(lay.name, a).items()})
        finally:
            ds.close()
        return out


def _kept(attrs: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in attrs.items()
            if k not in DROPPED_ATTRS and not k.startswith("_") and v is not None}


class NetCDFWriter(SeriesWriter):
    """One netCDF-4 file, written slab by slab in a hidden temporary file beside the target
    that ``close()`` flushes and renames over it (``abort()`` deletes it; an old file at the
    target is never touched before ``close()``). Time is an unlimited dimension: step ``i``
    is index ``i`` along it (written in any order), its time value set when its last row is.

    Each variable is chunked ``[1, z-slab, Y, X]`` as ``.h5``. Uncompressed, a slab is
    written where it goes (fill values off and no chunk cache, so a chunk spread over two
    slabs is not written twice); compressed (the netCDF library's
    deflate), a chunk is written once, whole: the rows of one that spans two slabs wait in a
    buffer of one chunk per variable and open step (:class:`ChunkRows`; none when slabs are
    a multiple of ``row_multiple`` rows). A z axis written descending takes the slabs from
    the file's last chunk down."""

    merge = False          # a vector's components are variables of their own (module doc)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        nc = _netcdf4()
        meta = self.metadata.get("netcdf", {})
        src_dims = meta.get("dims", {})
        self.dims = {r: src_dims.get(r) or DEFAULT_DIMS[r] for r in ROLES}
        # a source without z (2-D) is written back without it while the output is one layer
        self.flat = bool(src_dims) and src_dims.get("z") is None and self.grid.dims[2] == 1
        self.descending = [r for r in meta.get("descending", []) if not (r == "z" and self.flat)]
        nz = self.grid.dims[2]
        # dividing the slabs when compressed (uncompressed slabs go where they belong, and
        # even chunks store no padding)
        self.chunk_rows = slab_chunks((1,) + tuple(self.grid.shape), None if
                                      self.compression == "none" else self.slab_rows)[1]
        if self.compression != "none":
            self.row_multiple = self.chunk_rows
            self.chunks = ChunkRows(chunk_starts(nz, self.chunk_rows, "z" in self.descending),
                                    nz)
        self.tmp = self._temp_beside()
        try:
            self.ds = nc.Dataset(self.tmp, "w", format="NETCDF4")
            self.ds.set_fill_off()                  # every value is written
            self._define(meta)
        except BaseException as exc:
            self._discard()
            if isinstance(exc, (OSError, RuntimeError, ValueError, TypeError)):
                raise StsrError(f"cannot create '{self.tmp}' for '{self.path}': {exc}") from None
            raise

    def _define(self, meta: Dict[str, Any]) -> None:
        ds, g = self.ds, self.grid
        spatial = [r for r in ("z", "y", "x") if not (r == "z" and self.flat)]
        ds.createDimension(self.dims["t"], None)                     # unlimited
        counts = {"x": g.dims[0], "y": g.dims[1], "z": g.dims[2]}
        for r in spatial:
            ds.createDimension(self.dims[r], counts[r])
        coords = meta.get("coords", {})
        time = ds.createVariable(self.dims["t"], "f8", (self.dims["t"],))
        # axis T: how ParaView's CF reader finds time when its units do not say "since"
        time.setncatts({"axis": "T", **_kept(coords.get("t", {"long_name": "time"}))})
        for r in spatial:
            axis = "xyz".index(r)
            n, o, s = counts[r], g.origin[axis], g.spacing[axis]
            values = o + s * np.arange(n, dtype=np.float64)
            v = ds.createVariable(self.dims[r], "f8", (self.dims[r],))
            # no axis: ParaView's CF reader takes axis X/Y for longitude/latitude
            v.setncatts({k: a for k, a in _kept(coords.get(r, {})).items() if k != "axis"})
            v[:] = values[::-1] if r in self.descending else values
        chunks = [1, self.chunk_rows, g.dims[1], g.dims[0]]
        if self.flat:
            del chunks[1]
        dims = tuple([self.dims["t"]] + [self.dims[r] for r in spatial])
        owner = {p: v for v, parts in self.components.items() for p in parts}
        attrs_of = meta.get("variables", {})
        for n in self.variables:
            var = ds.createVariable(n, "f4", dims, chunksizes=chunks,
                                    **NC_FILTERS[self.compression])
            # no chunk cache: uncompressed slabs go straight to their place in the file, and
            # a compressed chunk (written whole) is compressed and written at once
            var.set_var_chunk_cache(size=0)
            attrs = _kept(attrs_of.get(n) or attrs_of.get(owner.get(n, n)) or {})
            attrs.pop(VECTOR_ATTR, None)
            if n in owner:
                attrs[VECTOR_ATTR] = owner[n]
            var.setncatts(attrs)
        attrs = _kept(meta.get("global", {}))
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{stamp}: stsr (STSR-INR) wrote {g.text()} points x {self.n_times} steps"
        old = str(attrs.get("history", "")).strip()
        attrs["history"] = line + ("\n" + old if old else "")
        ds.setncatts(attrs)

    @classmethod
    def buffer_bytes(cls, grid: Grid, variables: Sequence[str], components: Dict[str, List[str]],
                     compression: str, rows: int, steps: int = 1,
                     slab_rows: Optional[int] = None,
                     metadata: Optional[Dict[str, Any]] = None) -> int:
        """A partial chunk per variable and open step (compressed, slabs not a multiple of
        ``row_multiple``), plus the chunk the netCDF library compresses."""
        if compression == "none":
            return 0
        nz, row = grid.shape[0], grid.dims[0] * grid.dims[1] * 4
        c = slab_chunks((1,) + tuple(grid.shape), slab_rows)[1]
        descending = "z" in ((metadata or {}).get("netcdf", {}).get("descending", []))
        held = rows_held(chunk_starts(nz, c, descending) + [nz], rows)
        return (steps * held * len(variables) + 2 * c) * row

    def _write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        nz = self.grid.dims[2]
        try:
            for n in self.variables:
                ready = [(z0, arrays[n])] if self.compression == "none" else \
                    self.chunks.add((i, n), z0, arrays[n])
                for first, a in ready:                               # [rows, Y, X]
                    for r in self.descending:
                        a = np.flip(a, AXIS_OF_ROLE[r] - 1)
                    if self.flat:
                        self.ds.variables[n][i] = a[0]
                    else:
                        at = nz - first - a.shape[0] if "z" in self.descending else first
                        self.ds.variables[n][i, at:at + a.shape[0]] = a
        except (OSError, RuntimeError) as exc:
            raise self._error(f"step {i} of", exc) from None

    def _end_step(self, i: int) -> None:
        try:
            self.ds.variables[self.dims["t"]][i] = self.times[i]
        except (OSError, RuntimeError) as exc:
            raise self._error(f"step {i} of", exc) from None

    def _error(self, what: str, exc: BaseException) -> StsrError:
        """The netCDF library's error in one line; it says only "HDF error" when the disk
        is full, so a disk left without room is named as the cause."""
        folder = os.path.dirname(self.tmp)
        full = shutil.disk_usage(folder).free < FULL_DISK_BYTES
        why = "the disk is full (No space left on device)" if full else \
            " ".join(str(exc).split())
        return StsrError(f"cannot write {what} '{self.path}' (in '{self.tmp}'): {why}; "
                         f"{self.kept()}")

    def _drop_step(self, i: int) -> None:
        if self.compression != "none":
            self.chunks.drop(i)

    def _finish(self) -> List[str]:
        try:
            self.ds.close()
        except (OSError, RuntimeError) as exc:
            error = self._error("the end of", exc)
            remove_quietly(self.tmp)
            raise error from None
        fsync_file(self.tmp)
        os.replace(self.tmp, self.path)
        return [self.path]

    def _discard(self) -> None:
        discard_file(getattr(self, "ds", None), self.tmp)
