"""A model's use of the spatial prior (space_prior.py): per variable which network corrects
its kept steps (none, the shipped one, or the one fine-tuned on the model's own series,
chosen at the fit by space_tune.py), and each kept step's correction as its values on the
lattice twice as fine as the data's (looked up by local cubic convolution,
space_prior.interp_matrix), computed when first asked for.

The model file holds the choice per variable, the sha256 of the shipped weights it uses
(a model made with other shipped weights says so at its first use instead of predicting
something else) and the fine-tuned network's weights only when a variable uses them.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import StsrError
from . import kernels
from .grid_plan import separable
from .space_prior import (HALO, SLAB, PriorNet, fine_dims, interp_matrix, interp_sample,
                          load_weights, node_values, residual_values, weights_digest)

USES = ("base", "shipped", "tuned")     # the codes 0, 1, 2 of SpaceResidual.use

Residual = Tuple[torch.Tensor, torch.Tensor]   # (variables [v], fine values [v, Zf, Yf, Xf])


def fine_matrices(axes: Sequence[torch.Tensor], dims: Sequence[int]) -> List[torch.Tensor]:
    """Per axis (x, y, z) the matrices taking the fine lattice of a grid of ``dims``
    (x, y, z) points to the local coordinates ``axes`` (4 taps a row): what the residual's
    lattice values are evaluated with."""
    return [interp_matrix(a, n) for a, n in zip(axes, fine_dims(dims))]


class SpaceResidual(nn.Module):
    """Per variable the network that corrects its kept steps, and their corrections."""

    def __init__(self, n_vars: int):
        super().__init__()
        self.register_buffer("use", torch.zeros(int(n_vars), dtype=torch.long))
        self.register_buffer("shipped_sha", torch.zeros(32, dtype=torch.uint8))
        self.tuned: Optional[PriorNet] = None
        self._shipped: List[PriorNet] = []          # a list: not a submodule (not saved)
        self._cache: Dict[int, Optional[Residual]] = {}

    # --- the networks ---------------------------------------------------------------------
    def shipped(self) -> PriorNet:
        """The weights shipped with the package (loaded once)."""
        if not self._shipped:
            self._shipped.append(load_weights())
        return self._shipped[0]

    def set_use(self, use: Sequence[int], tuned: Optional[PriorNet]) -> None:
        """The choice per variable (codes of :data:`USES`) and the fine-tuned network (kept
        only if some variable uses it)."""
        self.use.copy_(torch.as_tensor(list(use), dtype=torch.long))
        self.tuned = tuned.requires_grad_(False).eval() if tuned is not None and \
            bool((self.use == 2).any()) else None
        if bool((self.use == 1).any()):
            self.shipped_sha.copy_(torch.frombuffer(bytearray(weights_digest()),
                                                    dtype=torch.uint8))
        self._cache = {}

    def active(self) -> bool:
        return bool((self.use > 0).any())

    def _net(self, code: int) -> PriorNet:
        if code == 2:
            if self.tuned is None:
                raise StsrError("the model's fine-tuned spatial prior is missing from its "
                                "file: fit it again")
            return self.tuned
        net = self.shipped()
        if bytes(self.shipped_sha.tolist()) != weights_digest():
            raise StsrError("this model was made with other shipped spatial prior weights "
                            "than this stsr's (space_prior_v1.pt differs): fit it again, or "
                            "use the stsr version that made it")
        return net

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the fine-tuned network is in the file only when some variable uses it; its sizes
        # are read off its weights
        stem = state_dict.get(prefix + "tuned.stem.weight")
        if stem is not None and self.tuned is None:
            width = state_dict[prefix + "tuned.fold.weight"].shape[0]
            blocks = sum(1 for k in state_dict if k.startswith(prefix + "tuned.trunk.")
                         and k.endswith(".weight"))
            self.tuned = PriorNet(stem.shape[0], width, blocks).requires_grad_(False)
        self._cache = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- the corrections ------------------------------------------------------------------
    def slot_residual(self, coef_of: Callable[[int], torch.Tensor], k: int
                      ) -> Optional[Residual]:
        """Kept step ``k``'s correction from its spline coefficients ``coef_of(k)``
        [V, Z+2, Y+2, X+2] (read only when not already computed): (the variables that have
        one [v], its values on the fine lattice [v, Zf, Yf, Xf]), or None
        when no variable uses the prior. Computed once per kept step and kept while it or
        a neighbour is in use (at most three kept steps: what the upscale's memory plan
        counts, slabs.py)."""
        if k in self._cache:
            return self._cache[k]
        out = None
        if self.active():
            coef = coef_of(k)
            values = node_values(coef)                                   # [V, Z, Y, X]
            idx = (self.use > 0).nonzero(as_tuple=True)[0]
            res = values.new_empty((len(idx),) + fine_dims(values.shape[1:]))
            for r, v in enumerate(idx.tolist()):  # a variable at a time: bounded scratch
                net = self._net(int(self.use[v])).to(values.device)
                res[r] = residual_values(net, values[v][None], coef[v][None])[0]
            out = (idx, res)
        self._cache = {i: v for i, v in self._cache.items() if abs(i - k) <= 1}
        self._cache[k] = out
        return out

    def memory_bytes(self, dims: Sequence[int]) -> int:
        """What the corrections of a grid of ``dims`` (z, y, x) points hold at most while
        an output is evaluated: three kept steps' fine-lattice values for the variables
        that use the prior, and one network pass's scratch (about 100 values a data point
        of the planes it runs on at once, space_prior.SLAB and HALO; the spline on the fine
        lattice: 8)."""
        used = int((self.use > 0).sum())
        if not used:
            return 0
        z, y, x = (int(n) for n in dims)
        fine = 4 * math.prod(fine_dims((z, y, x)))
        planes = z if z <= SLAB + 2 * HALO else SLAB + 2 * HALO
        return 3 * used * fine + 4 * (100 * planes + 8 * z) * y * x

    def clear(self) -> None:
        """Forget the corrections computed so far (the coefficients changed)."""
        self._cache = {}

    def add_grid(self, out: torch.Tensor, terms: Sequence[Tuple[Optional[Residual], object]],
                 fine_mats: Callable[[], Sequence[torch.Tensor]]) -> torch.Tensor:
        """Add to ``out`` [V, Zo, Yo, Xo] the sum of the corrections ``terms`` =
        [(slot_residual, weight), ...] on the grid (or slab, or window) whose fine-lattice
        matrices ``fine_mats()`` gives; a weight is a number or a per-variable tensor [V].
        One evaluation for all terms, from the lattice rows the grid reads alone."""
        given = [(res, wt) for res, wt in terms if res is not None]
        if not given:
            return out
        idx = given[0][0][0]                 # the same variables in every kept step
        weights = [wt.to(out)[idx] if torch.is_tensor(wt) else
                   torch.full((len(idx),), float(wt), dtype=out.dtype, device=out.device)
                   for _, wt in given]
        keep = (torch.stack(weights) != 0).any(0).nonzero(as_tuple=True)[0]
        if not len(keep):
            return out
        mats = fine_mats()
        lo, hi = kernels.used_rows(mats[2])
        comb = None
        for (_, vals), w in zip((res for res, _ in given), weights):
            part = vals[keep, lo:hi] * w[keep].to(vals).view(-1, 1, 1, 1)
            comb = part if comb is None else comb.add_(part)
        rows = separable(comb, list(mats[:2]) + [mats[2][:, lo:hi]])
        out.index_add_(0, idx[keep].to(out.device), rows.to(out.dtype))
        return out

    def sample(self, res: Optional[Residual], p: torch.Tensor, n_vars: int) -> Optional[
            torch.Tensor]:
        """The correction ``res`` at local points ``p`` [N, 3] -> [N, V] (None: none)."""
        if res is None:
            return None
        idx, coef = res
        out = p.new_zeros((p.shape[0], n_vars))
        out[:, idx] = interp_sample(coef.to(p), p)
        return out
