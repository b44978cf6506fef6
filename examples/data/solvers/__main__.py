"""``python -m examples.data.solvers NAME [NAME ...] --out bench/data``: make benchmark series
from solvers the project did not write (see __init__.py), each cached as ``NAME.h5`` with a
stamp ``NAME.json``; ``--force`` remakes them, ``--list`` says what each one is."""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np

from ..generated.__main__ import stamped, write_stamp
from . import SERIES
from .fields import vorticity_magnitude

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DATA_VENV = os.path.join(ROOT, ".venv-data")
REQUIREMENTS = os.path.join(ROOT, "examples", "data", "requirements-gen.txt")


def data_python() -> str:
    """The data venv's python, made from requirements-gen.txt when missing."""
    py = os.path.join(DATA_VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"making {DATA_VENV} (solvers from {REQUIREMENTS})", flush=True)
        subprocess.run(["python3", "-m", "venv", DATA_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], check=True)
    return py


def source_hash(name: str) -> str:
    """sha256 of the code that makes ``name``: its solver's script and the conversion
    (to_series, fields.py), not the rest of this driver."""
    s = SERIES[name]
    h = hashlib.sha256(inspect.getsource(to_series).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for f in [os.path.join(here, "fields.py"), os.path.join(here, "pde_run.py")] + (
            [os.path.join(ROOT, s.script)] if s.script else []):
        with open(f, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def to_series(name: str, frames: Dict[str, np.ndarray]):
    """The solver's frames as a VolumeSeries in physical units of its own."""
    from stsr_core.series import VolumeSeries
    components = {}
    if name == "plume63" or name == "wake":
        if name == "plume63":             # generate_plume.py's frames: cell size 1
            variables = {"smoke": frames["smoke"], "velocity_0": frames["vx"],
                         "velocity_1": frames["vy"], "velocity_2": frames["vz"],
                         "pressure": frames["pressure"]}
            h = 1.0
        else:
            variables = {k: frames[k] for k in ("velocity_0", "velocity_1", "velocity_2",
                                                "pressure")}
            h = float(frames["spacing"])
        variables["vorticity_magnitude"] = vorticity_magnitude(
            variables["velocity_0"], variables["velocity_1"], variables["velocity_2"], h)
        components = {"velocity": ["velocity_0", "velocity_1", "velocity_2"]}
    else:
        variables = {k: frames[k] for k in ("u", "v", "reaction")}
        h = float(frames["spacing"])
    return VolumeSeries(times=np.asarray(frames["times"], dtype=np.float64),
                        variables=variables, origin=(0.5 * h,) * 3, spacing=(h,) * 3,
                        components=components, source=f"solver:{name}")


def make(name: str, out: str, force: bool = False) -> Dict[str, object]:
    """Make ``out/NAME.h5`` unless its stamp says it is there; returns the stamp."""
    from stsr_core.io import read_series, write_series
    s = SERIES[name]
    path = os.path.join(out, f"{name}.h5")
    stamp_path = os.path.join(out, f"{name}.json")
    wanted = {"name": name, "script": s.script, "args": s.args,
              "derived_from": s.derived_from, "source_sha256": source_hash(name)}
    stamp = None if force or not os.path.exists(path) else stamped(stamp_path, wanted)
    if stamp is not None:
        return stamp
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    if s.derived_from:
        source = make(s.derived_from, out, force=False)
        series = read_series(str(source["path"])).subsample(space=2)
        info = {k: source[k] for k in ("solver", "parameters") if k in source}
    else:
        npz = os.path.join(out, f".{name}.npz")
        module = s.script[:-3].replace("/", ".")           # this package's: run with -m
        run = (["-m", module] if module.startswith(__package__ + ".") else
               [os.path.join(ROOT, s.script)])
        subprocess.run([data_python(), *run, *s.args, "--out", npz], check=True, cwd=ROOT)
        with np.load(npz) as d:
            frames = {k: d[k] for k in d.files}
        info = {"solver": str(frames.get("solver", frames.get("phiflow", ""))),
                "parameters": str(frames.get("parameters", " ".join(s.args)))}
        if name == "plume63":
            info["solver"] = f"phiflow {frames['phiflow']}"
        series = to_series(name, frames)
        os.remove(npz)
    write_series(series, path, overwrite=True)
    stamp = dict(wanted, path=path, dims=list(series.dims), steps=series.n_times,
                 variables=series.names, seconds=round(time.perf_counter() - t0, 1), **info)
    write_stamp(stamp_path, stamp)
    return stamp


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.data.solvers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"any of {', '.join(SERIES)} (default: all)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "data"))
    p.add_argument("--force", action="store_true", help="remake even if stamped")
    p.add_argument("--list", action="store_true", help="say what each series is")
    a = p.parse_args(argv)
    if a.list:
        for n, s in SERIES.items():
            print(f"{n:<12s} {s.solver:<8s} {s.what}")
        return 0
    unknown = [n for n in a.names if n not in SERIES]
    if unknown:
        p.error(f"unknown series {unknown}: choose from {', '.join(SERIES)}")
    for n in a.names or list(SERIES):
        print(json.dumps(make(n, a.out, a.force)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
