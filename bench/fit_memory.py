"""What ``stsr fit`` costs at real size: wall time and peak RSS of the fit as a child process
(os.wait4's ru_maxrss), optionally under an address-space limit (RLIMIT_AS, as a user's
``ulimit -v`` would set), for any source tree (this one, or a copy of another commit to
compare with), and the model file's size.

    python -m bench.fit_memory INPUT --label NAME [--src TREE] [--limit-gb 16]
                               [--set KEY=VALUE ...] --out RESULTS.json

Appends one record to RESULTS.json (a list) and prints it; the model goes to a scratch folder
beside INPUT and is removed unless --keep-model. Run it under ``flock
/work/team/bench.lock`` for figures to report.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fit(src: str, input_path: str, model: str, limit_bytes: Optional[int],
            extra: Sequence[str], log_path: str) -> Dict[str, Any]:
    """``stsr fit`` of ``src``'s stsr_core as a child: seconds, peak RSS, exit status."""
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-m", "stsr_core.cli", "fit", input_path, "-o", model,
           "--device", "cpu", "--quiet", "--overwrite", "--seed", "0", *extra]

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=src, env=env,
                                preexec_fn=limit)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    tail = open(log_path, errors="replace").read().strip().splitlines()[-4:]
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 3),
            "rc": os.waitstatus_to_exitcode(status), "log_tail": tail}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input")
    p.add_argument("--label", required=True, help="what is measured (e.g. 'main', 'streamed')")
    p.add_argument("--src", default=ROOT, help="the source tree whose stsr_core runs")
    p.add_argument("--limit-gb", type=float, help="RLIMIT_AS of the child, GiB")
    p.add_argument("--set", action="append", default=[], help="stsr fit --set KEY=VALUE")
    p.add_argument("--max-minutes", help="stsr fit --max-minutes (default: the preset's)")
    p.add_argument("--keep-model", action="store_true")
    p.add_argument("--out", required=True, help="results JSON (a list, appended to)")
    a = p.parse_args(argv)
    scratch = os.path.join(os.path.dirname(os.path.abspath(a.input)), "fit-memory")
    os.makedirs(scratch, exist_ok=True)
    model = os.path.join(scratch, f"{a.label}.stsr")
    extra: List[str] = [x for kv in a.set for x in ("--set", kv)]
    if a.max_minutes:
        extra += ["--max-minutes", a.max_minutes]
    limit = None if a.limit_gb is None else int(a.limit_gb * 1024 ** 3)
    commit = subprocess.run(["git", "-C", a.src, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or None
    r = run_fit(a.src, a.input, model, limit, extra, os.path.join(scratch, f"{a.label}.log"))
    size = os.path.getsize(model) if r["rc"] == 0 and os.path.exists(model) else None
    rec = {"label": a.label, "input": a.input, "input_bytes_file": os.path.getsize(a.input),
           "src": a.src, "commit": commit, "limit_gb": a.limit_gb, "set": a.set,
           "max_minutes": a.max_minutes,
           "model_bytes": size, "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{platform.node()} {os.cpu_count()} cores", **r}
    if not a.keep_model and os.path.exists(model):
        os.remove(model)
    out: List[Dict[str, Any]] = []
    if os.path.exists(a.out):
        with open(a.out) as fh:
            out = json.load(fh)
    out.append(rec)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(a.out + ".tmp", a.out)
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
