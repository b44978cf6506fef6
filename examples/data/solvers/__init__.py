"""Benchmark series from solvers the project did not write (issue 30), made by script and
cached, never committed (hundreds of MB):

    python -m examples.data.solvers NAME --out bench/data       # the project's venv

runs the solver in the data venv (``.venv-data``: PyPI's ``py-pde``, ``lbmpy`` and
``phiflow`` as examples/data/requirements-gen.txt pins them; made on first use, as
examples/data/make_all.sh does: they may pull numpy 2, which must not enter the project's
venv), converts its frames to the project's HDF5 layout (``NAME.h5``) with a stamp
(``NAME.json``: solver, version, parameters, arguments, a hash of the scripts, seconds);
a rerun with the same arguments and scripts skips the work.

Each series is a module here with the solver's equations and parameters in its docstring;
the plume reuses the shipped plume's script (examples/data/plume/generate_plume.py) at a
larger size. Derived series (``excitable49``: every 2nd point of ``excitable97``) are cut
from their source's file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass(frozen=True)
class SolverSeries:
    """One benchmark series made by a solver."""

    script: str                    # the simulation, run by the data venv's python
    args: List[str]                # its arguments (besides --out)
    solver: str                    # the PyPI package that solves it
    what: str                      # one line: the physics
    derived_from: Optional[str] = None   # cut from another series' file (every 2nd point)
    extra: Dict[str, str] = field(default_factory=dict)


SERIES: Dict[str, SolverSeries] = {
    "patterns": SolverSeries(
        "examples/data/solvers/patterns.py", ["--n", "49", "--frames", "21"], "py-pde",
        "reaction-diffusion (Brusselator) Turing patterns forming and rearranging, 49^3 x 21"),
    "excitable97": SolverSeries(
        "examples/data/solvers/excitable.py", ["--n", "97", "--frames", "25"], "py-pde",
        "fronts in an excitable medium (FitzHugh-Nagumo): a broken wave curling into a "
        "scroll, expanding pulses meeting, 97^3 x 25"),
    "excitable49": SolverSeries(
        "", [], "py-pde", "the same fronts at every 2nd point, 49^3 x 25",
        derived_from="excitable97"),
    "plume63": SolverSeries(
        "examples/data/plume/generate_plume.py",
        ["simulate", "--n", "63", "--frames", "41", "--every", "2", "--warmup", "12"],
        "phiflow", "a buoyant smoke plume (incompressible Euler + Boussinesq), 63^3 x 41"),
    "wake": SolverSeries(
        "examples/data/solvers/wake.py", [], "lbmpy",
        "the wake of a wavy cylinder (lattice Boltzmann, Re 200), vortices moving about half "
        "a shedding period between kept steps, 159 x 63 x 63 x 49"),
}
