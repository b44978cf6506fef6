"""Networks. Every model kind implements the :class:`FieldModel` interface so that training,
inference and the model file never depend on the kind. ``stsr_core.kinds.build_model`` builds
the kind a config names (above model/ and learned/, which adds the fast kind's correction).

Interface (all tensors on the model's device):
    forward(coords [N, 4] local (x, y, z, t) in [-1, 1],
            var_idx [V] long,
            heads [N] long or None,
            codes [V, D] or None)  ->  [V, N, n_heads] if heads is None else [V, N]
    * ``codes`` replaces the latent lookup ``latent_mu[var_idx]`` (the trainer passes
      mu + sigma * eps; blending passes interpolated codes). Models without latents ignore it.
    * ``heads`` picks one head per point (inference at arbitrary points).
    * outputs are normalised values (about [-1, 1]).
    regularization() -> scalar tensor added to the loss (0 for most kinds).
    init_from_data(data [V, T, Z, Y, X] normalised or steps.Steps (read a step at a time),
      progress, budget_s) -> None: called once before training (not on resume); models that start from the data (the fast kind's
      base) use it, within ``budget_s`` seconds when given.
    latent_mu: nn.Parameter [n_vars, D] or None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Union

import torch
from torch import nn

if TYPE_CHECKING:
    from .steps import Steps


@dataclass(frozen=True)
class FieldSpec:
    """What a model needs to know about the data it will fit."""

    n_vars: int
    n_heads: int                     # from BlockLayout (may be < cfg.heads for thin grids)
    block_dims: Tuple[int, int, int]  # points per axis of one head's block (x, y, z)
    n_times: int                     # input timesteps
    times_norm: Optional[Tuple[float, ...]] = None  # input times in [-1, 1] (None: even)


class FieldModel(nn.Module):
    n_heads: int = 1
    latent_mu: Optional[nn.Parameter]  # models without codes: register_parameter("latent_mu", None)

    def forward(self, coords: torch.Tensor, var_idx: torch.Tensor,
                heads: Optional[torch.Tensor] = None,
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def regularization(self) -> torch.Tensor:
        p = next(self.parameters())
        return p.new_zeros(())

    def init_from_data(self, data: "Union[torch.Tensor, Steps]",
                       progress: Optional[Callable[[float], Optional[bool]]] = None,
                       budget_s: Optional[float] = None) -> Optional[bool]:
        """Most kinds start from random weights and ignore the data. Kinds that fit
        themselves to ``data`` (normalised [V, T, Z, Y, X], or steps.py's Steps) call ``progress(fraction done)`` as they go and stop early,
        returning False, when it returns False."""

