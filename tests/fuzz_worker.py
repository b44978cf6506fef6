"""The process the fuzz tests (tests/test_fuzz.py) read their mutated files in.

Readers parse files in C libraries (VTK's XML reader, HDF5, torch's zip reader): a
segmentation fault or an abort there would end the test run itself, and an allocation
sized by a damaged header could take the machine's memory. So the cases run here, one
after the other in one process (imports are paid once), with an address-space limit; the
test process sends a request per case as a JSON line and reads the outcome back:

    {"op": "series" | "stream" | "vti" | "model", "path": "...", "arrays": null | [...]}
    {"op": "fit", "path": "a series", "args": ["--set", "KEY=VALUE", ...]}
 -> {"outcome": "ok" | "error" | "bug" | "invalid", ...}

``error``: the project's StsrError (its message); ``bug``: any other exception (its
traceback); ``invalid``: a result that breaks the reader's promise. If this process dies
or stops answering, the test process sees it and reports the case.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any, Dict, Optional, Sequence

# a damaged header may ask for terabytes: fail that allocation, not the machine (3 GB of
# address space beyond what the libraries map: PyPI's CUDA torch on Debian 13 maps more
# than 3 GB by itself)
MEMORY_LIMIT = 3 << 30


def _address_space() -> int:
    """Bytes of address space this process has mapped (VmSize), after the imports."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _series(path: str, arrays: Optional[Sequence[str]]) -> Dict[str, Any]:
    from stsr_core.io import read_series
    from stsr_core.errors import StsrError
    s = read_series(path, arrays)
    try:
        s.grid                                     # dims >= 1 each
    except StsrError as exc:
        return {"outcome": "invalid", "why": f"the series read has no valid grid: {exc}"}
    return {"names": s.names, "dims": list(s.dims), "n_times": s.n_times}


def _valid_layout(r) -> str:
    """Why a stream reader's grid and times break what VolumeSeries promises ('' if not)."""
    import numpy as np
    g, t = r.grid, r.times
    if not all(np.isfinite(v) and v > 0 for v in g.spacing) \
            or not all(np.isfinite(v) for v in g.origin):
        return f"grid {g.text()}"
    if t.ndim != 1 or t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        return f"times {t.tolist()[:10]}"
    if not r.variables:
        return "no variables"
    return ""


def _stream(path: str, arrays: Optional[Sequence[str]]) -> Dict[str, Any]:
    import numpy as np
    from stsr_core.io import open_series_reader
    r = open_series_reader(path, arrays)
    bad = _valid_layout(r)
    if bad:
        return {"outcome": "invalid", "why": f"the reader opened with {bad}"}
    for i in range(r.n_times):
        step = r.read_step(i)
        if sorted(step) != sorted(r.variables):
            return {"outcome": "invalid", "why": f"step {i} has {sorted(step)}, the reader "
                                                 f"announced {sorted(r.variables)}"}
        for n, a in step.items():
            if a.shape != r.grid.shape or a.dtype != np.float32:
                return {"outcome": "invalid", "why": f"step {i} array {n}: {a.shape} "
                                                     f"{a.dtype}, grid {r.grid.shape}"}
    return {"names": list(r.variables), "n_times": r.n_times}


def _vti(path: str, arrays: Optional[Sequence[str]]) -> Dict[str, Any]:
    from stsr_core.io.vti import read_vti
    f = read_vti(path, arrays)
    for n, a in f.arrays.items():
        if a.shape[:3] != f.grid.shape:
            return {"outcome": "invalid", "why": f"array {n}: {a.shape}, grid {f.grid.shape}"}
    return {"names": sorted(f.arrays)}


def _model(path: str, arrays: Optional[Sequence[str]]) -> Dict[str, Any]:
    """Loaded means usable: the model answers a query on its own grid at its first time."""
    import numpy as np
    from stsr_core import api
    tm = api.load_model(path, device="cpu")
    vals = api.predict_timestep(tm, tm.info.times[0], tm.info.grid)
    if vals is None or sorted(vals) != sorted(tm.info.variables):
        return {"outcome": "invalid", "why": f"predicted {None if vals is None else sorted(vals)}"
                                             f" for variables {tm.info.variables}"}
    for n, a in vals.items():
        if a.shape != tm.info.grid.shape:
            return {"outcome": "invalid", "why": f"{n}: {a.shape}, grid {tm.info.grid.shape}"}
        if not np.all(np.isfinite(a)):
            return {"outcome": "invalid", "why": f"{n}: NaN/Inf predicted"}
    return {"variables": list(tm.info.variables), "preset": tm.info.preset}


def _fit(path: str, args: Sequence[str]) -> Dict[str, Any]:
    """``stsr fit PATH -o MODEL ARGS`` through the CLI's own main: exit status 0 and a model
    that loads and answers (ok), or 2 with one last line ``stsr: error: ...`` (raised here
    as that error); anything else is invalid (a traceback would have come as an exception)."""
    import contextlib
    import io
    import tempfile
    from stsr_core import cli
    from stsr_core.errors import StsrError
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "m.stsr")
        text = io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            code = cli.main(["fit", path, "-o", model, *args])
        lines = text.getvalue().strip().splitlines()
        if code == 2 and lines and lines[-1].startswith("stsr: error: "):
            raise StsrError(lines[-1][len("stsr: error: "):])
        if code != 0:
            return {"outcome": "invalid", "why": f"exit status {code}: {lines[-3:]}"}
        return _model(model, None)


OPS = {"series": _series, "stream": _stream, "vti": _vti, "model": _model}


def handle(request: Dict[str, Any]) -> Dict[str, Any]:
    from stsr_core.errors import StsrError
    try:
        if request["op"] == "fit":
            result = _fit(request["path"], request["args"])
        else:
            result = OPS[request["op"]](request["path"], request.get("arrays"))
    except StsrError as exc:
        return {"outcome": "error", "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - what the fuzz tests are looking for
        return {"outcome": "bug", "type": type(exc).__name__,
                "traceback": traceback.format_exc(limit=-8)}
    result.setdefault("outcome", "ok")
    return result


def main() -> None:
    # answers go to a private copy of stdout; C libraries' prints go to stderr
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import torch
    torch.set_num_threads(1)
    from stsr_core.io import hdf5, netcdf, vti
    for load in (vti._vtk, hdf5._h5py, netcdf._netcdf4):    # the readers' libraries, mapped
        try:                                                # before the limit
            load()
        except Exception:  # noqa: BLE001 - a reader without its library says so per case
            pass
    limit = _address_space() + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for line in sys.stdin:
        answers.write(json.dumps(handle(json.loads(line))) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
