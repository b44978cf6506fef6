"""Issue 30's time refinement network: per point between kept steps, the weights of the two
motion-compensated sides and a value correction, from what both sides say locally.

Between kept steps K_j and K_{j+1} the base blends the earlier side (K_j looked up where the
path through a point was) and the later one with weights 1 - w and w (plus the cubic share
along the path, which this network leaves as it is). The refinement replaces that blend by

    earlier * q + later * (1 - q) + c,   q = sigmoid(logit(1 - w) + side + net_0),
                                         c = net_1 * (the local mean of |earlier - later|)

per variable and point, with ``side`` the shipped 97-weight side network's term
(side_weights.py, frozen: the floor to beat is where training starts) and ``net`` a small MLP
of local features (:func:`refine_features`):
both sides' difference, its size and local mean, the mean over all variables, each side's
departure from its own 3^3 mean (the spatial error indicator's stand-in: the error estimate's
S, spline minus trilinear, is 0 at the lattice's points, where the sides' curvature says how
much the field bends between them), the fraction w, how far each side's lookup lies outside
the box, and the path's motion: the displacement's length and the bend's shift at this w (in
data cells). The correction is a multiple of the sides' local disagreement, so where they
agree (a still field, a feature carried exactly) it is 0, and an untrained net (outputs 0) is
the base. It runs on a lattice ``stride`` times coarser than the data's, like
side_weights.py's network, and both outputs are carried to the output grid trilinearly: one
box3 of features, so slabs.py's halo for side_weights covers it unchanged.

Per variable it is used only where it beats the base on the held-out steps of the half series
(:func:`gate`, run by SplineBase.fit; ``use`` [V] holds the decision, saved in the model
file). Trained offline by bench/train_time_refine.py on examples/data/training_families.py's
generated series (never the benchmark's kinds); the weights ship as
``weights/time_refine_v1.pt`` with their provenance in JSON and load without any download.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .network_file import read_network, save_network
from .side_weights import EPS, SideWeights, outside_features, sides_apart

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                            "time_refine_v1.pt")
FORMAT = "stsr-time-refine"
N_FEATURES = 14
MOTION_CAP = 8.0        # cells of displacement (or bend) beyond which motion counts the same
GATE_MARGIN_DB = 0.05   # a variable uses the network where it gains more on the half series


def refine_features(ends: torch.Tensor, w: float, outside: Optional[torch.Tensor] = None,
                    motion: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per point and variable what the network reads -> [N_FEATURES, V, Z, Y, X], from the
    two sides ``ends`` [2, V, Z, Y, X] (normalised units) at fraction ``w``, how far each
    side's lookup lies outside the box ``outside`` [2, Z, Y, X] and the path's motion
    ``motion`` [2, Z, Y, X] (displacement length, bend shift; data cells; None: 0)."""
    d, size, near, shared, peak_a, peak_b = sides_apart(ends)        # each [V, Z, Y, X]
    out0, out1 = outside_features(outside, d)
    if motion is None:
        move = bend = torch.zeros_like(d)
    else:
        move, bend = (m.clamp(max=MOTION_CAP).div(MOTION_CAP).expand_as(d) for m in motion)
    s_ind = 0.5 * (peak_a.abs() + peak_b.abs())                    # the space indicator
    return torch.stack([d, size, near, shared, peak_a, peak_b, peak_a.abs() - peak_b.abs(),
                        s_ind, torch.full_like(d, w - 0.5),
                        torch.full_like(d, 4.0 * w * (1.0 - w)), out0, out1, move, bend])


class TimeRefine(nn.Module):
    """``refine(ends [2, V, Z', Y', X'], w, outside, motion, variables)`` -> (weight of the
    earlier side, value correction), each [V, Z', Y', X'], on a lattice ``stride`` times
    coarser than the data (SplineBase._weighted_sides looks the sides up there and carries
    both to its grid trilinearly). ``use`` [V]: per variable of the model whether it
    applies (the gate's decision; 0: the base's 1 - w and no correction)."""

    refines = True

    def __init__(self, hidden: int = 16, stride: int = 2, n_vars: int = 0,
                 side_hidden: int = 0):
        super().__init__()
        self.hidden = int(hidden)
        self.stride = int(stride)
        # the side network's term on the logit (0 hidden: none); its weights are the shipped
        # side_weights_v1's when trained (bench/train_time_refine.py), kept frozen
        self.side_hidden = int(side_hidden)
        self.side = SideWeights(self.side_hidden, self.stride) if self.side_hidden else None
        self.inner = nn.Linear(N_FEATURES, self.hidden)
        self.middle = nn.Linear(self.hidden, self.hidden)
        self.outer = nn.Linear(self.hidden, 2)
        with torch.no_grad():            # starts as the base's blend
            self.outer.weight.zero_()
            self.outer.bias.zero_()
        self.register_buffer("use", torch.ones(int(n_vars)))

    def outputs(self, features: torch.Tensor) -> torch.Tensor:
        """The net's two raw outputs [2, V, Z, Y, X] from the features [F, V, Z, Y, X]."""
        shape = features.shape[1:]
        f = features.reshape(N_FEATURES, -1)                            # [F, N]
        h = torch.addmm(self.inner.bias[:, None], self.inner.weight, f).relu_()   # [H, N]
        h = torch.addmm(self.middle.bias[:, None], self.middle.weight, h).relu_()
        return torch.addmm(self.outer.bias[:, None], self.outer.weight, h).view(2, *shape)

    def refine(self, ends: torch.Tensor, w: float, outside: Optional[torch.Tensor] = None,
               motion: Optional[torch.Tensor] = None,
               variables: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight of the earlier side, correction), each [V, Z, Y, X]; ``variables``: the
        model's indices of ``ends``' variables (None: all), for ``use``."""
        f = refine_features(ends, w, outside, motion)
        raw = self.outputs(f)                                          # [2, V, Z, Y, X]
        wc = min(max(1.0 - float(w), EPS), 1.0 - EPS)
        prior = math.log(wc / (1.0 - wc))
        logit = raw[0] + prior
        if self.side is not None:
            logit = logit + self.side.correction(ends, w, outside)
        weight = torch.sigmoid(logit)
        corr = raw[1] * f[2]                          # a multiple of the local disagreement
        if self.use.numel():
            use = self.use if variables is None else self.use[variables]
            if not bool(use.all()):
                u = use.to(weight).view(-1, *([1] * (weight.dim() - 1)))
                weight = torch.lerp(torch.full_like(weight, wc), weight, u)
                corr = corr * u
        return weight, corr

    def forward(self, ends: torch.Tensor, w: float, outside: Optional[torch.Tensor] = None,
                motion: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The earlier side's weight alone (as side_weights.SideWeights gives it)."""
        return self.refine(ends, w, outside, motion)[0]

    def settings(self) -> Dict[str, int]:
        return {"hidden": self.hidden, "stride": self.stride, "side_hidden": self.side_hidden}


def save_weights(net: TimeRefine, path: str, provenance: Dict[str, Any]) -> None:
    """The weights to ``path`` and ``provenance`` to ``path`` with .json, atomically
    (network_file.save_network); the gate's ``use`` is the model's, not shipped."""
    use = net.use
    net.use = torch.ones(0)
    try:
        save_network(net, path, FORMAT, provenance)
    finally:
        net.use = use


def load_weights(path: Optional[str] = None, n_vars: int = 0) -> TimeRefine:
    """The network in ``path`` (default: the weights shipped with the package), frozen, for
    a model of ``n_vars`` variables (all in use until the gate decides)."""
    payload = read_network(path or WEIGHTS_PATH, FORMAT, "time refinement")
    net = TimeRefine(**payload["settings"])
    state = {k: v for k, v in payload["state_dict"].items() if k != "use"}
    net.load_state_dict(state, strict=False)
    net.use = torch.ones(int(n_vars))
    return net.requires_grad_(False)


def _db(err: torch.Tensor, rng: torch.Tensor) -> List[float]:
    """Per variable PSNR from the summed squared errors ``err`` [V] over ``n`` points."""
    return [20 * math.log10(max(float(r), 1e-30)) - 10 * math.log10(max(float(e), 1e-30))
            for r, e in zip(rng, err)]


@torch.no_grad()
def gate(base: Any, half: torch.Tensor, built: Sequence[Any],
         deadline: Optional[float] = None) -> Dict[str, object]:
    """Per moved variable of ``base`` (a SplineBase whose ``side_weights`` is a
    :class:`TimeRefine`) whether the network beats the base on the held-out steps of the
    half series ``half`` [V, T, Z, Y, X] (``built``: time_select.half_chains, the chains'
    bases with the base's choice in time copied in), by more than GATE_MARGIN_DB in mean
    PSNR over the steps: sets ``base.side_weights.use`` and returns the scores (stsr info)."""
    from .time_select import held_out_cases
    import time as _time
    t0 = _time.perf_counter()
    net = base.side_weights
    n_vars = base.n_vars
    moving = (base.flow_mix != 0).cpu()
    net.use = torch.ones(n_vars)
    rng = (half.amax(dim=(1, 2, 3, 4)) - half.amin(dim=(1, 2, 3, 4))).cpu()
    db = {"base": [], "refine": []}
    n = 0
    for sub, plan, k, t in held_out_cases(built):
        if n and deadline is not None and _time.perf_counter() > deadline:
            break
        if not bool(sub.has_flow):
            continue
        target = half[:, k]
        for name, module in (("base", None), ("refine", net)):
            sub.side_weights = module
            plan.side_plan = None         # the lattice is planned for this sub's grid
            err = (sub.evaluate_grid(plan, t) - target).pow(2).flatten(1).mean(1).cpu()
            db[name].append(_db(err, rng))
        sub.side_weights = None
        n += 1
    report: Dict[str, object] = {"held_out_steps": n, "margin_db": GATE_MARGIN_DB,
                                 "seconds": round(_time.perf_counter() - t0, 2)}
    if not n:
        net.use = torch.zeros(n_vars)
        report["reason"] = "no held-out steps of the half series: off"
        return report
    mean = {k: torch.tensor(v).nanmean(0) for k, v in db.items()}          # [V]
    gain = mean["refine"] - mean["base"]
    use = (gain > GATE_MARGIN_DB) & moving
    net.use = use.to(torch.float32)
    report["base_db"] = [round(float(x), 3) for x in mean["base"]]
    report["refine_db"] = [round(float(x), 3) for x in mean["refine"]]
    report["gain_db"] = [round(float(x), 3) for x in gain]
    report["use"] = [bool(u) for u in use]
    return report
