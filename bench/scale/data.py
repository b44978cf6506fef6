"""The cases' coarse input: examples/data/scale/generate.py (the field and the cases), its
output generated once per case and reused."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import asdict
from typing import Any, Optional, Tuple

from . import ROOT

GEN_PATH = os.path.join(ROOT, "examples", "data", "scale", "generate.py")


def gen_module():
    """examples/data/scale/generate.py (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("scale_generate", GEN_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scale_generate"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod

def ensure_data(gen: Any, case: Any, data_dir: str) -> Tuple[str, Optional[float]]:
    """The case's coarse input (reused when already generated for the same case);
    (path, seconds spent generating or None when reused)."""
    folder = os.path.join(data_dir, "x".join(map(str, case.fine)) +
                          f"-t{case.steps}-s{case.space}-k{case.time}-seed{case.seed}")
    path = os.path.join(folder, "coarse.h5")
    stamp = os.path.join(folder, "case.json")
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as fh:
            if json.load(fh).get("case") == asdict(case):
                return path, None
    os.makedirs(folder, exist_ok=True)
    info = gen.write_coarse(case, path)
    with open(stamp, "w") as fh:
        json.dump({"case": asdict(case), "coarse": info}, fh)
    return path, float(info["seconds"])
