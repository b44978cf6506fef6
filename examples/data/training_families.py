"""Training series for an offline prior of the motion between kept steps (issue 25): many
small random series with their full-rate truth, of kinds deliberately unlike the benchmark's
(examples/data/generated: fronts, spiral, shear, gray_scott), so that a network trained on
these is judged only on kinds it never saw.

Every series is random smooth and sharp fields CARRIED by a random motion, all variables of
one series sharing it:
  motion     any of: a translation with acceleration; a rotation about a random axis and
             centre, speeding up or slowing down; a random divergence-free flow (the curl of
             a few random Fourier modes) whose strength grows or fades. The rigid parts
             are scaled to a mean speed (over the box and the series) of 0.5-4.5 cells per
             step; a flow's strength is capped so that it stretches features at most ~e^2
             over the series (stronger flows draw them into threads thinner than a cell).
  variables  2-4 of: ``blobs`` (Gaussian blobs that grow or decay and change shape and
             size along their paths), ``noise`` (band-limited noise whose contrast changes),
             ``edges`` (tanh edges of a random level set, the level drifting: sharp features
             that also erode or grow), ``flashes`` (blobs that appear and disappear within a
             few steps), and at times a derived ``product`` of two of them. Some series have
             an ``occluder``: a fixed (not carried) region that hides what passes under it.
Sizes 25^3, 29^3 or 33^3 points x 9, 13 or 17 steps; random physical units (spacing, time, values).
Values at a step are the initial fields evaluated exactly at each point's departure point
(where its material was at the first step: examples/data/generated/carried.py), so sharp
features stay sharp, and features enter from outside the box as they should.

    from examples.data.training_families import sample, draw
    series = sample(seed)             # a stsr_core VolumeSeries, full rate in time
    recipe = draw(seed)               # what was drawn (JSON-able), render(recipe) == sample

    python -m examples.data.training_families --out DIR --count 200 [--first-seed 0]
        writes DIR/family_<seed>.h5 and DIR/index.json (the recipes); skips files there
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from stsr_core.series import VolumeSeries

from .generated.carried import Points, departure_points, grid_points
from .generated.grid import Box, mode_sum, random_modes

FIELD_TYPES = ("blobs", "noise", "edges", "flashes")
SUBSTEPS = 2            # RK4 sub-steps per step of the series when tracing back
FLOW_STRAIN = 2.0       # the most a flow may stretch over a series (see draw)


@dataclass
class Motion:
    """The velocity (box lengths per unit time, t in [0, 1]): translation + rotation + flow,
    each absent when its weight is 0."""

    velocity: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    acceleration: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    centre: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    spin: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])   # rad per unit time
    spin_rate: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    # the divergence-free flow: sum over modes of curl(e cos(2 pi k.x + phase))
    flow_k: List[List[float]] = field(default_factory=list)
    flow_e: List[List[float]] = field(default_factory=list)
    flow_phase: List[float] = field(default_factory=list)
    flow_strength: float = 0.0
    flow_growth: float = 0.0                 # strength x (1 + growth t)

    def __call__(self, p: Points, t: float) -> Points:
        shape = np.broadcast_shapes(*(c.shape for c in p))
        pts = np.stack([np.broadcast_to(c, shape).ravel() for c in p])          # [3, N]
        v = (np.asarray(self.velocity) + np.asarray(self.acceleration) * t)[:, None]
        v = np.broadcast_to(v, pts.shape)
        w = np.asarray(self.spin) + np.asarray(self.spin_rate) * t
        if np.any(w):
            v = v + np.cross(w, pts - np.asarray(self.centre)[:, None], axis=0)
        if self.flow_strength:
            s = self.flow_strength * (1 + self.flow_growth * t)
            k = np.asarray(self.flow_k)                                          # [M, 3]
            arg = 2 * np.pi * (k @ pts) + np.asarray(self.flow_phase)[:, None]   # [M, N]
            # curl(e cos(arg)) = -2 pi sin(arg) (k x e)
            c = np.cross(k, np.asarray(self.flow_e)) * (-2 * np.pi * s)          # [M, 3]
            v = v + c.T @ np.sin(arg)
        return tuple(v[i].reshape(shape) for i in range(3))  # type: ignore[return-value]


@dataclass
class FieldSpec:
    """One variable: its type and the numbers drawn for it (see :func:`evaluate`)."""

    kind: str
    params: Dict[str, list] = field(default_factory=dict)


@dataclass
class Recipe:
    """Everything one series is made from; ``render`` makes it."""

    seed: int
    n: int
    steps: int
    motion: Motion
    fields: List[FieldSpec]
    product_of: Optional[List[int]] = None    # indices of two fields, or None
    occluder: Optional[List[float]] = None    # x, y, z, radius of a fixed hiding region
    cells_per_step: float = 1.0               # the motion's mean speed (over box and time)
    spacing: float = 1.0                      # physical units of the unit box's spacing
    time_unit: float = 1.0                    # physical duration of t in [0, 1]
    value_scale: List[float] = field(default_factory=list)   # per variable
    value_offset: List[float] = field(default_factory=list)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _modes(rng: np.random.Generator, count: int, k_min: float, k_max: float) -> Dict[str, list]:
    k, amp, phase = random_modes(rng, count, k_min, k_max)
    return {"k": k.tolist(), "amp": amp.tolist(), "phase": phase.tolist()}


def _blob_params(rng: np.random.Generator, count: int) -> Dict[str, list]:
    return {"centre": rng.uniform(-0.1, 1.1, (count, 3)).tolist(),
            "sigma": rng.uniform(0.04, 0.14, (count, 3)).tolist(),
            "amp": (rng.uniform(0.4, 1.0, count) * rng.choice([-1, 1], count)).tolist(),
            "growth": rng.uniform(-1.5, 1.5, count).tolist(),       # amp x exp(growth t)
            "swell": rng.uniform(-0.4, 0.8, count).tolist()}        # sigma x (1 + swell t)


def draw_field(rng: np.random.Generator, kind: str) -> FieldSpec:
    """The random numbers of one variable of type ``kind``."""
    if kind == "blobs":
        return FieldSpec(kind, _blob_params(rng, int(rng.integers(3, 9))))
    if kind == "noise":
        p = _modes(rng, 12, 1.5, 5.0)
        p["contrast_change"] = [float(rng.uniform(-0.6, 1.0))]
        return FieldSpec(kind, p)
    if kind == "edges":
        p = _modes(rng, 8, 0.8, 3.0)
        p["width"] = [float(rng.uniform(0.08, 0.4))]     # in units of the unit-RMS field
        p["level"] = [float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.4, 0.4))]
        return FieldSpec(kind, p)
    if kind == "flashes":
        count = int(rng.integers(3, 8))
        p = _blob_params(rng, count)
        p["on"] = rng.uniform(-0.3, 0.8, count).tolist()
        p["duration"] = rng.uniform(0.15, 0.6, count).tolist()
        p["ramp"] = rng.uniform(0.01, 0.05, count).tolist()
        return FieldSpec(kind, p)
    raise ValueError(f"unknown field type '{kind}'; choose one of {', '.join(FIELD_TYPES)}")


def draw_motion(rng: np.random.Generator) -> Motion:
    """A random motion of unit-ish speed (``draw`` scales it)."""
    use = rng.random(3) < 0.6
    if not use.any():
        use[rng.integers(3)] = True
    m = Motion()
    if use[0]:
        m.velocity = _unit(rng).tolist()
        m.acceleration = (_unit(rng) * rng.uniform(0, 1.5)).tolist()
    if use[1]:
        m.centre = rng.uniform(0.2, 0.8, 3).tolist()
        axis = _unit(rng)
        m.spin = (axis * 3.0).tolist()                       # ~1 at radius 0.35
        m.spin_rate = (axis * 3.0 * rng.uniform(-0.8, 0.8)).tolist()
    if use[2]:
        p = _modes(rng, int(rng.integers(2, 6)), 0.5, 1.2)
        m.flow_k = p["k"]
        m.flow_e = [(_unit(rng) * a).tolist() for a in p["amp"]]
        m.flow_phase = p["phase"]
        m.flow_strength = 1.0
        m.flow_growth = float(rng.uniform(-0.6, 1.5))
    return m


def _mean_speed(motion: Motion) -> float:
    """The motion's mean speed over the box and over time (9^3 points, 5 times)."""
    c = np.linspace(0, 1, 9)
    p = (c[None, None, :], c[None, :, None], c[:, None, None])
    speeds = []
    for t in np.linspace(0, 1, 5):
        v = motion(p, t)
        speeds.append(np.sqrt(sum(np.broadcast_to(a, (9, 9, 9)) ** 2 for a in v)).mean())
    return float(np.mean(speeds))


def draw(seed: int) -> Recipe:
    """The recipe of series ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 25])
    n = int(rng.choice([25, 29, 33]))         # 4k + 1: every 2nd or 4th point keeps the last
    steps = int(rng.choice([9, 13, 17]))
    motion = draw_motion(rng)
    # speed in box lengths per unit t for ``cells`` per step: cells * h * (steps - 1)
    speed = float(rng.uniform(0.5, 4.5)) / (n - 1) * (steps - 1)
    rigid = Motion(motion.velocity, motion.acceleration, motion.centre, motion.spin,
                   motion.spin_rate)
    if np.any(rigid.velocity) or np.any(rigid.spin):
        scale = speed / _mean_speed(rigid)
        for name in ("velocity", "acceleration", "spin", "spin_rate"):
            setattr(motion, name, (np.asarray(getattr(motion, name)) * scale).tolist())
    if motion.flow_strength:
        # a flow deforms: its strain over the series, ~ 2 pi |k| x its speed, is held
        # below FLOW_STRAIN so that features stay resolved instead of being drawn into
        # threads thinner than a cell
        flow = Motion(flow_k=motion.flow_k, flow_e=motion.flow_e,
                      flow_phase=motion.flow_phase, flow_strength=1.0,
                      flow_growth=motion.flow_growth)
        k = float(np.sqrt(np.mean(np.sum(np.square(motion.flow_k), axis=1))))
        motion.flow_strength = min(speed, FLOW_STRAIN / (2 * np.pi * k)) / _mean_speed(flow)
    cells = _mean_speed(motion) * (n - 1) / (steps - 1)
    count = int(rng.integers(2, 5))
    kinds = [FIELD_TYPES[i] for i in rng.choice(len(FIELD_TYPES), count,
                                                 replace=count > len(FIELD_TYPES))]
    fields = [draw_field(rng, k) for k in kinds]
    product_of = rng.choice(count, 2, replace=False).tolist() if count < 4 and \
        rng.random() < 0.4 else None
    occluder = (rng.uniform(0.2, 0.8, 3).tolist() + [float(rng.uniform(0.1, 0.25))]) \
        if rng.random() < 0.3 else None
    n_vars = count + (product_of is not None)
    return Recipe(seed=seed, n=n, steps=steps, motion=motion, fields=fields,
                  product_of=product_of, occluder=occluder, cells_per_step=cells,
                  spacing=float(10 ** rng.uniform(-1, 1)) / (n - 1),
                  time_unit=float(10 ** rng.uniform(-1, 2)),
                  value_scale=(10 ** rng.uniform(-2, 3, n_vars)).tolist(),
                  value_offset=rng.uniform(-1, 1, n_vars).tolist())


def _blobs(p: Dict[str, list], x0: Points, t: float, window=None) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(*(a.shape for a in x0)))
    for i, (c, s, a, g, w) in enumerate(zip(p["centre"], p["sigma"], p["amp"], p["growth"],
                                            p["swell"])):
        amp = a * np.exp(g * t) * (1.0 if window is None else window(i))
        if amp == 0:
            continue
        s = np.asarray(s) * (1 + w * t)
        d2 = sum(((x0[j] - c[j]) / s[j]) ** 2 for j in range(3))
        out += amp * np.exp(-0.5 * d2)
    return out


def evaluate(spec: FieldSpec, x0: Points, t: float) -> np.ndarray:
    """Variable ``spec`` at material points ``x0`` (departure points) at time t in [0, 1]."""
    p = spec.params
    if spec.kind == "blobs":
        return _blobs(p, x0, t)
    if spec.kind == "noise":
        return mode_sum((p["k"], p["amp"], p["phase"]), *x0) * \
            (1 + p["contrast_change"][0] * t)
    if spec.kind == "edges":
        level = p["level"][0] + p["level"][1] * t
        g = mode_sum((p["k"], p["amp"], p["phase"]), *x0)
        return np.tanh((g - level) / p["width"][0])
    if spec.kind == "flashes":
        def window(i: int) -> float:
            on, off, r = p["on"][i], p["on"][i] + p["duration"][i], p["ramp"][i]
            return float(0.25 * (1 + np.tanh((t - on) / r)) * (1 + np.tanh((off - t) / r)))
        return _blobs(p, x0, t, window)
    raise ValueError(f"unknown field type '{spec.kind}'")


def _names(recipe: Recipe) -> List[str]:
    names: List[str] = []
    for f in recipe.fields:
        name, i = f.kind, 2
        while name in names:
            name, i = f"{f.kind}_{i}", i + 1
        names.append(name)
    if recipe.product_of is not None:
        names.append("product")
    return names


def render(recipe: Recipe) -> VolumeSeries:
    """The full-rate series of ``recipe``."""
    box = Box(recipe.n)
    grid = grid_points(box)
    times = np.linspace(0.0, 1.0, recipe.steps)
    occ = None
    if recipe.occluder is not None:
        cx, cy, cz, r = recipe.occluder
        d2 = (grid[0] - cx) ** 2 + (grid[1] - cy) ** 2 + (grid[2] - cz) ** 2
        occ = 1 - 0.95 * np.exp(-0.5 * (d2 / (r * r)) ** 2)            # flat-topped
    names = _names(recipe)
    frames: List[List[np.ndarray]] = []
    for i, t in enumerate(times):
        dep = departure_points(recipe.motion, box, t, SUBSTEPS * i, every=4)
        values = [evaluate(f, dep, t) for f in recipe.fields]
        if recipe.product_of is not None:
            a, b = recipe.product_of
            values.append(values[a] * values[b])
        if occ is not None:
            values = [v * occ for v in values]
        frames.append(values)
    variables = {}
    for j, name in enumerate(names):
        a = np.stack([f[j] for f in frames])                           # [T, Z, Y, X]
        variables[name] = (a * recipe.value_scale[j] + recipe.value_offset[j] *
                           recipe.value_scale[j]).astype(np.float32)
    return VolumeSeries(times=times * recipe.time_unit, variables=variables,
                        spacing=(recipe.spacing,) * 3,
                        source=f"training_families.sample({recipe.seed})")


def sample(seed: int) -> VolumeSeries:
    """Training series ``seed``: same seed, same values."""
    return render(draw(seed))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.data.training_families",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--count", type=int, default=100, help="series to write (default 100)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--format", choices=("h5", "pvd"), default="h5")
    a = p.parse_args(argv)
    from stsr_core.io import write_series
    os.makedirs(a.out, exist_ok=True)
    index_path = os.path.join(a.out, "index.json")
    index: Dict[str, dict] = {}
    if os.path.exists(index_path):
        with open(index_path) as fh:
            index = json.load(fh)
    t0 = time.perf_counter()
    made = 0
    for seed in range(a.first_seed, a.first_seed + a.count):
        path = os.path.join(a.out, f"family_{seed}.{a.format}")
        recipe = draw(seed)
        entry = {"path": os.path.basename(path), "recipe": asdict(recipe)}
        if os.path.exists(path) and index.get(str(seed)) == entry:
            continue
        write_series(render(recipe), path, overwrite=True)
        index[str(seed)] = entry
        made += 1
    tmp = index_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(index, fh)
    os.replace(tmp, index_path)
    print(f"{made} series written, {a.count - made} already there, in "
          f"{time.perf_counter() - t0:.1f} s: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
