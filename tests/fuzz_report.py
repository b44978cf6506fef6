"""``make fuzz``: the fuzz tests (tests/test_fuzz.py: the readers, the model loader and
``stsr fit --set``; the plugin's numeric properties in tests/test_paraview.py, where
ParaView is installed) with the long Hypothesis profile -- thousands of cases per reader, a
new random draw each run -- then the cases tried per reader and how they ended. Extra
arguments go to pytest (e.g. ``-k hdf5``); STSR_FUZZ_PROFILE=ci runs the short,
derandomized profile of ``make test`` instead."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READERS = {"vti": ".vti (read_series, step reader)", "pvd": ".pvd / folder of .vti",
           "h5": "HDF5", "raw": "raw + JSON", "model": "model files (load_model)",
           "--set": "stsr fit --set KEY=VALUE", "properties": "the plugin's numeric properties"}
PLUGIN_FUZZ = ("tests/test_paraview.py::"
               "test_each_numeric_property_gives_an_output_or_one_error_naming_its_range")


def main(argv: list) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, STSR_FUZZ_REPORT=str(report),
                   STSR_FUZZ_PROFILE=os.environ.get("STSR_FUZZ_PROFILE", "long"))
        start = time.perf_counter()
        plugin = [PLUGIN_FUZZ] if shutil.which("pvpython") and not argv else []
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              str(ROOT / "tests" / "test_fuzz.py"), *plugin, *argv], cwd=ROOT,
                             env=env)
        seconds = time.perf_counter() - start
        if not report.exists():
            print("fuzz: no report (the tests did not run)", file=sys.stderr)
            return rc or 1
        data = json.loads(report.read_text())
    print(f"\nfuzz cases tried per reader (profile {env['STSR_FUZZ_PROFILE']}, "
          f"{seconds:.0f} s; each case reads its file with every call listed):")
    for reader, cases in sorted(data["cases"].items()):
        calls = {k.split(": ")[0].split(" ", 1)[1]: {} for k in data["outcomes"]
                 if k.startswith(reader + " ")}
        for k, n in data["outcomes"].items():
            name, outcome = k.split(": ")
            if name.startswith(reader + " "):
                calls[name.split(" ", 1)[1]][outcome] = n
        detail = "; ".join(f"{call}: " + ", ".join(f"{n} {o}" for o, n in sorted(c.items()))
                           for call, c in sorted(calls.items()))
        print(f"  {READERS.get(reader, reader):34s} {cases:6d}   ({detail})")
    print("fuzz: " + ("all cases held the property" if rc == 0 else "FAILED (see above)"))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
