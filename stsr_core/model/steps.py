"""The data a fit reads, one kept step at a time.

A fit never needs the whole normalised series at once: the spline is per step, the
displacements per interval on coarsened copies, the held-out choice on the half series, the
error calibration on a few steps. So the fit takes :class:`Steps`, which hands out one
normalised step ``[V, Z, Y, X]`` when asked, from wherever the series is (a tensor here; a
file or the caller's arrays in stsr_core/fitdata.py), and :meth:`Steps.whole` only for the
presets that train a network on samples of the whole series.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch


class Steps:
    """A series' normalised steps, read one at a time (subclasses say from where)."""

    n_vars: int
    n_steps: int
    shape: Tuple[int, int, int]          # (Z, Y, X)
    device: torch.device

    def step(self, k: int) -> torch.Tensor:
        """Step ``k`` normalised: float32 [V, Z, Y, X] on :attr:`device` (a new tensor or a
        view: callers do not write to it)."""
        raise NotImplementedError

    def whole(self) -> torch.Tensor:
        """Every step at once [V, T, Z, Y, X] (the presets that train on samples)."""
        out = torch.empty((self.n_vars, self.n_steps) + tuple(self.shape), device=self.device)
        for k in range(self.n_steps):
            out[:, k] = self.step(k)
        return out

    @property
    def step_bytes(self) -> int:
        """Bytes of one normalised step."""
        z, y, x = self.shape
        return 4 * self.n_vars * z * y * x


class TensorSteps(Steps):
    """Steps of a tensor [V, T, ...] already in memory."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.n_vars, self.n_steps = int(data.shape[0]), int(data.shape[1])
        self.shape = tuple(int(n) for n in data.shape[2:])  # type: ignore[assignment]
        self.device = data.device

    def step(self, k: int) -> torch.Tensor:
        return self.data[:, k]

    def whole(self) -> torch.Tensor:
        return self.data


def as_steps(data: Union[torch.Tensor, Steps]) -> Steps:
    """``data`` as :class:`Steps` (a tensor [V, T, ...] is wrapped)."""
    return data if isinstance(data, Steps) else TensorSteps(data)
