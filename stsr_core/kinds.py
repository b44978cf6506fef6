"""The model kinds a config's ``kind`` names, built: model/'s networks, and for the fast kind
with ``learn=true`` learned/'s CorrectedFastNet. It sits above both, so that model/ never
imports learned/ (which builds on model/'s spline base)."""
from __future__ import annotations

from .learned.corrected import CorrectedFastNet
from .model import FieldModel, FieldSpec
from .model.coordnet import SirenNet
from .model.fast import FastNet
from .model.stsr import STSRNet


def build_model(cfg, spec: FieldSpec) -> FieldModel:
    """Instantiate the network a config describes."""
    kind = cfg.kind
    if kind == "stsr":
        return STSRNet(cfg, spec)
    if kind == "siren":
        return SirenNet(cfg, spec)
    if kind == "fast":
        return CorrectedFastNet(cfg, spec) if cfg.learn else FastNet(cfg, spec)
    raise ValueError(f"unknown model kind {kind!r}")
