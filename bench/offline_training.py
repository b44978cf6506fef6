"""What the offline training scripts of the shipped networks (bench/train_side_weights.py,
train_time_refine.py, train_space_prior.py) share on their command line and in their
record: the seed-list syntax and the provenance's common fields, so every weights file says
the same things about how it was made."""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch


def seed_list(text: str) -> List[int]:
    """``0-47,100`` -> [0, 1, ..., 47, 100]."""
    out: List[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def provenance(what: str, module: str, argv: Optional[Sequence[str]], data: str,
               fields: Dict[str, Any]) -> Dict[str, Any]:
    """The provenance JSON of a weights file: ``what`` it holds, the command that made it
    (``python -m module`` with ``argv``; None: this process's arguments), the ``data`` it
    was trained on, the script's own ``fields`` (seeds, settings, scores, seconds), then
    the machine and the date."""
    args = argv if argv is not None else sys.argv[1:]
    return {"what": what, "command": f"python -m {module} " + " ".join(args), "data": data,
            **fields,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "written": time.strftime("%Y-%m-%d")}
