"""Fuzzed inputs (issue 19): every reader and the model loader either gives a valid result
or raises StsrError with a one-line message naming the file -- never another exception, a
hang or a crash -- whatever the bytes, headers and layouts of the files they are given.

The files are made here (valid ones from the project's writers, then mutated by the
strategies below) and read in tests/fuzz_worker.py, a separate process, so that a crash in
VTK, HDF5 or torch, or a hang, is reported as a failing case instead of ending the run.

Also ``stsr fit --set KEY=VALUE`` with values in and out of each setting's range: a model, or
one ``stsr: error:`` line naming the setting.

Hypothesis profiles and the worker: tests/fuzzing.py (``make test`` runs a few hundred
cases per reader, the same every run; ``make fuzz`` 20x as many, a new draw each run).
STSR_FUZZ_REPORT=FILE writes the cases tried per reader. Each bug found is pinned by an
``@example`` on its test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzzing import Worker, cases, write_report  # noqa: E402

from stsr_core.io import write_series  # noqa: E402
from test_engine import smooth_series  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("fuzzlog") / "worker-stderr.txt")
    yield w
    w.stop()
    write_report(w)


@pytest.fixture(scope="module")
def case_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzzcases")


class Case:
    """A fresh folder per example; every message must name a file in it (its name is in
    every path the readers report)."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fuzzcase-", dir=root))

    def __enter__(self) -> "Case":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def check(worker: Worker, reader: str, case: Case, op: str, path: Path,
          arrays: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The property: a valid result, or StsrError with one line naming the file."""
    worker.seen.setdefault(reader, set()).add(case.dir.name)
    worker.cases[reader] = len(worker.seen[reader])
    r = worker.ask(op, path, arrays)
    worker.outcomes[f"{reader} {op}: {r['outcome']}"] += 1
    what = f"{op} of {path.name} (arrays={arrays})"
    if r["outcome"] == "error":
        msg = r["message"]
        assert "\n" not in msg.strip(), f"{what}: a multi-line error: {msg!r}"
        assert case.dir.name in msg, f"{what}: the error does not name the file: {msg!r}"
    elif r["outcome"] != "ok":
        detail = r.get("traceback") or r.get("why")
        pytest.fail(f"{what}: {r['outcome']} {r.get('type', '')}\n{detail}")
    return r


# --- mutations -------------------------------------------------------------------------------
# Byte-level edits with positions as fractions of the length, so that one edit list applies
# to any file (and an @example can name one).
Edit = Tuple[Any, ...]

byte_edits = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("repeat"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
), max_size=4)


def apply_bytes(data: bytes, edits: Sequence[Edit]) -> bytes:
    b = bytearray(data)
    for e in edits:
        if not b:
            break
        pos = min(int(e[1] * len(b)), len(b) - 1)
        if e[0] == "flip":
            b[pos] ^= 1 << e[2]
        elif e[0] == "set":
            b[pos] = e[2]
        elif e[0] == "truncate":
            del b[pos:]
        elif e[0] == "delete":
            del b[pos:pos + e[2]]
        elif e[0] == "insert":
            b[pos:pos] = e[2]
        elif e[0] == "repeat":
            b[pos:pos] = b[pos:pos + e[2]]
    return bytes(b)


# Attribute values that readers trip over: empty, signs, huge, not numbers, other types,
# other extents, other encodings and compressors.
ODD_VALUES = ["", "0", "-1", "1", "2", "3", "7", "nan", "inf", "-inf", "1e308", "1e-320", "abc",
              "4294967296", "18446744073709551617", "-9223372036854775809", "0 0 0",
              "0 3 0 2 0 1", "0 -3 0 2 0 1", "0 3 0 2", "0 99999 0 99999 0 99999",
              "0 1e9 0 1 0 1", "1 2 3", "0 0 0 0 0 0", "0.5 0.25", "0 -1 1", "Float32",
              "Float64", "Int8", "UInt8", "Int64", "UInt64", "String", "Bit", "IdType",
              "ascii", "binary", "appended", "raw", "base64", "LittleEndian", "BigEndian",
              "UInt32", "vtkZLibDataCompressor", "vtkLZ4DataCompressor",
              "vtkLZMADataCompressor", "vtkNoSuchCompressor", "ImageData", "PolyData",
              "Collection", "x.vti", "../x.vti", "/", ".", "a/a_0000.vti", "b/b_0000.vti",
              "temperature", "rho", "v", "TimeValue", "0.1", "2.0", "1.5", "1.5e10", "&amp;",
              "&#0;", "&x;", "\u00e9"]
xml_value = st.one_of(st.sampled_from(ODD_VALUES), st.integers(-3, 10 ** 10).map(str),
                      st.floats().map(repr), st.text(max_size=6))
xml_edits = st.lists(st.one_of(
    st.tuples(st.just("attr"), st.floats(0, 1, exclude_max=True), xml_value),
    st.tuples(st.just("drop_attr"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("drop_line"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("dup_line"), st.floats(0, 1, exclude_max=True)),
), max_size=3)

ATTR = re.compile(rb'(\w+)="([^"]*)"')


def apply_xml(data: bytes, edits: Sequence[Edit], end: Optional[int] = None) -> bytes:
    """Edit the XML markup in ``data[:end]`` (a .vti's appended data after it is kept as it
    is, its offsets now maybe wrong as in a real damaged file)."""
    end = len(data) if end is None else end
    head, tail = data[:end], data[end:]
    for e in edits:
        if e[0] in ("attr", "drop_attr"):
            found = list(ATTR.finditer(head))
            if not found:
                continue
            m = found[min(int(e[1] * len(found)), len(found) - 1)]
            if e[0] == "attr":
                value = e[2].replace('"', "'").encode("utf-8", "surrogatepass")
                head = head[:m.start(2)] + value + head[m.end(2):]
            else:
                head = head[:m.start()] + head[m.end():]
        else:
            lines = head.split(b"\n")
            i = min(int(e[1] * len(lines)), len(lines) - 1)
            if e[0] == "drop_line":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            head = b"\n".join(lines)
    return head + tail


def appended_start(data: bytes) -> Optional[int]:
    i = data.find(b"<AppendedData")
    return None if i < 0 else i


ARRAY_CHOICES = st.sampled_from([None, None, None, ["temperature"], ["v"], ["v_1", "rho"],
                                 ["nope"]])


# --- the valid files the mutations start from ------------------------------------------------
class Files(dict):
    """Name -> bytes, shown by name only when Hypothesis reports a failing case."""

    def __repr__(self) -> str:
        return f"<files {sorted(self)}>"


def vector_series(nt: int = 2):
    s = smooth_series(nx=4, ny=3, nz=2, nt=nt)
    s.variables["v_0"] = s.variables["rho"] * 2
    s.variables["v_1"] = s.variables["temperature"] - 300
    s.components = {"v": ["v_0", "v_1"]}
    s.validate()
    return s


def _vtk_mode_file(path: Path, mode: str) -> None:
    """A .vti as other programs write it: inline ascii or base64 binary, VTK's defaults."""
    from stsr_core.io.vti import image_from_series, _vtk
    w = _vtk()[4]()
    w.SetFileName(str(path))
    w.SetInputData(image_from_series(vector_series(nt=1), 0))
    if mode == "ascii":
        w.SetDataModeToAscii()
    else:
        w.SetDataModeToBinary()
    assert w.Write() == 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Dict[str, bytes]:
    """Name -> bytes of the valid files the cases start from."""
    d = tmp_path_factory.mktemp("corpus")
    out = Files()
    one = vector_series(nt=1)
    for comp in ("zlib", "none", "lz4"):
        write_series(one, str(d / f"{comp}.vti"), compression=comp)
        out[f"vti-{comp}"] = (d / f"{comp}.vti").read_bytes()
    for mode in ("ascii", "binary"):
        _vtk_mode_file(d / f"{mode}.vti", mode)
        out[f"vti-{mode}"] = (d / f"{mode}.vti").read_bytes()
    write_series(vector_series(nt=2), str(d / "a.pvd"))
    out["pvd"] = (d / "a.pvd").read_bytes()
    for i in range(2):
        out[f"pvd-step{i}"] = (d / "a" / f"a_{i:04d}.vti").read_bytes()
    return out


VTI_BASES = ["vti-zlib", "vti-none", "vti-lz4", "vti-ascii", "vti-binary"]


# --- .vti ------------------------------------------------------------------------------------
@settings(max_examples=cases(400))
# found by this test (make fuzz): VTK's reader crashes the process on these -- an unknown
# array type (segmentation fault), a header announcing 10^15 values (std::bad_alloc), 64-bit
# block headers read as 32-bit ones and a zero block size (division by zero)
@example(base="vti-binary", header=[("attr", 0.276, "Float6")], data=[], arrays=None)
@example(base="vti-zlib", header=[("attr", 0.264, "")], data=[], arrays=None)
@example(base="vti-zlib", header=[("attr", 0.153, "0 99999 0 99999 0 99999"),
                                  ("attr", 0.458, "0 99999 0 99999 0 99999")], data=[],
         arrays=None)
@example(base="vti-ascii", header=[("attr", 0.171, "0 99999 0 99999 0 99999"),
                                   ("attr", 0.434, "0 99999 0 99999 0 99999")], data=[],
         arrays=None)
@example(base="vti-zlib", header=[("attr", 0.097, "UInt32")], data=[], arrays=None)
@example(base="vti-zlib", header=[], data=[("set", 0.74756, 0), ("set", 0.74817, 0),
                                           ("set", 0.74878, 0)], arrays=None)
# a TimeValue field array with no tuples (an IndexError-like ValueError from VTK's wrapper)
@example(base="vti-zlib", header=[("attr", 0.319, "0")], data=[], arrays=None)
@given(base=st.sampled_from(VTI_BASES), header=xml_edits, data=byte_edits, arrays=ARRAY_CHOICES)
def test_a_mutated_vti_reads_or_fails_with_one_clear_error(worker, case_root, corpus, base,
                                                           header, data, arrays):
    raw = corpus[base]
    raw = apply_bytes(apply_xml(raw, header, appended_start(raw)), data)
    with Case(case_root) as case:
        path = case.dir / "step.vti"
        path.write_bytes(raw)
        check(worker, "vti", case, "series", path, arrays)
        check(worker, "vti", case, "stream", path, arrays)


# --- .pvd (and a folder of .vti) -------------------------------------------------------------
@settings(max_examples=cases(300))
# found by this test (make fuzz): a timestep "nan" (the step reader took it)
@example(header=[("attr", 0.375, "nan")], data=[], step_edits=[], target="pvd", arrays=None)
@given(header=xml_edits, data=byte_edits, step_edits=byte_edits, target=st.sampled_from(
    ["pvd", "pvd", "folder"]), arrays=ARRAY_CHOICES)
def test_a_mutated_pvd_reads_or_fails_with_one_clear_error(worker, case_root, corpus, header,
                                                           data, step_edits, target, arrays):
    with Case(case_root) as case:
        (case.dir / "a").mkdir()
        (case.dir / "a" / "a_0000.vti").write_bytes(corpus["pvd-step0"])
        (case.dir / "a" / "a_0001.vti").write_bytes(apply_bytes(corpus["pvd-step1"],
                                                                step_edits))
        pvd = case.dir / "a.pvd"
        pvd.write_bytes(apply_bytes(apply_xml(corpus["pvd"], header), data))
        path = pvd if target == "pvd" else case.dir / "a"
        check(worker, "pvd", case, "series", path, arrays)
        check(worker, "pvd", case, "stream", path, arrays)


# --- HDF5 ------------------------------------------------------------------------------------
H5_DTYPES = ["f4", "f8", "f2", "i1", "i8", "u8", "?", "c8", "S4", "str", "compound"]
h5_dataset = st.fixed_dictionaries({
    "name": st.sampled_from(["temperature", "rho", "v", "extra"]),
    "kind": st.sampled_from(["dataset"] * 6 + ["group", "empty", "scalar", "broken link"]),
    "shape": st.one_of(st.just((2, 2, 3, 4)), st.just((2, 2, 3, 4, 3)),
                       st.lists(st.integers(0, 4), max_size=6).map(tuple)),
    "dtype": st.sampled_from(["f4"] * 6 + H5_DTYPES),
    "fill": st.sampled_from(["smooth"] * 4 + ["nan", "inf", "huge", "zeros"]),
    "chunked": st.booleans(),
})
attr_value = st.one_of(
    st.lists(st.floats(), min_size=0, max_size=5).map(lambda v: np.asarray(v, dtype="f8")),
    st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=4).map(np.asarray),
    st.lists(st.text(max_size=6), min_size=1, max_size=4),
    st.lists(st.binary(max_size=6), min_size=1, max_size=4).map(
        lambda v: np.asarray(v, dtype="S6")),
    st.floats(), st.integers(-10, 10), st.text(max_size=8), st.booleans(),
    st.just(np.zeros((2, 3))), st.just(np.asarray([1.5, 2.0])),
    st.just(np.asarray([0.0, 0.0, 0.0])), st.just(np.asarray([1.0, 0.0, -1.0])),
    st.just(["temperature", "rho", "v"]), st.just(["v", "nope"]),
)
h5_attrs = st.dictionaries(st.sampled_from(["times", "origin", "spacing", "variables"]),
                           attr_value, max_size=4)


def _h5_values(spec: Dict[str, Any]) -> Any:
    shape, dtype = spec["shape"], spec["dtype"]
    n = int(np.prod(shape)) if shape else 1
    base = np.linspace(1.0, 2.0, max(n, 1))[:n].reshape(shape)
    if spec["fill"] == "nan":
        base.flat[:1] = np.nan
    elif spec["fill"] == "inf":
        base.flat[:1] = np.inf
    elif spec["fill"] == "huge":
        base = base * 1e300
    elif spec["fill"] == "zeros":
        base = np.zeros(shape)
    if dtype == "str":
        return np.asarray(base.astype(str), dtype=object)
    if dtype == "compound":
        out = np.zeros(shape, dtype=[("a", "f4"), ("b", "i4")])
        with np.errstate(all="ignore"):             # 1e300 in float32: inf, as meant
            out["a"] = base
        return out
    with np.errstate(all="ignore"):
        return base.astype(dtype)


def write_h5_layout(path: Path, datasets: List[Dict[str, Any]], attrs: Dict[str, Any]) -> None:
    import h5py
    with h5py.File(path, "w") as fh:
        for spec in datasets:
            name = spec["name"]
            if name in fh:
                continue
            kind = spec["kind"]
            if kind == "group":
                fh.create_group(name).create_dataset("inner", data=np.zeros((2, 2, 2, 2), "f4"))
            elif kind == "empty":
                fh.create_dataset(name, data=h5py.Empty("f4"))
            elif kind == "scalar":
                fh.create_dataset(name, data=np.float32(1.0))
            elif kind == "broken link":
                fh[name] = h5py.SoftLink("/nowhere")
            else:
                values = _h5_values(spec)
                dtype = h5py.string_dtype() if spec["dtype"] == "str" else values.dtype
                chunks = True if spec["chunked"] and values.ndim and values.size else None
                fh.create_dataset(name, data=values, dtype=dtype, chunks=chunks)
        for k, v in attrs.items():
            try:
                fh.attrs[k] = v
            except (TypeError, ValueError):       # h5py cannot store it: no such file
                pass


def _ds(name: str = "temperature", kind: str = "dataset", shape: tuple = (2, 2, 3, 4),
        dtype: str = "f4") -> Dict[str, Any]:
    return {"name": name, "kind": kind, "shape": shape, "dtype": dtype, "fill": "smooth",
            "chunked": False}


@settings(max_examples=cases(400))
# found by this test: a 'variables' attribute that is not a list, a dataset of records, times
# or origin that are not numbers, one time too many, an empty dataset, a zero spacing,
# a volume with no points
@example(datasets=[_ds()], attrs={"variables": True}, data=[], damage=1, arrays=None)
@example(datasets=[_ds(dtype="compound")], attrs={}, data=[], damage=1, arrays=None)
@example(datasets=[_ds()], attrs={"times": ["a", "b"]}, data=[], damage=1, arrays=None)
@example(datasets=[_ds()], attrs={"origin": np.asarray([b"", b"x"], dtype="S6")}, data=[],
         damage=1, arrays=None)
@example(datasets=[_ds()], attrs={"times": np.asarray([1.0, 2.0, 3.0])}, data=[], damage=1,
         arrays=None)
@example(datasets=[_ds(kind="empty")], attrs={}, data=[], damage=1, arrays=None)
@example(datasets=[_ds()], attrs={"spacing": np.zeros(3)}, data=[], damage=1, arrays=None)
@example(datasets=[_ds(shape=(1, 0, 0, 0))], attrs={}, data=[], damage=1, arrays=None)
# (make fuzz) a vector of no components (StopIteration)
@example(datasets=[_ds(shape=(2, 2, 3, 4, 0))], attrs={}, data=[], damage=1, arrays=None)
# (make fuzz) a damaged file on which h5py raises TypeError ("Not a group")
@example(datasets=[], attrs={}, data=[("repeat", 0.109375, 20)], damage=0, arrays=None)
@given(datasets=st.lists(h5_dataset, max_size=3), attrs=h5_attrs, data=byte_edits,
       damage=st.integers(0, 3), arrays=ARRAY_CHOICES)
def test_an_hdf5_file_of_any_layout_reads_or_fails_with_one_clear_error(
        worker, case_root, datasets, attrs, data, damage, arrays):
    with Case(case_root) as case:
        path = case.dir / "series.h5"
        write_h5_layout(path, datasets, attrs)
        if damage == 0:                          # a quarter of the files also damaged
            path.write_bytes(apply_bytes(path.read_bytes(), data))
        check(worker, "h5", case, "series", path, arrays)
        check(worker, "h5", case, "stream", path, arrays)


# --- raw + JSON ------------------------------------------------------------------------------
GOOD_RAW = {"dims": [4, 3, 2], "variables": ["temperature", "rho"], "times": [0.0, 1.0],
            "pattern": "{variable}/{variable}-{index:04d}.raw", "index_start": 1,
            "origin": [0, 0, 0], "spacing": [1, 1, 1]}
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10 ** 12) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)
ODD_JSON = {
    "dims": [[4, 3], [4, 3, 2, 1], [0, 3, 2], [-4, 3, 2], [4.5, 3, 2], ["4", "3", "2"],
             [10 ** 6, 10 ** 6, 10 ** 6], [1, 1, 1], "432", {"x": 4}],
    "variables": [[], ["temperature"], ["temperature", "temperature"], ["nope"], "rho",
                  [1, 2], [["a"]], ["../../etc/passwd"], ["{index}"]],
    "times": [[], [0.0], [1.0, 0.0], [0.0, 0.0], [0.0, float("nan")], ["a", "b"], 2,
              [0.0, 1.0, 2.0], [[0.0], [1.0]]],
    "n_times": [2, 0, -1, "2", 2.5, 10 ** 9],
    "pattern": ["{variable}-{index}.raw", "{t}/{variable}.raw", "{foo}", "{0}", "{",
                "{index:s}", "{variable:d}", "{index:04d", "{variable.real}",
                "{variable[0]}", "/dev/zero", "../{variable}.raw", "", "{variable}"],
    "index_start": [0, -1, "1", 1.5, None, 10 ** 30],
    "origin": [[0, 0], [0, 0, "a"], [None, 0, 0], "000", [float("inf"), 0, 0]],
    "spacing": [[0, 1, 1], [-1, 1, 1], [1, 1], ["a", 1, 1], [float("nan"), 1, 1]],
    "components": [{"v": ["temperature", "rho"]}, {"v": ["x"]}, {"v": "rho"}, [], "v",
                   {"v": [1, 2]}],
}
raw_edit = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(sorted(GOOD_RAW))),
    st.sampled_from(sorted(ODD_JSON)).flatmap(
        lambda k: st.tuples(st.just("set"), st.just(k), st.sampled_from(ODD_JSON[k]))),
    st.tuples(st.just("set"), st.sampled_from(sorted(ODD_JSON)), json_value),
)


def _raw_case(*edits: Edit) -> Dict[str, Any]:
    return dict(edits=list(edits), sizes=[0, 0, 0, 0], text=[], damage=1, arrays=None)


@settings(max_examples=cases(400))
# found by this test: keys of the wrong type (components, index_start, origin, times,
# variables, n_times), a pattern that cannot be formatted, a huge n_times (memory), no
# variables, negative dims (an error that did not name the file)
@example(**_raw_case(("set", "components", None)))
@example(**_raw_case(("set", "index_start", None)))
@example(**_raw_case(("set", "origin", [None, 0, 0])))
@example(**_raw_case(("set", "times", ["a", "b"])))
@example(**_raw_case(("set", "variables", True)))
@example(**_raw_case(("drop", "times"), ("set", "n_times", {"a": 1})))
@example(**_raw_case(("set", "pattern", "{index:s}")))
@example(**_raw_case(("drop", "times"), ("set", "n_times", 10 ** 12)))
@example(**_raw_case(("set", "variables", [])))
@example(**_raw_case(("set", "dims", [-4, 3, 2])))
@example(**_raw_case(("set", "pattern", "/dev/zero")))
@given(edits=st.lists(raw_edit, max_size=3),
       sizes=st.lists(st.sampled_from([0] * 9 + [-5, -4, 3, 8]), min_size=4, max_size=4),
       text=byte_edits, damage=st.integers(0, 4), arrays=ARRAY_CHOICES)
def test_a_raw_series_with_any_json_reads_or_fails_with_one_clear_error(
        worker, case_root, edits, sizes, text, damage, arrays):
    desc: Dict[str, Any] = dict(GOOD_RAW)
    for e in edits:
        if e[0] == "drop":
            desc.pop(e[1], None)
        else:
            desc[e[1]] = e[2]
    with Case(case_root) as case:
        k = 0
        for n in GOOD_RAW["variables"]:             # the files of the valid description
            (case.dir / n).mkdir()
            for i in (1, 2):
                values = np.linspace(0, 1, 24, dtype="<f4").tobytes()
                cut = sizes[k]                              # most files the right size
                values = values[:len(values) + cut] if cut < 0 else values + b"\0" * cut
                (case.dir / n / f"{n}-{i:04d}.raw").write_bytes(values)
                k += 1
        path = case.dir / "series.json"
        body = json.dumps(desc).encode()
        path.write_bytes(apply_bytes(body, text) if damage == 0 else body)
        check(worker, "raw", case, "series", path, arrays)
        check(worker, "raw", case, "stream", path, arrays)


# --- model files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Dict[str, bytes]:
    """Valid model files of each preset, of another variable set, and of the older format
    version this stsr still reads (tests/data/fast_v3.stsr)."""
    from stsr_core import api
    d = tmp_path_factory.mktemp("models")
    s = smooth_series(nx=5, ny=4, nz=3, nt=3)
    quick = {"flow_iters": 5}
    made = {
        "fast": api.fit(s, "fast", steps=1, device="cpu", model_overrides=quick),
        "fast-network": api.fit(s, "fast", steps=1, device="cpu",
                                model_overrides=dict(quick, network=True, width=8,
                                                     latent_dim=4)),
        "siren": api.fit(s, "siren", steps=1, device="cpu"),
        "fast-one-variable": api.fit(s.select(["rho"]), "fast", steps=1, device="cpu",
                                     model_overrides=quick),
    }
    out = Files()
    for name, tm in made.items():
        api.save_model(tm, str(d / f"{name}.stsr"), with_optimizer=False)
        out[name] = (d / f"{name}.stsr").read_bytes()
    out["fast-v3"] = (ROOT / "tests" / "data" / "fast_v3.stsr").read_bytes()
    return out


MODEL_BASES = ["fast", "fast-network", "siren", "fast-one-variable", "fast-v3"]
PAYLOAD_KEYS = ["format", "version", "model_config", "train_config", "state_dict", "info",
                "step", "checksum"]
INFO_KEYS = ["variables", "components", "stats", "dims", "origin", "spacing", "times",
             "heads", "preset", "history"]
ODD_PAYLOAD = st.one_of(json_value, st.sampled_from(
    [1, 2, 3, 4, 5, -1, "4", 4.0, None, [], {}, "stsr-inr-model", "stsr-inr-resume",
     ["rho"], ["rho", "rho"], ["a", "b", "c"], [5, 4, 3], [5, 4], [0, 4, 3], [1e9, 4, 3],
     [1.5, 2.0, 2.5], [2.5, 2.0, 1.5], [float("nan")] * 3, [0.5, 0.25], [0, 0, 0],
     {"kind": "siren"}, {"kind": "stsr"}, {"kind": "nope"}, {"kind": "fast", "width": -1}]))
payload_edit = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PAYLOAD_KEYS), ODD_PAYLOAD),
    st.tuples(st.just("drop"), st.sampled_from(PAYLOAD_KEYS)),
    st.tuples(st.just("info"), st.sampled_from(INFO_KEYS), ODD_PAYLOAD),
    st.tuples(st.just("drop info"), st.sampled_from(INFO_KEYS)),
    st.tuples(st.just("config"), st.sampled_from(["model_config", "train_config"]),
              st.sampled_from(["kind", "width", "heads", "latent_dim", "base", "base_time",
                               "network", "encoding", "levels", "lr", "omega_first",
                               "trunk_widths", "bogus"]), ODD_PAYLOAD),
    st.tuples(st.just("tensor"), st.floats(0, 1, exclude_max=True),
              st.sampled_from(["drop", "shape", "dtype", "nan", "empty", "scalar"])),
    st.tuples(st.just("swap"), st.sampled_from(MODEL_BASES)),
)


def edit_payload(payload: Dict[str, Any], edits: Sequence[Edit],
                 other: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Structured edits of a model payload (a crafted or half-migrated file)."""
    import torch
    for e in edits:
        if e[0] == "set":
            payload[e[1]] = e[2]
        elif e[0] == "drop":
            payload.pop(e[1], None)
        elif e[0] in ("info", "drop info") and isinstance(payload.get("info"), dict):
            if e[0] == "info":
                payload["info"][e[1]] = e[2]
            else:
                payload["info"].pop(e[1], None)
        elif e[0] == "config" and isinstance(payload.get(e[1]), dict):
            payload[e[1]][e[2]] = e[3]
        elif e[0] == "swap":                        # a part of another valid model
            part = ["state_dict", "info", "model_config"][int(len(payload)) % 3]
            payload[part] = other[e[1]][part]
        elif e[0] == "tensor" and isinstance(payload.get("state_dict"), dict) \
                and payload["state_dict"]:
            names = sorted(payload["state_dict"])
            name = names[min(int(e[1] * len(names)), len(names) - 1)]
            t = payload["state_dict"][name]
            if e[2] == "drop":
                del payload["state_dict"][name]
            elif e[2] == "shape":
                payload["state_dict"][name] = torch.zeros(t.numel() + 1)
            elif e[2] == "dtype":
                payload["state_dict"][name] = t.to(torch.float64 if t.is_floating_point()
                                                   else torch.float32)
            elif e[2] == "nan" and t.is_floating_point() and t.numel():
                payload["state_dict"][name] = torch.full_like(t, float("nan"))
            elif e[2] == "empty":
                payload["state_dict"][name] = torch.zeros(0)
            elif e[2] == "scalar":
                payload["state_dict"][name] = torch.tensor(1.0)
    return payload


@settings(max_examples=cases(300))
# found by this test: a step count that is not a number, weights that are not a table, a
# grid that is not one (its error did not name the file)
@example(base="fast", edits=[("set", "step", [1.5, 2.0])], rechecksum=1, data=[], damage=1)
@example(base="fast", edits=[("set", "state_dict", [1, 2])], rechecksum=0, data=[], damage=1)
@example(base="fast", edits=[("info", "dims", [])], rechecksum=1, data=[], damage=1)
# (make fuzz) times that are NaN: the model loaded and predicted NaN
@example(base="fast", edits=[("info", "times", [float("nan")] * 3)], rechecksum=1, data=[],
         damage=1)
# (make fuzz) weights that are NaN: the model loaded and predicted NaN
@example(base="fast", edits=[("tensor", 0.0, "nan")], rechecksum=1, data=[], damage=1)
# (make fuzz) a weight that is a 0-d tensor: the checksum could not read its bytes
@example(base="fast", edits=[("tensor", 0.0, "scalar")], rechecksum=0, data=[], damage=1)
@given(base=st.sampled_from(MODEL_BASES), edits=st.lists(payload_edit, max_size=3),
       rechecksum=st.integers(0, 4), data=byte_edits, damage=st.integers(0, 3))
def test_a_damaged_or_crafted_model_file_loads_or_fails_with_one_clear_error(
        worker, case_root, models, base, edits, rechecksum, data, damage):
    import io

    import torch

    from stsr_core import modelfile
    raw = models[base]
    if edits:
        def load(b: bytes) -> Dict[str, Any]:
            return torch.load(io.BytesIO(b), weights_only=True)
        payload = edit_payload(load(raw), edits, {k: load(v) for k, v in models.items()})
        if rechecksum:                  # mostly a consistent file: the checksum matches
            try:
                payload["checksum"] = modelfile.checksum(payload)
            except Exception:  # noqa: BLE001 - too broken to checksum: written without
                payload.pop("checksum", None)
        buf = io.BytesIO()
        torch.save(payload, buf)
        raw = buf.getvalue()
    if damage == 0:
        raw = apply_bytes(raw, data)
    with Case(case_root) as case:
        path = case.dir / "model.stsr"
        path.write_bytes(raw)
        check(worker, "model", case, "model", path)


# --- stsr fit --set KEY=VALUE: every setting in and out of its range --------------------------
# each preset with settings that keep a fit of the tiny series below a second; the fuzzed
# settings come after them (the last --set of a key wins)
QUICK_BASE = ["--set", "flow_iters=2"]
FIT_PRESETS = {
    "fast": QUICK_BASE,
    "fast network": [*QUICK_BASE, "--set", "network=true"],
    "liif": ["--preset", "liif", *QUICK_BASE, "--set", "learn_steps=3"],
    "siren": ["--preset", "siren", "--set", "width=8"],
    "paper": ["--preset", "paper", "--set", "trunk_widths=8,8,8", "--set", "latent_dim=8",
              "--set", "head_widths=8,8"],
}
FIT_ARGS = ["--quiet", "--device", "cpu", "--steps", "2", "--batch-size", "64"]
# text no user types into a shell (a newline in a value would split its error line)
TYPED = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


def _number_text(x: Any) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def setting_values(name: str, default: Any, inside: bool) -> st.SearchStrategy[str]:
    """Texts for ``--set name=TEXT``: values the setting allows (small ones: a fit of each
    must stay quick) or values it does not (below or above its range, the wrong type, NaN
    and infinity, another word than its choices)."""
    from stsr_core.config import CHOICES, RANGES
    if name in CHOICES:
        allowed = [str(c) for c in CHOICES[name]]
        return st.sampled_from(allowed) if inside else TYPED.filter(
            lambda t: t.strip() not in allowed)
    if isinstance(default, bool):
        words = ["true", "false", "yes", "no", "1", "0"]
        return st.sampled_from(words) if inside else TYPED.filter(
            lambda t: t.strip().lower() not in words)
    r = RANGES.get(name)
    if r is None:                      # kind: the preset's, never set
        return TYPED
    if isinstance(default, tuple):
        items = [setting_values(name, default[0], True)] * len(default)
        if inside:
            return st.tuples(*items).map(",".join)
        bad = st.integers(0, len(default) - 1)
        return st.tuples(bad, setting_values(name, default[0], False), st.tuples(*items)).map(
            lambda b: ",".join(b[1] if i == b[0] else v for i, v in enumerate(b[2])))
    if r.integer:
        lo = -(2 ** 63) if r.lo is None else int(r.lo)
        if inside:
            top = int(r.hi) if r.hi is not None else lo + 3
            return st.integers(lo, min(top, lo + 3) if name != "seed" else top).map(str)
        below = st.integers(max_value=lo - 1) if r.lo is not None else st.nothing()
        return st.one_of(below.map(str), st.sampled_from(["2.5", "1e3", "nan", "inf", "x",
                                                          str(2 ** 64)]))
    lo = -2.0 if r.lo is None else float(r.lo)
    hi = float(r.hi) if r.hi is not None else lo + 2.0
    if inside:
        return st.floats(lo, hi, exclude_min=r.open_lo, exclude_max=r.open_hi).map(_number_text)
    outside = [st.sampled_from(["nan", "inf", "-inf", "1e400", "x"])]
    if r.lo is not None:
        outside.append(st.floats(max_value=lo, exclude_max=not r.open_lo,
                                 allow_nan=False, allow_infinity=False).map(_number_text))
    if r.hi is not None:
        outside.append(st.floats(min_value=hi, exclude_min=not r.open_hi,
                                 allow_nan=False, allow_infinity=False).map(_number_text))
    return st.one_of(outside)


@st.composite
def fit_settings(draw) -> Tuple[str, List[Tuple[str, str, bool]]]:
    """A preset and one to three settings of its configs, each in its range or not."""
    import dataclasses

    from stsr_core.config import TrainConfig, preset
    name = draw(st.sampled_from(sorted(FIT_PRESETS)))
    mcfg, tcfg = preset("liif" if name == "liif" else name.split()[0])
    fields = [(f.name, getattr(cfg, f.name)) for cfg in (mcfg, tcfg)
              for f in dataclasses.fields(cfg)]
    picked = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3,
                           unique_by=lambda f: f[0]))
    out = []
    for key, default in picked:
        inside = key != "kind" and draw(st.booleans())
        out.append((key, draw(setting_values(key, default, inside)), inside))
    assert isinstance(tcfg, TrainConfig)
    return name, out


@pytest.fixture(scope="module")
def fit_series(case_root) -> Path:
    path = case_root / "fit-series.pvd"
    write_series(smooth_series(nx=5, ny=5, nz=5, nt=3), str(path))
    return path


@settings(max_examples=cases(40))
# (make fuzz) the decoder's sizes were not passed to its training: any but the defaults failed
@example(case=("liif", [("learn_features", "1", True)]))
# (make fuzz) a latent_sigma whose square underflows: the KL term took log(0)
@example(case=("paper", [("latent_sigma", "5e-324", True)]))
# (make fuzz) a sine layer's frequency so small that its initial weights overflowed: the
# omegas' range is [0.001, 1000] now
@example(case=("paper", [("omega_trunk", "5e-324", False)]))
@given(case=fit_settings())
def test_every_set_value_fits_or_is_one_error_line_naming_the_setting(worker, fit_series,
                                                                      case):
    name, chosen = case
    args = [*FIT_ARGS, *FIT_PRESETS[name]]
    for key, text, _ in chosen:
        args += ["--set", f"{key}={text}"]
    worker.cases["--set"] += 1
    r = worker.ask("fit", fit_series, args=args)
    worker.outcomes[f"--set fit: {r['outcome']}"] += 1
    bad = [key for key, _, inside in chosen if not inside]
    what = f"stsr fit {' '.join(args)}"
    if bad or r["outcome"] != "ok":
        # out of range: refused; in range: a model, or a combination refused (heads=8 with
        # the spline base, learn with a network), naming what to change
        named = bad or [key for key, _, _ in chosen]
        assert r["outcome"] == "error", f"{what}: {r}"
        assert "\n" not in r["message"].strip(), f"{what}: a multi-line error {r}"
        assert any(k in r["message"] for k in named), f"{what}: names none of {named}: {r}"
