"""A real process's own peak RSS, whatever the size of the test process that starts it.

wait4's ru_maxrss of a child counts the high-water mark of the memory it started in: Linux
carries the forking process's into the child across exec, and Python starts children with
vfork where it can, which shares the parent's memory until the exec. A child of a pytest
process that has grown to 1 GB after other tests then reports at least 1 GB, whatever it
used itself. So the child is started by a small launcher (a fresh Python without torch,
about 10 MB) that forks it and reports its ru_maxrss (as bench/scale/children.py does for
the benchmarks)."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Dict, Optional, Sequence, Tuple

LAUNCHER = r"""
import json, os, resource, subprocess, sys
job = json.loads(sys.stdin.read())
def limited():
    if job["address_limit"]:
        resource.setrlimit(resource.RLIMIT_AS, (job["address_limit"], job["address_limit"]))
proc = subprocess.Popen(job["cmd"], env=job["env"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, preexec_fn=limited)
err = proc.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "stderr": err,
                  "peak": usage.ru_maxrss * 1024}))
"""


def run_with_peak(cmd: Sequence[str], env: Dict[str, str],
                  address_limit: Optional[int] = None, timeout: float = 600
                  ) -> Tuple[int, str, int]:
    """(exit status, stderr, peak resident bytes) of ``cmd`` run to its end, under an
    address-space limit (RLIMIT_AS, bytes) when given."""
    job = {"cmd": [str(c) for c in cmd], "env": env, "address_limit": address_limit}
    r = subprocess.run([sys.executable, "-c", LAUNCHER], input=json.dumps(job),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["rc"], got["stderr"], got["peak"]
