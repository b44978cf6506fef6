"""A shipped network's files (side_weights.py, time_refine.py, space_prior.py): writing the
weights and their provenance, each to a temp file renamed into place, so a killed training
leaves the files as they were; and reading the weights back, checked, without any download."""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, Optional

import torch
from torch import nn


def save_network(net: nn.Module, path: str, fmt: str,
                 provenance: Optional[Dict[str, Any]] = None) -> None:
    """``net``'s weights (with its ``settings()`` and the file format ``fmt``) to ``path``,
    and ``provenance`` (if given) to ``path`` with .json."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {"format": fmt, "version": 1, "settings": net.settings(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in
                              net.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    files = [(path, buf.getvalue())]
    if provenance is not None:
        files.append((os.path.splitext(path)[0] + ".json",
                      (json.dumps(provenance, indent=1) + "\n").encode()))
    for target, data in files:
        with open(target + ".tmp", "wb") as fh:
            fh.write(data)
        os.replace(target + ".tmp", target)


def read_network(path: str, fmt: str, what: str) -> Dict[str, Any]:
    """The payload save_network wrote to ``path`` (format, settings, state_dict), read on the
    CPU with tensors only; refused when missing (the package installed without its weights:
    nothing is downloaded) or of another format than ``fmt`` (``what``: the network's name
    in the messages)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} weights at {path}: the package was installed "
                                "without its weights (reinstall it; nothing is downloaded)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} weights file "
                         f"(format {payload.get('format')!r})")
    return payload
