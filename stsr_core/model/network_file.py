"""Writing a shipped network's files (side_weights.py, space_prior.py): the weights and their
provenance, each to a temp file renamed into place, so a killed training leaves the files as
they were."""
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
