"""The model file: one torch file (``.stsr``, any name works) holding everything needed to
answer queries without the original data.

Layout (a plain dict, loaded with ``torch.load(weights_only=True)`` so that opening a model
file never runs code):

    format: "stsr-inr-model"     version: FORMAT_VERSION (int)
    model_config: dict (kind + fields of the model's config dataclass)
    train_config: dict
    state_dict: the network's tensors (latent codes included, as ``latent_mu``)
    info: dict -- variables, components, normalisation stats (lo/hi per variable),
          dims, origin, spacing, times, heads, preset, training history
    optimizer: optimiser state (only in checkpoints, for --resume), step: int

Writes go to a temporary file in the target folder and are renamed over the target, so an
interrupted save never leaves a half-written model behind.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict

import torch

from .errors import StsrError

FORMAT_NAME = "stsr-inr-model"
FORMAT_VERSION = 3   # 2: fast models gained the spline base; 3: its time interpolation


def write_atomic(path: str, payload: Dict[str, Any]) -> None:
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise StsrError(f"cannot write model '{path}': folder '{folder}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".stsr", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise StsrError(f"model file '{path}' does not exist")
    if os.path.isdir(path):
        raise StsrError(f"model file '{path}' is a folder, not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise StsrError(
            f"'{path}' is not a readable stsr model file (damaged or another format): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise StsrError(f"'{path}' is not an stsr model file")
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise StsrError(
            f"model file '{path}' has format version {version}; this stsr reads version "
            f"{FORMAT_VERSION} (retrain, or use the stsr version that wrote it)"
        )
    for key in ("model_config", "train_config", "state_dict", "info"):
        if key not in payload:
            raise StsrError(f"model file '{path}' is incomplete: no '{key}'")
    return payload
