"""VTK image data: ``.vti`` files, ``.pvd`` collections of them, and folders of ``.vti``.

Reading goes through the ``vtkmodules`` that ParaView provides (VTK 9.2 on Debian), so what
ParaView writes is read here; writing goes through io/vtifile.py, which writes the layout
VTK's own XML writer writes (ParaView opens it) with a step's blocks compressed on all cores.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import StsrError
from ..files import apply_umask
from ..grid import Grid
from ..series import Frame, VolumeSeries, arrays_holding, merged_arrays, series_from_frames
from .base import (SeriesReader, SeriesWriter, fsync_file, keep_arrays, make_output_folder,
                   remove_quietly, split_merged)
from . import vtifile
from .vtifile import VtiFile
from .vtkxml_check import check_image_file

NON_IMAGE = {".vtu": "unstructured grid", ".vtp": "polygonal data", ".vts": "structured grid",
             ".vtr": "rectilinear grid", ".vtk": "legacy VTK", ".vtm": "multiblock",
             ".pvtu": "unstructured grid", ".vtmb": "multiblock"}
RESAMPLE_HINT = ("resample it to an image first (ParaView: Filters > Resample To Image, then "
                 "File > Save Data as .pvd/.vti)")


def _vtk():
    try:
        from vtkmodules.util import numpy_support
        from vtkmodules.vtkCommonCore import vtkFloatArray
        from vtkmodules.vtkCommonDataModel import vtkImageData
        from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLImageDataWriter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StsrError(f"VTK's Python modules are needed for .vti/.pvd files ({exc}); "
                        "install ParaView (Debian: python3-paraview)") from None
    return numpy_support, vtkFloatArray, vtkImageData, vtkXMLImageDataReader, vtkXMLImageDataWriter


def arrays_from_image(img, where: str = "",
                      names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Point arrays of a vtkImageData as numpy: ``[Z, Y, X]`` or ``[Z, Y, X, C]`` float32;
    ``names``: convert only the arrays that hold these (see :func:`arrays_holding`)."""
    numpy_support = _vtk()[0]
    dims = tuple(int(d) for d in img.GetDimensions())
    pd = img.GetPointData()
    stored = {pd.GetArray(i).GetName() or f"array{i}": pd.GetArray(i)
              for i in range(pd.GetNumberOfArrays()) if pd.GetArray(i) is not None}
    keep = arrays_holding(names, list(stored), where, strict=False) if names else list(stored)
    arrays: Dict[str, np.ndarray] = {}
    n = dims[0] * dims[1] * dims[2]
    for name, arr in stored.items():
        if name not in keep:
            continue
        a = numpy_support.vtk_to_numpy(arr).astype(np.float32)
        if a.shape[0] != n:
            raise StsrError(f"array '{name}'{where} has {a.shape[0]} values for {n} points: "
                            "the data is truncated or damaged")
        c = arr.GetNumberOfComponents()
        arrays[name] = a.reshape((dims[2], dims[1], dims[0]) + ((c,) if c > 1 else ()))
    return arrays


def read_vti(path: str, arrays: Optional[Sequence[str]] = None) -> Frame:
    """One .vti as a :class:`Frame` (time: its TimeValue field, or None). ``arrays``: read
    only the point arrays that hold these names (VTK skips the others' data)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in NON_IMAGE:
        raise StsrError(f"'{path}' holds {NON_IMAGE[ext]}, not image data: {RESAMPLE_HINT}")
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"<VTKFile" not in head:
        raise StsrError(f"'{path}' is not a VTK XML file")
    m = re.search(rb'<VTKFile[^>]*?\stype="(\w+)"', head)
    if m and m.group(1) != b"ImageData":
        raise StsrError(f"'{path}' holds {m.group(1).decode()}, not ImageData: {RESAMPLE_HINT}")
    check_image_file(path)                  # VTK crashes on some damaged files: not on these
    numpy_support, _, _, Reader, _ = _vtk()
    from vtkmodules.vtkCommonCore import vtkCommand
    reader = Reader()
    errors: List[str] = []
    reader.AddObserver(vtkCommand.ErrorEvent, lambda o, e: errors.append(e))
    reader.SetFileName(path)
    if arrays:
        reader.UpdateInformation()
        selection = reader.GetPointDataArraySelection()
        stored = [selection.GetArrayName(i) for i in range(selection.GetNumberOfArrays())]
        keep = arrays_holding(arrays, stored, strict=False)
        for name in stored:
            selection.SetArraySetting(name, name in keep)
    reader.Update()
    img = reader.GetOutput()
    if errors or reader.GetErrorCode() or img is None or img.GetNumberOfPoints() == 0:
        raise StsrError(f"'{path}' is unreadable or truncated (VTK could not read it)")
    found = arrays_from_image(img, f" in '{path}'")
    if not found and not (arrays and stored):   # asked-for arrays: series_from_frames says
        if img.GetCellData().GetNumberOfArrays() > 0:
            raise StsrError(f"'{path}' has only cell data; point data is needed (ParaView: "
                            "Filters > Cell Data to Point Data)")
        raise StsrError(f"'{path}' has no point-data arrays")
    tv = None
    fd = img.GetFieldData()
    if fd is not None and fd.GetArray("TimeValue") is not None \
            and fd.GetArray("TimeValue").GetNumberOfTuples() > 0:
        tv = float(fd.GetArray("TimeValue").GetTuple1(0))
    return Frame(tv, found, image_grid(img), f"in '{path}'", tuple(stored) if arrays else ())


def image_grid(img) -> Grid:
    """The grid of a vtkImageData's points (its origin moved to the extent's first point)."""
    spacing = img.GetSpacing()
    origin = [o + e * s for o, e, s in zip(img.GetOrigin(), img.GetExtent()[0::2], spacing)]
    return Grid(img.GetDimensions(), origin, spacing)


def pvd_steps(path: str) -> List[Tuple[float, str]]:
    """(time, .vti file) of every step a .pvd lists (part 0), sorted by time, each file
    checked to exist and hold image data, no time twice."""
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise StsrError(f"'{path}' is not a valid .pvd file (XML error: {exc})") from None
    entries = []
    for ds in root.iter("DataSet"):
        if ds.get("part", "0") not in ("0", ""):
            continue
        f = ds.get("file")
        if not f:
            raise StsrError(f"'{path}': a DataSet entry has no file attribute")
        try:
            t = float(ds.get("timestep", len(entries)))
        except ValueError:
            t = float("nan")
        if not math.isfinite(t):
            raise StsrError(f"'{path}': timestep '{ds.get('timestep')}' is not a finite number")
        entries.append((t, os.path.join(os.path.dirname(os.path.abspath(path)), f)))
    if not entries:
        raise StsrError(f"'{path}' lists no datasets")
    entries.sort(key=lambda e: e[0])
    for _, f in entries:
        ext = os.path.splitext(f)[1].lower()
        if ext in NON_IMAGE:
            raise StsrError(f"'{path}' lists {NON_IMAGE[ext]} ('{os.path.basename(f)}'), not "
                            f"image data: {RESAMPLE_HINT}")
        if not os.path.isfile(f):
            raise StsrError(f"'{path}' refers to '{f}', which does not exist")
    times = [e[0] for e in entries]
    if len(set(times)) != len(times):
        raise StsrError(f"'{path}' lists the same timestep twice: {times}")
    return entries


def read_pvd(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    entries = pvd_steps(path)
    frames = [dataclasses.replace(read_vti(e[1], arrays), time=e[0]) for e in entries]
    return series_from_frames(frames, arrays, path)


def _natural_key(name: str):
    nums = re.findall(r"\d+", name)
    return (int(nums[-1]) if nums else -1, name)


def read_vti_folder(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    files = sorted((f for f in os.listdir(path) if f.lower().endswith(".vti")), key=_natural_key)
    if not files:
        raise StsrError(f"folder '{path}' has no .vti files")
    frames = [read_vti(os.path.join(path, f), arrays) for f in files]
    if any(f.time is None for f in frames):     # TimeValue in every file, else 0, 1, ...
        frames = [dataclasses.replace(f, time=float(i)) for i, f in enumerate(frames)]
    return series_from_frames(frames, arrays, path)


def read_single_vti(path: str, arrays: Optional[Sequence[str]] = None) -> VolumeSeries:
    frame = read_vti(path, arrays)
    if frame.time is None:
        frame = dataclasses.replace(frame, time=0.0)
    return series_from_frames([frame], arrays, path)


def image_from_arrays(grid: Grid, arrays: Dict[str, np.ndarray], time: Optional[float] = None):
    """A vtkImageData on ``grid`` holding ``arrays`` (``[Z, Y, X]`` scalars or ``[Z, Y, X, C]``
    vectors, as :func:`merge_components` gives them), with a TimeValue when ``time`` is set.
    numpy_to_vtk copies each array, so the caller's buffers can be reused at once."""
    numpy_support, _, vtkImageData, _, _ = _vtk()
    from vtkmodules.vtkCommonCore import vtkDoubleArray
    img = vtkImageData()
    img.SetDimensions(*grid.dims)
    img.SetOrigin(*grid.origin)
    img.SetSpacing(*grid.spacing)
    for name, a in arrays.items():
        flat = np.ascontiguousarray(a, dtype=np.float32)
        flat = flat.reshape(-1, a.shape[-1]) if a.ndim == 4 else flat.reshape(-1)  # [N(, C)]
        arr = numpy_support.numpy_to_vtk(flat, deep=1)
        arr.SetName(name)
        img.GetPointData().AddArray(arr)
    if time is not None:
        tv = vtkDoubleArray()
        tv.SetName("TimeValue")
        tv.InsertNextValue(float(time))
        img.GetFieldData().AddArray(tv)
    return img


def image_from_series(series: VolumeSeries, t: int):
    """Timestep ``t`` of a series as a vtkImageData (components re-assembled, TimeValue set)."""
    return image_from_arrays(series.grid, merged_arrays(series, t), float(series.times[t]))


def _replace_with(tmp: str, path: str) -> None:
    """Flush ``tmp`` to the disk and rename it to ``path`` (atomic on one filesystem); its
    pages leave the page cache (base.fsync_file's ``drop``: the next step's writes reuse
    them)."""
    fsync_file(tmp, drop=True)
    os.replace(tmp, path)


class VtiStepsWriter(SeriesWriter):
    """What the ``.vti`` writers share: each open step is a hidden temporary ``.vti``
    (:class:`VtiFile`) that its slabs are appended to, renamed to its own name when its last
    row is written (``_tmp`` and ``_final`` name the two)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open_files: Dict[int, VtiFile] = {}

    def _tmp(self, i: int) -> str:
        raise NotImplementedError

    def _final(self, i: int) -> str:
        raise NotImplementedError

    @classmethod
    def buffer_bytes(cls, grid: Grid, variables: Sequence[str], components: Dict[str, List[str]],
                     compression: str, rows: int, steps: int = 1,
                     slab_rows: Optional[int] = None,
                     metadata: Optional[Dict[str, Any]] = None) -> int:
        """Beyond a vector's components put together: the compressed blocks in flight."""
        extra = 0 if compression == "none" else 2 * (vtifile.GROUP_BYTES
                                                     + vtifile.MAX_BLOCK_BYTES)
        return super().buffer_bytes(grid, variables, components, compression, rows, steps,
                                    slab_rows, metadata) + extra

    def _write_slab(self, i: int, z0: int, arrays: Dict[str, np.ndarray]) -> None:
        out = self.open_files.get(i)
        if out is None:
            out = VtiFile(self._tmp(i), self.grid, list(arrays),
                          [a.shape[3] if a.ndim == 4 else 1 for a in arrays.values()],
                          float(self.times[i]), self.compression)
            self.open_files[i] = out
        out.add(z0, list(arrays.values()))

    def _complete_file(self, i: int) -> str:
        """Finish step ``i``'s file and rename it into place; returns its name."""
        out, tmp, final = self.open_files.pop(i), self._tmp(i), self._final(i)
        try:
            out.finish()
            _replace_with(tmp, final)
        except BaseException:
            out.close()
            remove_quietly(tmp)
            raise
        return final

    def _drop_step(self, i: int) -> None:
        out = self.open_files.pop(i, None)
        if out is not None:
            out.close()
        remove_quietly(self._tmp(i))

    def _drop_open_steps(self) -> None:
        for i in list(self.open_files):
            self._drop_step(i)


class PvdWriter(VtiStepsWriter):
    """``OUT.pvd`` plus one ``.vti`` per step in the folder ``OUT/`` beside it.

    A new output is written in place: each ``.vti`` goes to a hidden temporary name in
    ``OUT/`` (its slabs appended as they come, several steps open at once) and is renamed
    when its last row is written, then ``OUT.pvd`` is rewritten atomically listing
    the steps complete so far, so whatever stops the run (exception, Ctrl-C, crash) the
    ``.pvd`` opens in ParaView with every step it names complete. ``abort()`` keeps those
    steps (removes everything when none was complete).

    Replacing an existing output (``overwrite``): the new steps go to a hidden folder
    ``.OUT-partial-*`` beside it and the old ``OUT.pvd`` / ``OUT/`` stay untouched until
    ``close()``, which swaps the folders and then the ``.pvd``; ``abort()`` removes the new
    steps and leaves the old output as it was. (Both need disk space until the swap.)

    Split among the processes of a group (:meth:`for_group`, then :meth:`share_out`): each
    writes its share of the steps into the one folder rank 0 made (``OUT/``, or the hidden
    one when replacing); rank 0 keeps ``OUT.pvd`` listing its own complete steps while
    they are written and, once every process has closed, lists them all (and swaps the
    folders when replacing). Interrupted, the ``.pvd`` lists rank 0's complete steps; the
    others' complete files stay in ``OUT/`` unlisted.
    """

    group = False                  # one of a group's writers (see for_group)

    def __init__(self, *args, shared_dir: Optional[str] = None, replacing: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = os.path.dirname(self.path)
        self.stem = os.path.splitext(os.path.basename(self.path))[0]
        self.data_dir = os.path.join(self.folder, self.stem)
        self.replacing = os.path.exists(self.path) or os.path.exists(self.data_dir)
        if shared_dir is not None:     # a group's: the folder rank 0 made
            self.replacing, self.dir = replacing, shared_dir
        elif self.replacing:
            self.dir = tempfile.mkdtemp(prefix=f".{self.stem}-partial-", dir=self.folder)
            apply_umask(self.dir)
        else:
            try:
                os.mkdir(self.data_dir)
            except FileExistsError:
                raise StsrError(f"'{self.data_dir}' appeared while opening the output; pass "
                                "--overwrite to replace it") from None
            self.dir = self.data_dir

    @classmethod
    def for_group(cls, path: str, grid: Grid, times: Sequence[float],
                  variables: Sequence[str], components: Dict[str, List[str]],
                  compression: str, overwrite: bool) -> "PvdWriter":
        """This process's writer of an output split among a group (every process calls it
        after the checks passed on all): rank 0 makes the folders, the others use them."""
        from .. import distributed      # torch: imported only by a group's writers
        made: Optional[Tuple[str, bool]] = None
        error: Optional[str] = None
        if distributed.is_main():
            try:
                make_output_folder(path)
                w = cls(path, grid, times, variables, components, compression, overwrite)
                made = (w.dir, w.replacing)
            except StsrError as exc:
                error = str(exc)
        made, error = distributed.broadcast_object((made, error), what="opening the output")
        if error is not None:
            raise StsrError(error if distributed.is_main() else f"(rank 0) {error}")
        if not distributed.is_main():
            w = cls(path, grid, times, variables, components, compression, overwrite,
                    shared_dir=made[0], replacing=made[1])
        w.group = True
        return w

    def share_out(self, steps: Sequence[int]) -> "PvdWriter":
        """Write only ``steps`` (this process's share); returns self."""
        self.steps = sorted(int(i) for i in steps)
        return self

    def _name(self, i: int) -> str:
        return f"{self.stem}_{i:04d}.vti"

    def _tmp(self, i: int) -> str:
        return os.path.join(self.dir, f".{self._name(i)}.tmp")

    def _final(self, i: int) -> str:
        return os.path.join(self.dir, self._name(i))

    def _end_step(self, i: int) -> None:
        final = self._complete_file(i)
        if not self.replacing and self._lists_steps():
            try:
                self._write_pvd(sorted(self.done + [i]))
            except BaseException:     # the .pvd still lists the steps before: so does OUT/
                remove_quietly(final)
                raise

    def _lists_steps(self) -> bool:
        """Whether this writer writes the .pvd (a group's: rank 0 alone)."""
        if not self.group:
            return True
        from .. import distributed
        return distributed.is_main()

    def _write_pvd(self, steps: Sequence[int]) -> None:
        """Rewrite the .pvd listing ``steps``: a temporary file renamed over it."""
        os.replace(self._pvd_written(steps), self.path)

    def _pvd_written(self, steps: Sequence[int]) -> str:
        """A hidden temporary .pvd listing ``steps``, on the disk, to be renamed over the
        .pvd (a full disk fails here, before anything the user has is changed)."""
        lines = ['<?xml version="1.0"?>',
                 '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">',
                 "  <Collection>"]
        lines += [f'    <DataSet timestep="{float(self.times[i])!r}" group="" part="0" '
                  f'file="{self.stem}/{self._name(i)}"/>' for i in steps]
        lines += ["  </Collection>", "</VTKFile>", ""]
        tmp = os.path.join(self.folder, f".{self.stem}.pvd.tmp")
        try:
            with open(tmp, "w") as fh:
                fh.write("\n".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            remove_quietly(tmp)
            raise
        return tmp

    def _finish(self) -> List[str]:
        if self.group:                 # every process's steps are complete before the list
            from .. import distributed
            done = distributed.all_gather_objects(sorted(self.done), "closing the output")
            missing = sorted(set(range(self.n_times)) - {i for d in done for i in d})
            if missing:
                raise StsrError(f"'{self.path}': steps {missing[:10]} were written by no "
                                "process")
            if not distributed.is_main():
                distributed.barrier("waiting for rank 0 to list the steps")
                return [os.path.join(self.data_dir, self._name(i)) for i in self.steps]
            try:
                files = self._finish_alone()
                if not self.replacing:      # it listed rank 0's steps alone so far
                    self._write_pvd(range(self.n_times))
                return files
            finally:
                distributed.barrier("listing the steps")
        return self._finish_alone()

    def _finish_alone(self) -> List[str]:
        if self.replacing:
            # every file in OUT/ is complete at every moment; the new .pvd is written first
            # (what can fail for a full disk), then the old folder is moved aside before the
            # new one takes its name, then the .pvd is renamed into place
            pvd = self._pvd_written(range(self.n_times))
            trash = None
            try:
                if os.path.lexists(self.data_dir):
                    trash = tempfile.mkdtemp(prefix=f".{self.stem}-old-", dir=self.folder)
                    os.replace(self.data_dir, os.path.join(trash, "data"))
            except BaseException:
                remove_quietly(pvd)
                if trash is not None:
                    remove_quietly(trash)
                raise
            os.replace(self.dir, self.data_dir)
            self.dir = self.data_dir
            os.replace(pvd, self.path)
            if trash is not None:
                remove_quietly(trash)
        return [self.path] + [os.path.join(self.data_dir, self._name(i))
                              for i in range(self.n_times)]

    def _discard(self) -> None:
        self._drop_open_steps()
        if self.group and not self._lists_steps():
            return       # rank 0 decides about the folder; this one's temporaries are gone
        if self.replacing or not self.done:
            remove_quietly(self.dir)
            if not self.replacing:
                remove_quietly(self.path)


class VtiWriter(VtiStepsWriter):
    """One step in one ``.vti``, written to a hidden temporary name and renamed over the
    target when complete (an old file stays intact until then)."""

    def _tmp(self, i: int) -> str:
        return os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.tmp")

    def _final(self, i: int) -> str:
        return self.path

    def _end_step(self, i: int) -> None:
        self._complete_file(i)

    def _finish(self) -> List[str]:
        return [self.path]

    def _discard(self) -> None:
        self._drop_open_steps()


# --- reading one step at a time --------------------------------------------------------------
def vti_time(path: str) -> Optional[float]:
    """A .vti's TimeValue with its point arrays left unread."""
    if not os.path.isfile(path):
        raise StsrError(f"file '{path}' does not exist")
    check_image_file(path)                  # VTK crashes on some damaged files: not on these
    r = _vtk()[3]()
    r.SetFileName(path)
    r.UpdateInformation()
    r.GetPointDataArraySelection().DisableAllArrays()
    r.GetCellDataArraySelection().DisableAllArrays()
    r.Update()
    fd = r.GetOutput().GetFieldData()
    a = fd.GetArray("TimeValue") if fd is not None else None
    return None if a is None or a.GetNumberOfTuples() < 1 else float(a.GetTuple1(0))


class VtiStepReader(SeriesReader):
    """Step by step over a ``.pvd``, a folder of ``.vti`` or one ``.vti`` (see
    :meth:`at`): opening reads the first file's grid and names; each ``read_step`` reads
    that step's file alone."""

    def __init__(self, path: str, files: List[str], times: Sequence[float],
                 arrays: Optional[Sequence[str]]) -> None:
        first = read_vti(files[0], arrays)          # VTK reads only the asked arrays' data
        self.arrays = arrays
        # every array the file holds (read or not) names the choices in an error
        self.keep = keep_arrays(list(first.stored or first.arrays), arrays, files[0])
        self.files = files
        variables, comps = split_merged({n: first.arrays[n] for n in self.keep})
        super().__init__(path, first.grid, times, list(variables), comps)

    @classmethod
    def at(cls, path: str, arrays: Optional[Sequence[str]] = None) -> "VtiStepReader":
        """The reader of a ``.pvd`` (its times), a folder of ``.vti`` (ordered by the last
        number in their names; TimeValue times, else 0, 1, ...) or one ``.vti``."""
        if path.lower().endswith(".pvd") and not os.path.isdir(path):
            entries = pvd_steps(path)
            return cls(path, [f for _, f in entries], [t for t, _ in entries], arrays)
        if not os.path.isdir(path):
            tv = vti_time(path)
            return cls(path, [path], [0.0 if tv is None else tv], arrays)
        names = sorted((f for f in os.listdir(path) if f.lower().endswith(".vti")),
                       key=_natural_key)
        if not names:
            raise StsrError(f"folder '{path}' has no .vti files")
        files = [os.path.join(path, f) for f in names]
        tvs = [vti_time(f) for f in files]
        times = [float(i) for i in range(len(files))] if any(t is None for t in tvs) else tvs
        return cls(path, files, times, arrays)  # type: ignore[arg-type]

    def read_step(self, i: int) -> Dict[str, np.ndarray]:
        i = self._check(i)
        frame = read_vti(self.files[i], self.arrays)
        diffs = self.grid.differences(frame.grid)
        if diffs:
            raise StsrError(f"timesteps have different grids: '{self.files[i]}' differs from "
                            f"'{self.files[0]}' ({'; '.join(diffs)})")
        missing = [n for n in self.keep if n not in frame.arrays]
        if missing:
            raise StsrError(f"array {missing} is missing at a timestep: not in "
                            f"'{self.files[i]}' (it is in '{self.files[0]}')")
        return split_merged({n: frame.arrays[n] for n in self.keep})[0]
