"""What the fuzz tests share (tests/test_fuzz.py: the readers, the model loader and
``stsr fit --set``; tests/test_paraview.py: the plugin's numeric properties): the
Hypothesis profiles and a worker process that runs each case apart from the test, so that a
crash of VTK, HDF5 or torch, or a hang, is reported as a failing case.

Profiles (STSR_FUZZ_PROFILE): ``ci`` (default, in ``make test``): a few hundred cases per
reader, derandomized (the same cases every run); ``long`` (``make fuzz``): 20x as many, a
new random draw each run."""
from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much,
                                      HealthCheck.function_scoped_fixture])
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("long", derandomize=False, **_COMMON)
PROFILE = os.environ.get("STSR_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = {"ci": 1, "long": 20}[PROFILE]
# a case that takes longer than this in the worker is a hang (the first one pays imports)
CASE_TIMEOUT_S = 60


def cases(n: int) -> int:
    """Examples per test: ``n`` in make test, SCALE times that in make fuzz."""
    return n * SCALE


class Worker:
    """A process that answers one JSON line per JSON line it is sent (by default
    tests/fuzz_worker.py in this Python; ``argv``: another, e.g. a pvpython script),
    restarted after a crash or a hang; counts the cases per reader (or other subject)."""

    def __init__(self, log: Path, argv: Optional[Sequence[str]] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.log = log
        self.argv = list(argv or [sys.executable, str(ROOT / "tests" / "fuzz_worker.py")])
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = env or dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
        self.proc: Optional[subprocess.Popen] = None
        self.cases: Dict[str, int] = collections.Counter()       # per reader
        self.seen: Dict[str, set] = {}                            # its case folders
        self.outcomes: Dict[str, int] = collections.Counter()    # per reader, call, outcome

    def _start(self) -> subprocess.Popen:
        with open(self.log, "ab") as log:
            return subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, env=self.env, text=True)

    def ask(self, op: str, path: Path, arrays: Optional[Sequence[str]] = None,
            **request: Any) -> Dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"op": op, "path": str(path), "arrays": arrays,
                                         **request}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([proc.stdout], [], [], CASE_TIMEOUT_S)
        if not ready:
            self.stop()
            return {"outcome": "hang", "why": f"no answer in {CASE_TIMEOUT_S} s"}
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait()
            self.proc = None
            tail = self.log.read_text(errors="replace")[-1500:]
            return {"outcome": "crash", "why": f"the worker process died (exit status "
                                               f"{rc}); its stderr ends: {tail}"}
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def write_report(worker: Worker) -> None:
    """Add the worker's counts to STSR_FUZZ_REPORT's file, if set (tests/fuzz_report.py
    prints it after ``make fuzz``)."""
    path = os.environ.get("STSR_FUZZ_REPORT")
    if not path:
        return
    report = json.loads(Path(path).read_text()) if Path(path).exists() else \
        {"cases": {}, "outcomes": {}}
    report["cases"].update(worker.cases)
    report["outcomes"].update(worker.outcomes)
    Path(path).write_text(json.dumps(report, indent=1, sort_keys=True))
