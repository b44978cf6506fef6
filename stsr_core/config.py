"""Configurations (dataclasses with defaults) and named presets.

A preset is a (model config, training config) pair. ``paper`` reproduces the reference
implementation's *effective* settings; ``fast`` is the project's default (see docs/method.md's
preset table for the trade-offs). Configs are stored in model files as plain dicts
(:func:`config_to_dict` / :func:`model_config_from_dict`).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from .errors import StsrError

DEFAULT_PRESET = "fast"

# Every choice a setting offers, listed once: the configs check against these, the CLI's
# help and the ParaView plugin's drop-down lists are built from them.
PRESET_DESCRIPTIONS: Dict[str, str] = {
    "fast": "the project's default: the analytic base (cubic B-spline in space, "
            "motion-compensated in time)",
    "liif": "the fast base plus a correction learned from the series itself across scales, "
            "with a per-voxel error estimate",
    "paper": "the reference network (4.2 M parameters; needs GPU-hours)",
    "siren": "plain SIREN baseline",
}
DEVICES: Tuple[str, ...] = ("auto", "cpu", "cuda")     # "cuda:N" also names one GPU
BASE_TIME_DESCRIPTIONS: Dict[str, str] = {
    "select": "per array the best of still (linear/cubic) and motion-compensated along "
              "straight or bent paths (linear/cubic along them), chosen on input steps "
              "held out at the real gap",
    "auto": "motion-compensated, plus per array the share of cubic that best predicts "
            "held-out input steps",
    "linear": "linear in time (like ParaView's Temporal Interpolator)",
    "cubic": "natural cubic spline in time",
    "flow": "motion-compensated (follows features that move between steps)",
}
# the fast preset's spatial prior (model/space_prior.py); the engine's default first
SPACE_PRIOR_DESCRIPTIONS: Dict[str, str] = {
    "off": "the kept steps' fields are the cubic B-spline through the data",
    "gate": "per array a network trained offline on generated fields, or its copy fine-"
            "tuned on the series, where one level down it beats the cubic B-spline",
    "shipped": "the network trained offline on every array",
    "tuned": "its copy fine-tuned on the series on every array",
}
CHOICES: Dict[str, Tuple[Any, ...]] = {
    "encoding": ("grid", "fourier", "none"),
    "grid_interp": ("cubic", "linear"),
    "base": ("spline", "none"),
    "base_time": tuple(BASE_TIME_DESCRIPTIONS),
    "flow_path": ("auto", "straight", "bent"),
    "spline_boundary": ("select", "natural"),
    "between_smoothing": ("auto", "off"),
    "path_values": ("auto", "linear", "cubic"),
    "schedule": ("constant", "cosine"),
    "learn_pairs": ("all", "space", "time"),
    "side_net": ("off", "prior", "refine", "refine_all"),
    "space_prior": tuple(SPACE_PRIOR_DESCRIPTIONS),
    "device": DEVICES,
    "heads": (1, 8),                 # 1: one output per point; 8: one per octant block
}


INT64 = 2 ** 63      # integer settings are 64-bit in torch: |value| < 2^63 whatever the range


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows: finite numbers from ``lo`` to ``hi`` (None:
    unbounded; ``open_lo`` / ``open_hi``: that end itself excluded), whole ones when
    ``integer`` (and 64-bit); a tuple setting holds such numbers each; ``none``: None is
    allowed too (no limit)."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    integer: bool = False
    open_lo: bool = False
    open_hi: bool = False
    none: bool = False

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.none
        if isinstance(value, tuple):
            return all(self._holds_one(v) for v in value)
        return self._holds_one(value)

    def _holds_one(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if self.integer
                                                 else numbers.Real):
            return False
        if self.integer and not -INT64 <= v < INT64:
            return False
        if not self.integer:       # (an integer is compared as it is: no float overflow)
            try:
                v = float(v)
            except OverflowError:
                return False
            if not math.isfinite(v):
                return False
        return (self.lo is None or v > self.lo or (v == self.lo and not self.open_lo)) and \
            (self.hi is None or v < self.hi or (v == self.hi and not self.open_hi))

    def text(self) -> str:
        """E.g. "an integer >= 1", "a number > 0", "a number in [0, 1)"."""
        kind = "an integer" if self.integer else "a number"
        lo, hi = (None if v is None else str(int(v)) if self.integer else f"{v:g}"
                  for v in (self.lo, self.hi))
        if lo is not None and hi is not None:
            out = (f"{kind} in {'(' if self.open_lo else '['}{lo}, {hi}"
                   f"{')' if self.open_hi else ']'}")
        elif lo is not None:
            out = f"{kind} {'>' if self.open_lo else '>='} {lo}"
        elif hi is not None:
            out = f"{kind} {'<' if self.open_hi else '<='} {hi}"
        else:
            out = "a finite number"
        return out + (" or none" if self.none else "")


COUNT = Range(1, integer=True)           # sizes, widths, levels
COUNT0 = Range(0, integer=True)          # step counts and thresholds, 0 allowed
POSITIVE = Range(0, open_lo=True)        # rates, scales, frequencies, seconds
WEIGHT = Range(0)                        # penalty weights: 0 turns the term off
SHARE = Range(0, 1)
# a sine layer's frequency: its initial weights are bounded by 1/omega (a tiny omega
# overflows them), and far above the presets' 1 to 30 every input aliases
OMEGA = Range(0.001, 1000)

# Every numeric setting's range, beside its choices (a tuple setting: each of its numbers);
# each config's __post_init__ checks them, so --set, the plugin's properties and model files
# all get one line naming the setting, the value and the range.
RANGES: Dict[str, Range] = {
    # the networks
    "latent_dim": COUNT, "trunk_widths": COUNT, "head_widths": COUNT, "width": COUNT,
    "depth": COUNT, "n_res_blocks": COUNT0,
    "omega_first": OMEGA, "omega_trunk": OMEGA, "omega_res": OMEGA, "omega_head": OMEGA,
    "omega_hidden": OMEGA, "omega_0": OMEGA,
    "grid_levels": COUNT, "grid_features": COUNT, "grid_max_res_factor": POSITIVE,
    "fourier_features": COUNT, "fourier_sigma": POSITIVE,
    "base_out_init": Range(), "tv_weight": WEIGHT,
    # the fast base's displacement fits (a fit needs 2 points per axis)
    "flow_coarsen": COUNT, "flow_max_points": Range(2, integer=True), "flow_iters": COUNT0,
    "flow_smooth": WEIGHT, "flow_levels": COUNT,
    # the learned correction
    "learn_share": SHARE, "learn_steps": COUNT0, "learn_min_points": COUNT0,
    "learn_min_steps": COUNT0, "learn_features": COUNT, "learn_hidden": COUNT,
    # the spatial prior's fine-tuning
    "space_tune_s": WEIGHT,
    # training
    "steps": Range(0, integer=True, none=True),
    "max_minutes": Range(0, open_lo=True, none=True),
    "batch_size": COUNT, "lr": POSITIVE, "lr_latent": POSITIVE,
    "betas": Range(0, 1, open_hi=True),
    "weight_decay": WEIGHT, "warmup_steps": COUNT0, "kl_weight": WEIGHT,
    "latent_sigma": POSITIVE, "seed": Range(-INT64, INT64 - 1, integer=True),
    "checkpoint_every": COUNT0, "checkpoint_seconds": POSITIVE, "log_every": COUNT,
    "num_threads": Range(1, integer=True, none=True),
}


def out_of_range(name: str, value: Any, allowed: Range) -> Optional[str]:
    """The one line that says ``value`` of the setting (or property) ``name`` lies outside
    ``allowed``, naming the range; None when it lies inside."""
    if allowed.holds(value):
        return None
    items = value if isinstance(value, tuple) else (value,)
    each = " each" if isinstance(value, tuple) else ""
    wide = allowed.hi is None and any(isinstance(v, int) and abs(v) >= INT64 for v in items)
    return (f"{name} {value!r} is out of range; allowed: {allowed.text()}{each}"
            f"{' (64-bit)' if wide else ''}")


def check_ranges(cfg: Any) -> None:
    """Raise StsrError naming the setting, its value and its range when a field of ``cfg``
    listed in :data:`RANGES` holds a value outside it (NaN and infinity included)."""
    for f in dataclasses.fields(cfg):
        allowed = RANGES.get(f.name)
        message = allowed and out_of_range(f.name, getattr(cfg, f.name), allowed)
        if message:
            raise StsrError(message)


def check_choices(cfg: Any) -> None:
    """Raise StsrError naming the setting, its value and the allowed ones when a field of
    ``cfg`` listed in :data:`CHOICES` holds anything else, or one in :data:`RANGES` a value
    outside its range (called by each config's ``__post_init__``, so presets, ``--set``, the
    plugin and model files are all checked)."""
    for f in dataclasses.fields(cfg):
        allowed = CHOICES.get(f.name)
        value = getattr(cfg, f.name)
        if allowed is None or value in allowed:
            continue
        if f.name == "device" and (value is None or str(value).lower() in allowed
                                   or str(value).lower().startswith("cuda:")):
            continue                     # train.resolve_device's spellings
        raise StsrError(f"unknown {f.name} '{value}'; allowed: "
                        f"{', '.join(map(str, allowed))}")
    if getattr(cfg, "kind", None) != getattr(type(cfg), "kind", None):
        raise StsrError(f"{type(cfg).__name__} is kind '{type(cfg).kind}', not '{cfg.kind}'")
    check_ranges(cfg)


@dataclass
class STSRNetConfig:
    """The paper's network: modulated SIREN trunks, residual sine blocks, output heads.

    omega_0 is per layer: ``omega_trunk`` for the first three trunk layers, ``omega_res`` for
    the residual blocks, ``omega_head`` for the head layers. The reference configures 5 but it
    only reaches the first three trunk layers; the rest use 30 (that is what ``paper`` sets).
    """

    kind: str = "stsr"
    latent_dim: int = 256
    trunk_widths: Tuple[int, ...] = (64, 128, 256)
    n_res_blocks: int = 5
    head_widths: Tuple[int, ...] = (128, 64)   # after the head's residual block
    head_res_block: bool = True
    omega_first: float = 5.0   # first synthesis/modulator layer
    omega_trunk: float = 5.0   # remaining plain trunk layers
    omega_res: float = 30.0    # residual blocks of the trunk
    omega_head: float = 30.0   # head layers
    heads: int = 8             # 1 (no split) or 8 (octant blocks)

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass
class SirenNetConfig:
    """Plain SIREN residual network on (x, y, z, t), one output per variable (CoordNet-like
    baseline: no latent codes, no modulation)."""

    kind: str = "siren"
    width: int = 128
    n_res_blocks: int = 3
    omega_first: float = 30.0
    omega_hidden: float = 30.0
    heads: int = 1

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass
class FastNetConfig:
    """The project's fast model: learned multi-resolution feature grids over space and a
    smooth time basis, feeding a small latent-modulated network (see model/fast.py)."""

    kind: str = "fast"
    # with the spline base, whether a network learns corrections on top of it; off, the
    # model is the base alone: compact (the spline's coefficients), evaluated on whole grids
    # at tens of millions of voxels per second, and its fit is the base fit (measured: the
    # network of this config added under 0.02 dB to the base in five CPU minutes)
    network: bool = False
    latent_dim: int = 64
    # encoding
    encoding: str = "grid"          # "grid" | "fourier" | "none"
    grid_levels: int = 3
    grid_features: int = 8
    grid_max_res_factor: float = 1.0   # finest level resolution relative to the input's points
    grid_interp: str = "cubic"      # "cubic" (B-spline, C2-smooth) | "linear" (trilinear)
    fourier_features: int = 64
    fourier_sigma: float = 4.0
    # decoder
    width: int = 64
    depth: int = 3
    omega_0: float = 1.0       # gentle: the grid features carry the detail
    heads: int = 1
    # base: "spline" adds, per variable, a cubic B-spline through the kept data (one slot per
    # kept step) to the network's output, so training starts at interpolation quality and
    # the network learns corrections; "none": the network alone
    base: str = "spline"
    # the base between kept steps: "linear", "cubic" (natural spline), "flow" (motion-
    # compensated: a displacement field per interval fitted to all variables at once) or
    # "auto": flow plus, per variable, the share of cubic that best predicts held-out kept
    # steps (held-out steps, at twice the real gap, under-rate flow: see time_basis.py);
    # "select" (the default): per variable still or moving, the paths straight or bent and
    # linear or cubic along them, chosen on held-out steps coarsened in space as in time
    # (time_select.py)
    base_time: str = "select"
    # the spline's condition at the faces of the box (the prefilter's boundary condition):
    # "select" per variable, axis and end from the kept data (model/spline_boundary.py), or
    # "natural" everywhere (zero second derivative: the only kind before issue 30)
    spline_boundary: str = "select"
    # between kept steps, the part that is not moved blended from its cubic spline towards
    # trilinear interpolation of its values at the data's points, by a share per variable
    # times 4w(1-w) (model/between_smooth.py): "auto" (with base_time select, per still
    # variable the share that predicts held-out kept steps best one level down) or "off"
    between_smoothing: str = "auto"
    # the paths between kept steps (model/paths.py): straight through each interval or bent
    # through three kept steps, and the values along them linear or cubic; "auto": chosen on
    # the held-out steps with base_time select, straight and linear with auto and flow
    flow_path: str = "auto"
    path_values: str = "auto"
    flow_coarsen: int = 2        # displacement grid: this many times coarser than the data
    flow_max_points: int = 32    # larger data is resampled to this many points per axis for
                                 # the displacement fit, which bounds its cost
    flow_iters: int = 300        # Adam steps per displacement fit
    flow_smooth: float = 0.1     # smoothness penalty of the displacement
    flow_levels: int = 2         # coarse-to-fine levels of the displacement fit (finds
                                 # moves of several cells)
    # between kept steps the weight of each moved variable's two sides per point: "off"
    # (1 - w and w, everywhere), "prior" (a small network trained offline on generated
    # series and shipped with the package, model/side_weights.py; a model keeps its copy),
    # "refine" (issue 30's time refinement network, model/time_refine.py: both sides'
    # weights and a value correction, per variable only where it beats the base on the
    # held-out steps of the half series) or "refine_all" (that network on every moved
    # variable, for comparisons)
    side_net: str = "off"
    # the kept steps' fields between the data's points (model/space_prior.py): "off" (the
    # cubic B-spline alone), "gate" (a network trained offline on generated fields, shipped
    # with the package, and a copy of it fine-tuned on the series one level down, each used
    # per variable only where it beats the spline there: model/space_tune.py), "shipped" or
    # "tuned" (that one on every variable, for comparisons); the steps between kept ones
    # get it through the paths
    space_prior: str = "off"
    space_tune_s: float = 60.0   # most seconds of the fit's budget for the fine-tuning
    base_trainable: bool = True  # with a network: training may change the base too
    base_out_init: float = 0.0   # scale of the output layer's initial weights with a base
    # regularisation
    tv_weight: float = 0.0
    # learned correction (stsr_core/learned/): a local implicit decoder trained on pairs made
    # from the coarse series one level down (no reference data), added to the base with a
    # share per variable chosen on held-out pairs, plus a per-voxel error estimate
    learn: bool = False
    learn_share: float = 0.6     # of the time budget for the decoder's training (the rest:
                                 # the base fit and the pairs' own base fits)
    learn_steps: int = 1500      # decoder steps when the budget is steps only (no minutes)
    learn_pairs: str = "all"     # which pairs teach it: "all", "space" (kept steps thinned
                                 # in space) or "time" (kept steps left out; both grids)
    # shares are trusted only on data big enough for what one level down teaches to carry
    # over (measured: on 17^3 x 5-step coarse data it did not, and cost up to 1.9 dB on
    # Taylor-Green); below these, the shares are 0 (the base alone) and the decoder still
    # gives the error estimate
    learn_min_points: int = 16   # points per axis of the probe's lattice (coarse >= 61)
    learn_min_steps: int = 9     # kept steps for the in-between share
    learn_features: int = 16     # encoder channels
    learn_hidden: int = 32       # decoder width

    def __post_init__(self) -> None:
        check_choices(self)


ModelConfig = Any  # one of the dataclasses above

MODEL_CONFIGS = {"stsr": STSRNetConfig, "siren": SirenNetConfig, "fast": FastNetConfig}


@dataclass
class TrainConfig:
    """Optimisation settings. ``steps`` and ``max_minutes``: training stops at whichever
    comes first (None = no limit on that one; at least one must be set)."""

    steps: Optional[int] = 2000
    max_minutes: Optional[float] = None
    batch_size: int = 8000           # coordinates per step (each gives `heads` voxels per variable)
    lr: float = 1e-3
    lr_latent: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "cosine"         # "constant" | "cosine"
    warmup_steps: int = 0
    kl_weight: float = 1e-3          # lambda of the variational auto-decoder
    latent_sigma: float = 1e-3       # fixed sigma of the latent codes
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    checkpoint_every: int = 0        # steps between checkpoints (0 = only at the end)
    checkpoint_seconds: float = 60.0  # seconds between checkpoints (with a checkpoint path)
    log_every: int = 50
    num_threads: Optional[int] = None  # CPU threads for torch (None = torch's default)

    def __post_init__(self) -> None:
        check_choices(self)


PRESETS: Dict[str, Tuple[Any, TrainConfig]] = {
    # The reference code's effective settings: 4,179,592 parameters, 8 heads, omega 5 on the
    # first three trunk layers and 30 elsewhere, Adam 1e-5, weight decay 1e-6, batch 8000,
    # no schedule.
    "paper": (
        STSRNetConfig(),
        TrainConfig(steps=None, max_minutes=10.0, batch_size=8000, lr=1e-5, lr_latent=1e-5,
                    weight_decay=1e-6, schedule="constant"),
    ),
    "fast": (
        FastNetConfig(),
        # warm-up: Adam's first steps move every weight by about lr whatever its gradient;
        # at 1e-2 that cost the spline base up to 14 dB for the first ~30 steps (measured on
        # the benchmark's data); over 100 steps it loses at most 0.2 dB on the way
        TrainConfig(steps=None, max_minutes=2.0, batch_size=8192, lr=1e-2, lr_latent=1e-2,
                    schedule="cosine", warmup_steps=100),
    ),
    # the fast base plus the learned correction: most of the 5 minutes train the decoder
    "liif": (
        FastNetConfig(learn=True),
        TrainConfig(steps=None, max_minutes=5.0),
    ),
    "siren": (
        SirenNetConfig(),
        TrainConfig(steps=None, max_minutes=5.0, batch_size=8000, lr=1e-4, lr_latent=1e-4,
                    schedule="cosine", kl_weight=0.0),
    ),
}


def preset(name: str) -> Tuple[Any, TrainConfig]:
    """Fresh copies of a named preset's (model config, train config)."""
    if name not in PRESETS:
        raise StsrError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    m, t = PRESETS[name]
    return dataclasses.replace(m), dataclasses.replace(t)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# what files written before a setting existed did, where today's default differs
SETTINGS_BEFORE_THEY_EXISTED: Dict[str, Dict[str, Any]] = {
    "fast": {"network": True, "space_prior": "off"}}


def model_config_from_dict(d: Dict[str, Any]) -> Any:
    kind = d.get("kind")
    if kind not in MODEL_CONFIGS:
        raise StsrError(f"unknown model kind '{kind}' in model file")
    cls = MODEL_CONFIGS[kind]
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = dict(SETTINGS_BEFORE_THEY_EXISTED.get(kind, {}))
    for k, v in d.items():
        if k in names:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def train_config_from_dict(d: Dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return TrainConfig(**kw)


# --- `--set KEY=VALUE`: one setting of a preset's (or a model file's) configs -------------
def _setting_value(key: str, text: str, default: object) -> object:
    """``text`` as the type of the setting's default (a tuple: comma-separated numbers)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else float(v)
                         for v in text.split(",") if v.strip())
        if isinstance(default, (int, float, str)):
            return type(default)(text)
        if text.lower() == "none":
            return None
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a word",
                tuple: "comma-separated numbers"}.get(type(default), "a number or none")
        raise StsrError(f"--set {key}={text}: expected {kind} (default {default!r})") from None


def settings_overrides(mcfg: Any, tcfg: TrainConfig, pairs: Sequence[Tuple[str, str]],
                       label: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``--set`` (key, text) pairs as (model overrides, training overrides) of ``mcfg`` and
    ``tcfg`` (``label`` names them in errors), typed like their values and checked like the
    configs check themselves; an unknown name is an error that lists the known ones."""
    model: Dict[str, Any] = {}
    train: Dict[str, Any] = {}
    for key, text in pairs:
        if key == "kind":
            raise StsrError("--set kind: the network kind is the preset's; use --preset")
        for cfg, out in ((mcfg, model), (tcfg, train)):
            if key in {f.name for f in dataclasses.fields(cfg)}:
                out[key] = _setting_value(key, text, getattr(cfg, key))
                break
        else:
            raise StsrError(
                f"--set {key}: no such setting of {label}; model settings: "
                f"{', '.join(f.name for f in dataclasses.fields(mcfg))}; training settings: "
                f"{', '.join(f.name for f in dataclasses.fields(tcfg))}")
    dataclasses.replace(mcfg, **model)     # __post_init__: a value outside its choices
    dataclasses.replace(tcfg, **train)
    return model, train


def apply_settings(mcfg: Any, tcfg: TrainConfig, pairs: Sequence[Tuple[str, str]],
                   label: str = "the configs") -> Tuple[Any, TrainConfig]:
    """New (model config, train config) with the ``--set`` pairs applied."""
    model, train = settings_overrides(mcfg, tcfg, pairs, label)
    return dataclasses.replace(mcfg, **model), dataclasses.replace(tcfg, **train)
