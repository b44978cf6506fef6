"""A spatial prior for the kept steps (issue 30): what the cubic B-spline through a kept
step misses between the data's points, predicted by a network trained offline on generated
fields with their full-resolution truth.

    field(x) = spline(x) + residual(x)

* **Encoder** (:class:`PriorNet`): a 3D convolutional network reads one variable's kept step
  on the data's grid, normalised by its own range (so one network serves every variable of
  every data set, whatever its units). A 3^3 stem at the data's resolution, then its 2^3
  blocks folded into channels (space-to-depth: every value kept, 8x fewer positions), a
  trunk of residual 3^3 convolutions at half resolution (the receptive field of ~25 data
  cells at an eighth of the cost), unfolded back and joined with the stem.
* **Local implicit decoder, evaluated once**: the last 3^3 convolution gives, per data
  cell, the residual at the 7 points of a lattice ``RATIO`` = 2 times finer that are not
  data points (the 8th, the data point itself, is 0: the field still passes through the
  data). Those values are the residual's samples on the fine lattice ((n - 1) 2 + 1 points
  per axis) and the residual everywhere is their local cubic interpolation (Keys' cubic
  convolution: 4 taps an axis, through every lattice value, no global prefilter, so any
  window of it is computed from its own rows). So the correction costs one network pass
  per kept step and variable on the data's grid, not per output point, and at any output
  point it is looked up like the spline itself (a banded matrix per axis): at scale 2 the
  output's points are the lattice's, at scales 3, 4 or any other it interpolates.
* Zero padding at the box's faces (the network sees where the data ends: the spline's own
  error is largest there); large grids go through in z-slabs with a halo wider than the
  receptive field (:func:`residual_values`), so memory is bounded and the numbers are the
  whole grid's.

Trained by bench/train_space_prior.py (``make train-prior``) on examples/data/
space_families.py's generated kinds; the weights ship in ``weights/space_prior_v1.pt`` with
their provenance in JSON beside them and load without any download. How a model fine-tunes
and gates it per variable on its own series: space_tune.py.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encodings import bspline_coefficients
from .network_file import read_network, save_network

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                            "space_prior_v1.pt")
FORMAT = "stsr-space-prior"
RATIO = 2                   # the residual's lattice is this many times finer than the data
SUB = 7                     # its points per data cell that are not data points
SLAB = 48                   # data planes per slab of a large grid's pass (even)
HALO = 16                   # planes of context each side of a slab (even; > receptive field)
MIN_RANGE = 1e-12           # a field flatter than this (normalised units) gets no residual


def fine_dims(dims: Sequence[int]) -> Tuple[int, ...]:
    """Points per axis of the residual's lattice for a grid of ``dims`` points per axis."""
    return tuple(RATIO * (int(n) - 1) + 1 for n in dims)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """[B, C, Z, Y, X] -> [B, 8C, Z/2, Y/2, X/2] (odd sizes padded by repeating the last
    plane): each 2^3 block's values as channels."""
    z, y, xx = x.shape[2:]
    x = F.pad(x, (0, xx % 2, 0, y % 2, 0, z % 2), mode="replicate")
    b, c, z, y, xx = x.shape
    x = x.view(b, c, z // 2, 2, y // 2, 2, xx // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, 8 * c, z // 2, y // 2, xx // 2)


def depth_to_space(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`: [B, 8C, Z, Y, X] -> [B, C, 2Z, 2Y, 2X]."""
    b, _, z, y, xx = x.shape
    x = x.view(b, channels, 2, 2, 2, z, y, xx).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, channels, 2 * z, 2 * y, 2 * xx)


def detail(x: torch.Tensor) -> torch.Tensor:
    """How far ``x`` [B, 1, Z, Y, X] is from a cubic along each axis near each point: the
    largest, over the 5^3 points around it, of the summed |fourth differences| along the
    axes (the faces continued by odd reflection, so that a linear field has none there
    either) -> [B, 1, Z, Y, X]. The cubic spline's error between points grows with it
    (the fourth derivative inside, more at kinks and fronts), so the network's output is
    measured in it: where a field is smooth the correction stays small whatever the
    network's imprecision."""
    total = torch.zeros_like(x)
    for dim in (2, 3, 4):
        n = x.shape[dim]
        if n < 3:
            continue
        lo = 2 * x.narrow(dim, 0, 1) - x.narrow(dim, 1, 2).flip(dim)
        hi = 2 * x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 3, 2).flip(dim)
        p = torch.cat([lo, x, hi], dim)
        d = p.narrow(dim, 0, n) - 4 * p.narrow(dim, 1, n) + 6 * p.narrow(dim, 2, n) \
            - 4 * p.narrow(dim, 3, n) + p.narrow(dim, 4, n)
        total = total + d.abs()
    return F.max_pool3d(total, 5, stride=1, padding=2)


def inputs(x: torch.Tensor, base: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What the network reads per data cell, from ``x`` [B, 1, Z, Y, X]: the data point and
    what the spline through the whole field says at the cell's other points of the fine
    lattice, relative to it -> [B, 1 + SUB, Z, Y, X]. ``base`` [B, Zf, Yf, Xf]: that spline
    on the fine lattice where known (else solved here; its prefilter is global: computed
    on the whole field, before any slab is cut)."""
    if base is None:
        base = spline_on_fine_lattice(x[:, 0])
    return torch.cat([x, gather_fine(base) - x], dim=1)


class PriorNet(nn.Module):
    """``[B, 1, Z, Y, X]`` normalised kept steps -> ``[B, SUB, Z, Y, X]`` the residual at
    the fine lattice's points of each data cell other than the data point (normalised
    units; see the module docstring): the network's output times the field's local
    :func:`detail`."""

    def __init__(self, stem: int = 16, width: int = 32, blocks: int = 4):
        super().__init__()
        self.stem_width, self.width, self.blocks = int(stem), int(width), int(blocks)
        self.stem = nn.Conv3d(1 + SUB, stem, 3, padding=1)
        self.fold = nn.Conv3d(8 * stem, width, 1)
        self.trunk = nn.ModuleList([nn.Conv3d(width, width, 3, padding=1)
                                    for _ in range(blocks)])
        self.unfold = nn.Conv3d(width, 8 * stem, 1)
        self.head = nn.Conv3d(2 * stem, SUB, 3, padding=1)
        with torch.no_grad():        # starts as the spline alone (no correction)
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(inputs(x), detail(x))

    def body(self, feats: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The network on :func:`inputs` [B, 1 + SUB, Z, Y, X], its output times ``scale``
        [B, 1, Z, Y, X] (:func:`detail`)."""
        z, y, xx = feats.shape[2:]
        s = F.gelu(self.stem(feats))                                     # [B, S, Z, Y, X]
        h = F.gelu(self.fold(space_to_depth(s)))                         # [B, W, Z/2, ...]
        for conv in self.trunk:
            h = h + F.gelu(conv(h))
        u = depth_to_space(self.unfold(h), self.stem_width)[..., :z, :y, :xx]
        out = self.head(F.gelu(torch.cat([u, s], dim=1)))                # [B, SUB, Z, Y, X]
        return out * scale

    def settings(self) -> Dict[str, int]:
        return {"stem": self.stem_width, "width": self.width, "blocks": self.blocks}


def normalise(field: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each field of ``field`` [N, Z, Y, X] to [-1, 1] by its own range -> (normalised,
    centre [N], half range [N]); a flat field has half range 0 (and gets no residual)."""
    flat = field.reshape(field.shape[0], -1)
    lo, hi = flat.amin(1), flat.amax(1)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    safe = torch.where(half > MIN_RANGE, half, torch.ones_like(half))
    return (field - centre.view(-1, 1, 1, 1)) / safe.view(-1, 1, 1, 1), centre, half


def scatter_fine(sub: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """The sub-lattice values ``sub`` [N, SUB, Z, Y, X] placed on the fine lattice
    [N, Zf, Yf, Xf] (0 at the data's points; points past the last data point dropped)."""
    n, _, z, y, x = sub.shape
    out = sub.new_zeros((n, z, 2, y, 2, x, 2))
    k = 0
    for c in (0, 1):
        for b in (0, 1):
            for a in (0, 1):
                if a == b == c == 0:
                    continue
                out[:, :, c, :, b, :, a] = sub[:, k]
                k += 1
    zf, yf, xf = fine_dims(dims)
    return out.view(n, 2 * z, 2 * y, 2 * x)[:, :zf, :yf, :xf]


def gather_fine(fine: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scatter_fine`: [N, Zf, Yf, Xf] -> [N, SUB, Z, Y, X] (points
    past the last data point, absent from the fine lattice, are 0)."""
    n, zf, yf, xf = fine.shape
    z, y, x = (zf + 1) // 2, (yf + 1) // 2, (xf + 1) // 2
    full = F.pad(fine, (0, 2 * x - xf, 0, 2 * y - yf, 0, 2 * z - zf))
    full = full.view(n, z, 2, y, 2, x, 2)
    return torch.stack([full[:, :, c, :, b, :, a] for c in (0, 1) for b in (0, 1)
                        for a in (0, 1) if not a == b == c == 0], dim=1)


def _run(net: PriorNet, x: torch.Tensor, base: Optional[torch.Tensor] = None
         ) -> torch.Tensor:
    """The network over ``x`` [N, Z, Y, X] (normalised; ``base``: the spline on the fine
    lattice, :func:`inputs`) -> [N, SUB, Z, Y, X], in z-slabs with a halo when the grid is
    deep (bounded memory; the same numbers as one pass, since the halo is wider than the
    receptive field and slabs start on even planes)."""
    z = x.shape[1]
    feats, scale = inputs(x[:, None], base), detail(x[:, None])
    if z <= SLAB + 2 * HALO:
        return net.body(feats, scale)
    out = x.new_empty((x.shape[0], SUB) + tuple(x.shape[1:]))
    for z0 in range(0, z, SLAB):
        z1 = min(z, z0 + SLAB)
        a, b = max(0, z0 - HALO), min(z, z1 + HALO)
        out[:, :, z0:z1] = net.body(feats[:, :, a:b], scale[:, :, a:b])[:, :, z0 - a:z1 - a]
    return out


def residual_values(net: PriorNet, field: torch.Tensor,
                    coef: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The residual of each field of ``field`` [N, Z, Y, X] (a kept step's values at the
    data's points, any units) on the fine lattice [N, Zf, Yf, Xf], in the field's units;
    ``coef`` [N, Z+2, Y+2, X+2]: the spline's coefficients through them where known (the
    model's own base: no prefilter to solve again)."""
    x, centre, half = normalise(field.to(torch.float32))
    base = None
    if coef is not None:
        safe = torch.where(half > MIN_RANGE, half, torch.ones_like(half))
        base = (spline_on_fine_lattice(None, coef.to(torch.float32)) -
                centre.view(-1, 1, 1, 1)) / safe.view(-1, 1, 1, 1)
    with torch.no_grad():
        sub = _run(net, x, base) * half.view(-1, 1, 1, 1, 1)
    return scatter_fine(sub, field.shape[1:])


def _interp_taps(local: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keys' cubic convolution (a = -1/2, Catmull-Rom) through ``n`` samples spanning
    [-1, 1] at local coordinates ``local`` [m]: per point 4 sample indices [m, 4] and their
    weights [m, 4] (float64). Weight 1 at the samples themselves; past the ends the samples
    continue linearly (the phantom sample is 2 p0 - p1), so a linear run is reproduced up
    to the faces."""
    m = local.shape[0]
    if n == 1:
        w = torch.zeros(m, 4, dtype=torch.float64, device=local.device)
        w[:, 1] = 1.0
        return torch.zeros(m, 4, dtype=torch.long, device=local.device), w
    idx = ((local.to(torch.float64) + 1) * 0.5 * (n - 1)).clamp(0, n - 1)
    i = idx.floor().clamp(0, n - 2)
    f = idx - i
    f2, f3 = f * f, f * f * f
    w = torch.stack([(-f3 + 2 * f2 - f) / 2, (3 * f3 - 5 * f2 + 2) / 2,
                     (-3 * f3 + 4 * f2 + f) / 2, (f3 - f2) / 2], dim=1)      # [m, 4]
    low, high = (i == 0), (i == n - 2)
    w0, w3 = torch.where(low, w[:, 0], 0.0), torch.where(high, w[:, 3], 0.0)
    w = w + torch.stack([-w0, 2 * w0 - w3, 2 * w3 - w0, -w3], dim=1)
    taps = (i.long()[:, None] - 1 + torch.arange(4, device=local.device)[None]).clamp(0, n - 1)
    return taps, w


def interp_matrix(local: torch.Tensor, n: int) -> torch.Tensor:
    """[m, n] weights of :func:`_interp_taps` (4 non-zeros a row): the prior's residual on
    the fine lattice's ``n`` points of an axis, at ``local`` [m]."""
    taps, w = _interp_taps(local, n)
    out = torch.zeros(local.shape[0], n, dtype=torch.float64, device=local.device)
    return out.scatter_add_(1, taps, w).to(torch.float32)


def interp_sample(values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``values`` [C, Z, Y, X] interpolated as :func:`interp_matrix` weighs them at local
    points ``p`` [N, 3] (x, y, z in [-1, 1]) -> [N, C]."""
    c, z, y, x = values.shape
    (tx, wx), (ty, wy), (tz, wz) = (_interp_taps(p[:, a].contiguous(), n)
                                    for a, n in enumerate((x, y, z)))
    flat = values.reshape(c, -1)
    out = values.new_zeros((p.shape[0], c))
    for a in range(4):
        for b in range(4):
            w_ab = (wz[:, a] * wy[:, b]).to(values.dtype)
            row = (tz[:, a] * y + ty[:, b]) * x
            for d in range(4):
                out += (w_ab * wx[:, d].to(values.dtype))[:, None] * flat[:, row + tx[:, d]].t()
    return out


def node_values(coef: torch.Tensor) -> torch.Tensor:
    """The spline's values at the data's points from its coefficients [..., Z+2, Y+2, X+2]
    -> [..., Z, Y, X] (the cubic B-spline's (1, 4, 1) / 6 per axis)."""
    for dim in (-1, -2, -3):
        n = coef.shape[dim] - 2
        coef = (coef.narrow(dim, 0, n) + 4 * coef.narrow(dim, 1, n)
                + coef.narrow(dim, 2, n)) / 6
    return coef


# --- the shipped weights --------------------------------------------------------------------
def weights_digest(path: Optional[str] = None) -> bytes:
    """The sha256 of a weights file (default: the shipped one): what a model file records
    of the shipped weights it uses."""
    with open(path or WEIGHTS_PATH, "rb") as fh:
        return hashlib.sha256(fh.read()).digest()


def save_weights(net: PriorNet, path: str, provenance: Optional[Dict[str, Any]] = None
                 ) -> None:
    """The weights to ``path`` and ``provenance`` (if given) to ``path`` with .json, each
    written to a temp file and renamed (a killed training leaves the files as they were)."""
    save_network(net, path, FORMAT, provenance)


def load_weights(path: Optional[str] = None) -> PriorNet:
    """The network in ``path`` (default: the weights shipped with the package), frozen."""
    payload = read_network(path or WEIGHTS_PATH, FORMAT, "spatial prior")
    net = PriorNet(**payload["settings"])
    net.load_state_dict(payload["state_dict"])
    return net.requires_grad_(False).eval()


def copy_net(net: PriorNet) -> PriorNet:
    """A trainable copy of ``net`` (the start of a fine-tuning)."""
    out = PriorNet(**net.settings())
    out.load_state_dict({k: v.detach().clone() for k, v in net.state_dict().items()})
    return out.to(next(net.parameters()).device).requires_grad_(True).train()


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- training (offline: bench/train_space_prior.py; on a model's series: space_tune.py) -----
MSE_FLOOR = 1e-8     # normalised units (range 2): residuals below ~86 dB count as that


def valid_mask(dims: Sequence[int], device: Optional[torch.device] = None) -> torch.Tensor:
    """[1, SUB, Z, Y, X]: 1 where a sub-lattice point of a grid of ``dims`` (z, y, x) lies
    inside its fine lattice."""
    return gather_fine(torch.ones((1,) + fine_dims(dims), device=device))


def log_ratio(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              floor: float = MSE_FLOOR) -> torch.Tensor:
    """Per field log((MSE left + floor) / (MSE of the residual + floor)) [B], over the
    fine lattice's points under ``mask`` (the data's points, where both are 0, counted as
    well: a PSNR over the grid): -ln 10 / 10 times the field's change of PSNR."""
    count = mask.flatten(1).sum(1) * 8 / 7
    left = ((pred - target) ** 2 * mask).flatten(1).sum(1) / count
    base = (target ** 2 * mask).flatten(1).sum(1) / count
    return torch.log((left + floor) / (base + floor))


def random_crop(tensors: Sequence[torch.Tensor], mask: torch.Tensor, size: int,
                gen: torch.Generator, margin: int = 4) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """``tensors`` ([B, C, Z, Y, X] each: the network's inputs, its scale, the target) and
    the loss ``mask`` [1, SUB, Z, Y, X] cut to at most ``size`` points per axis at one random
    place; the mask is 0 within ``margin`` points of the cut's inner faces, where the
    network sees an edge the data does not have (the data's own faces stay in)."""
    cut = []
    for d, n in enumerate(mask.shape[2:]):
        if n <= size:
            cut.append(slice(0, n))
            continue
        a = int(torch.randint(0, n - size + 1, (), generator=gen))
        cut.append(slice(a, a + size))
        inner = torch.ones(n, device=mask.device)
        if a > 0:
            inner[a:a + margin] = 0
        if a + size < n:
            inner[a + size - margin:a + size] = 0
        shape = [1, 1, 1, 1, 1]
        shape[d + 2] = n
        mask = mask * inner.view(shape)
    sl = (slice(None), slice(None)) + tuple(cut)
    return [t[sl] for t in tensors], mask[sl]


def spline_on_fine_lattice(values: Optional[torch.Tensor],
                           coef: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The base (the cubic B-spline through ``values`` [N, Z, Y, X], as the engine fits it;
    or with the coefficients ``coef`` [N, Z+2, Y+2, X+2] themselves) at the points of the
    fine lattice -> [N, Zf, Yf, Xf]: what the residual is added to."""
    from .grid_plan import lattice_axes, separable, spline_matrix
    if coef is None:
        coef = bspline_coefficients(values.to(torch.float32))
    dims = tuple(n - 2 for n in coef.shape[1:])
    axes = lattice_axes(fine_dims(dims), coef.device)                     # x, y, z
    mats = [spline_matrix(a, n) for a, n in zip(axes, dims[::-1])]
    return separable(coef, mats)
