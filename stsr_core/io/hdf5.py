"""HDF5 series (h5py): one dataset per variable, ``[T, Z, Y, X]`` (x fastest) or
``[T, Z, Y, X, C]`` for a C-component array; root attributes ``times`` (T floats),
``origin`` and ``spacing`` (x, y, z) and ``variables`` (dataset order), all optional
(defaults 0..T-1, 0, 1, alphabetical)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import StsrError
from ..series import VolumeSeries, arrays_holding, split_components


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover
        raise StsrError("h5py is needed for HDF5 files (Debian: apt install python3-h5py)") \
            from None
    return h5py


def read_h5(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    h5py = _h5py()
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise StsrError(f"'{path}' is not a readable HDF5 file ({exc})") from None
    with fh:
        names = [k for k, v in fh.items() if isinstance(v, h5py.Dataset)]
        order = [str(v.decode() if isinstance(v, bytes) else v)
                 for v in fh.attrs.get("variables", [])]
        names.sort(key=lambda n: order.index(n) if n in order else len(order))
        if arrays:                     # read only the datasets that hold these names
            keep = arrays_holding(arrays, names, f" in '{path}'")
            names = [n for n in names if n in keep]
        if not names:
            raise StsrError(f"'{path}' has no datasets to read (expected one per variable, "
                            "shape [T, Z, Y, X])")
        variables: Dict[str, np.ndarray] = {}
        components: Dict[str, List[str]] = {}
        for n in names:
            ds = fh[n]
            if ds.ndim not in (4, 5):
                raise StsrError(f"dataset '{n}' in '{path}' has shape {ds.shape}; expected "
                                "[T, Z, Y, X] or [T, Z, Y, X, C]")
            try:
                a = np.asarray(ds[...], dtype=np.float32)
            except (OSError, ValueError) as exc:
                raise StsrError(f"dataset '{n}' in '{path}' is unreadable ({exc})") from None
            parts = split_components(n, a)
            if a.ndim == 5:
                components[n] = list(parts)
            variables.update(parts)
        t = next(iter(variables.values())).shape[0]
        times = np.asarray(fh.attrs.get("times", np.arange(t)), dtype=np.float64).reshape(-1)
        origin = tuple(np.asarray(fh.attrs.get("origin", (0, 0, 0)), dtype=float).reshape(-1))
        spacing = tuple(np.asarray(fh.attrs.get("spacing", (1, 1, 1)), dtype=float).reshape(-1))
    if len(origin) != 3 or len(spacing) != 3:
        raise StsrError(f"'{path}': attributes origin and spacing need 3 values each")
    series = VolumeSeries(times=times, variables=variables, origin=origin,  # type: ignore
                          spacing=spacing, components=components, source=path)  # type: ignore
    return series


def write_h5(series: VolumeSeries, path: str) -> List[str]:
    h5py = _h5py()
    tmp = path + ".tmp"
    owner = {p: o for o, parts in series.components.items() for p in parts}
    with h5py.File(tmp, "w") as fh:
        fh.attrs["times"] = np.asarray(series.times, dtype=np.float64)
        fh.attrs["origin"] = np.asarray(series.origin, dtype=np.float64)
        fh.attrs["spacing"] = np.asarray(series.spacing, dtype=np.float64)
        fh.attrs["variables"] = [owner.get(n, n) for n in dict.fromkeys(
            owner.get(n, n) for n in series.variables)]
        for n in series.variables:
            o = owner.get(n)
            if o is None:
                fh.create_dataset(n, data=series.variables[n], compression="gzip")
            elif o not in fh:
                a = np.stack([series.variables[p] for p in series.components[o]], axis=-1)
                fh.create_dataset(o, data=a, compression="gzip")
    os.replace(tmp, path)
    return [path]
