"""The CLI as child processes, measured: each run alone through a small launcher, its wall
time and its own peak RSS; this tree's stsr_core first on the children's path."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import ROOT


def child_env() -> Dict[str, str]:
    """This tree first on the path: the venv's ``stsr`` may be an editable install of
    another checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def stsr_cmd() -> List[str]:
    return [sys.executable, "-m", "stsr_core.cli"]


# Peak RSS comes from wait4's ru_maxrss, but Linux carries the forking process's high-water
# mark into the child across exec: forked from this process (torch and data loaded) every
# child would report at least our size. So children are started by a small launcher
# process (plain Python, ~10 MB) started before anything big is loaded.
LAUNCHER = r"""
import json, os, signal, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "a") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], stdout=log, stderr=subprocess.STDOUT,
                                cwd=job["cwd"], env=job["env"], start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if job["timeout"] is not None and time.perf_counter() - t0 > job["timeout"]:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": seconds, "maxrss_kb": usage.ru_maxrss,
                      "rc": proc.returncode, "timed_out": timed_out}), flush=True)
"""
_launcher: Optional[subprocess.Popen] = None


def start_launcher() -> None:
    """Start the launcher now, while this process is small (see LAUNCHER)."""
    global _launcher
    if _launcher is None:
        _launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)


def run_child(cmd: Sequence[str], log_path: str, timeout_s: Optional[float] = None,
              env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run one child, alone, through the launcher, and measure it: wall seconds and its own
    peak RSS (wait4's ru_maxrss, KiB on Linux). A timeout kills its process group and says
    so; a failure keeps the log's tail."""
    start_launcher()
    assert _launcher is not None and _launcher.stdin and _launcher.stdout
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
    _launcher.stdin.write(json.dumps({"cmd": list(cmd), "log": log_path, "cwd": ROOT,
                                      "env": {**child_env(), **(env or {})},
                                      "timeout": timeout_s}) + "\n")
    _launcher.stdin.flush()
    r = json.loads(_launcher.stdout.readline())
    rc = r["rc"]
    tail = open(log_path, errors="replace").read()[-600:]
    return {"seconds": r["seconds"], "max_rss_mb": r["maxrss_kb"] / 1024.0, "rc": rc,
            "timed_out": r["timed_out"], "log": log_path,
            **({"error": tail.strip()} if rc != 0 else {})}


def cli_formats() -> List[str]:
    """The output formats ``stsr upscale --help`` offers (probed: the CLI is changing)."""
    r = subprocess.run(stsr_cmd() + ["upscale", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env=child_env())
    m = re.search(r"--format \{([^}]*)\}", r.stdout)
    return m.group(1).split(",") if m else []


def folder_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
