"""Per-variable normalisation that can be undone.

Values are mapped to [-1, 1] with each variable's min/max over the whole series; the
statistics are stored in the model file so that every output is in the input's physical
units (the reference implementation normalises each volume by its own range and discards it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .series import VolumeSeries


@dataclass
class VariableStats:
    lo: float
    hi: float

    @property
    def half_range(self) -> float:
        """Scale of the map; a constant variable gets 1 so nothing divides by zero (its
        normalised values are all -1)."""
        return (self.hi - self.lo) / 2.0 if self.hi > self.lo else 1.0

    def normalise(self, a: np.ndarray) -> np.ndarray:
        return ((a - self.lo) / self.half_range - 1.0).astype(np.float32)

    def denormalise(self, y):
        """Works on numpy arrays and torch tensors alike. A constant variable is restored
        exactly (the network's output for it carries no information)."""
        if self.hi <= self.lo:
            return y * 0.0 + self.lo
        return (y + 1.0) * self.half_range + self.lo


def compute_stats(series: VolumeSeries) -> Dict[str, VariableStats]:
    out = {}
    for name, arr in series.variables.items():
        out[name] = VariableStats(float(arr.min()), float(arr.max()))
    return out


def stats_to_lists(stats: Dict[str, VariableStats], names: List[str]) -> Dict[str, List[float]]:
    return {"lo": [stats[n].lo for n in names], "hi": [stats[n].hi for n in names]}


def stats_from_lists(d: Dict[str, List[float]], names: List[str]) -> Dict[str, VariableStats]:
    return {n: VariableStats(float(lo), float(hi)) for n, lo, hi in zip(names, d["lo"], d["hi"])}
