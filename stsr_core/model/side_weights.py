"""A small network weighing the two sides between kept steps per point (issue 25's prior).

Between kept steps K_j and K_{j+1} the motion-compensated base blends the earlier side
(K_j looked up where the path through a point was at K_j) and the later side with weights
1 - w and w. Which side is right differs by place: a feature that appears, fades or is
hidden is seen by one side only, and a front that propagates is followed better from one
side than the other. Measured with the truth (time only, every 4th step kept): choosing per
voxel the better side would gain 2.5 dB between steps on propagating fronts and spiral waves
and 0.6 dB on reaction-diffusion, while no fixed rule helps everywhere. So the weight comes
from what both sides say locally:

    weight of the earlier side = sigmoid(logit(1 - w) + net(features))

with features per variable on a lattice ``stride`` times coarser than the data's (its
cost; :func:`side_features`), the same small MLP for every variable (variables differ in
number and kind between data sets), plus features shared by all: their mean disagreement
(variables move together) and how far outside the box each side was looked up (what enters
the box is seen by the later side only, what leaves by the earlier one: on the training
series that feature carries most of what the network gains). A net that outputs 0 gives
today's 1 - w.

Trained offline by bench/train_side_weights.py on generated series with their full-rate
truth (examples/data/training_families.py: kinds unlike the benchmark's); the weights ship
inside the package (``weights/side_weights_v1.pt``, provenance beside it in JSON) and load
without any download. A model that uses them keeps its own copy in its model file, so it
predicts the same after the shipped weights change. The weights apply where the base is
evaluated on whole grids over the data's bounds (upscale, predict, the filter); queries point
by point (other grids) still blend 1 - w and w.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .network_file import read_network, save_network

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                            "side_weights_v1.pt")
FORMAT = "stsr-side-weights"
EPS = 1e-4                  # keeps logit(1 - w) finite at the interval's ends
N_FEATURES = 10
OUTSIDE_CAP = 3.0          # cells outside the box beyond which a side counts the same


def box3(x: torch.Tensor) -> torch.Tensor:
    """The mean over each point's 3^3 neighbourhood (edges repeated) of ``x`` [C, Z, Y, X],
    as three sums of three shifted views (measured: half the time of a 27-tap pool)."""
    p = F.pad(x[None], (1, 1, 1, 1, 1, 1), mode="replicate")[0]        # [C, Z+2, Y+2, X+2]
    p = p[..., :-2] + p[..., 1:-1] + p[..., 2:]
    p = p[:, :, :-2] + p[:, :, 1:-1] + p[:, :, 2:]
    return (p[:, :-2] + p[:, 1:-1] + p[:, 2:]).div_(27.0)


def side_features(ends: torch.Tensor, w: float,
                  outside: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per point and variable what the weight is chosen from -> [N_FEATURES, V, Z, Y, X],
    from the two sides ``ends`` [2, V, Z, Y, X] (normalised units) at fraction ``w`` and
    how far each side's lookup lies outside the box ``outside`` [2, Z, Y, X] (data cells;
    None: inside): their difference, its size and local mean, the local mean over all
    variables, each side's departure from its own local mean (which side holds a feature
    the other lacks), where in the interval, and each side's distance outside (a side
    looked up outside sees the border's values, not what enters)."""
    d, size, near, shared, peak_a, peak_b = sides_apart(ends)
    out0, out1 = outside_features(outside, d)
    return torch.stack([d, size, near, shared, peak_a, peak_b, peak_a.abs() - peak_b.abs(),
                        torch.full_like(d, w - 0.5), out0, out1])


def sides_apart(ends: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """How the two sides ``ends`` [2, V, Z, Y, X] differ locally, each [V, Z, Y, X]: their
    difference, its size, its 3^3 mean, that mean over all variables, and each side's
    departure from its own 3^3 mean (the features this network and time_refine.py's share)."""
    a, b = ends[0], ends[1]
    d = a - b
    size = d.abs()
    near = box3(size)
    shared = near.mean(0, keepdim=True).expand_as(near)
    return d, size, near, shared, a - box3(a), b - box3(b)


def outside_features(outside: Optional[torch.Tensor], like: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each side's distance outside the box ``outside`` [2, Z, Y, X] capped at OUTSIDE_CAP,
    spread over ``like``'s variables [V, Z, Y, X] (None: inside, 0)."""
    if outside is None:
        zero = torch.zeros_like(like)
        return zero, zero
    out0, out1 = (o.clamp(max=OUTSIDE_CAP).expand_as(like) for o in outside)
    return out0, out1


class SideWeights(nn.Module):
    """``(ends [2, V, Z', Y', X'], w, outside [2, Z', Y', X']) -> [V, Z', Y', X']`` the
    weight of the earlier side on a lattice spanning the data's box ``stride`` times
    coarser than the data (``ends`` and ``outside`` given on it: SplineBase._weighted_sides
    looks them up there and carries the weights to its grid trilinearly)."""

    def __init__(self, hidden: int = 8, stride: int = 2):
        super().__init__()
        self.hidden = int(hidden)
        self.stride = int(stride)
        self.inner = nn.Linear(N_FEATURES, self.hidden)
        self.outer = nn.Linear(self.hidden, 1)
        with torch.no_grad():            # starts as today's blend
            self.outer.weight.zero_()
            self.outer.bias.zero_()

    def correction(self, ends: torch.Tensor, w: float,
                   outside: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The net's term on the logit [V, Z, Y, X] (0: today's blend)."""
        f = side_features(ends, w, outside)
        shape = f.shape[1:]
        f = f.reshape(N_FEATURES, -1)                                   # [F, N]
        h = torch.addmm(self.inner.bias[:, None], self.inner.weight, f).relu_()  # [H, N]
        return torch.addmm(self.outer.bias[:, None], self.outer.weight, h).view(shape)

    def forward(self, ends: torch.Tensor, w: float,
                outside: Optional[torch.Tensor] = None) -> torch.Tensor:
        wc = min(max(1.0 - float(w), EPS), 1.0 - EPS)
        prior = math.log(wc / (1.0 - wc))
        return torch.sigmoid(self.correction(ends, w, outside).add_(prior))

    def settings(self) -> Dict[str, int]:
        return {"hidden": self.hidden, "stride": self.stride}


def save_weights(net: SideWeights, path: str, provenance: Dict[str, Any]) -> None:
    """The weights to ``path`` and ``provenance`` to ``path`` with .json, each written to a
    temp file and renamed (a killed training leaves the shipped files as they were)."""
    save_network(net, path, FORMAT, provenance)


def load_weights(path: Optional[str] = None) -> SideWeights:
    """The network in ``path`` (default: the weights shipped with the package), frozen: it
    is never trained by a model's fit, only by bench/train_side_weights.py."""
    payload = read_network(path or WEIGHTS_PATH, FORMAT, "side")
    net = SideWeights(**payload["settings"])
    net.load_state_dict(payload["state_dict"])
    return net.requires_grad_(False)
