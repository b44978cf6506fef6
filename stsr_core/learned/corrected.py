"""The fast model with the learned correction (preset ``liif``): FastNet's spline base, then
training pairs one level down, the decoder and its measured share. The correction is kept
beside the base and added at query time (prediction.py), never by the training loop.

It lives here, above model/, so that arrows run one way: learned/ uses model/'s base,
model/ knows nothing of learned/; stsr_core/kinds.py picks this class for ``learn=true``.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Union

import torch

from ..config import FastNetConfig
from ..model import FieldSpec
from ..model.fast import FastNet
from ..model.steps import Steps, as_steps
from .correction import CorrectionConfig, LearnedCorrection, learn_across_scales
from .decoder import DecoderConfig
from .pairs import KINDS, build_pairs, lower_pairs, probe_lattice_points

LEARN_PAIR_SHARE = 0.25   # of the learned correction's time: the pairs' own base fits


class CorrectedFastNet(FastNet):
    def __init__(self, cfg: FastNetConfig, spec: FieldSpec):
        super().__init__(cfg, spec)
        if self.base is None:
            raise ValueError("the learned correction (learn) needs the spline base")
        if self.has_network:
            raise ValueError("the learned correction (learn) replaces the network: "
                             "set network=false")
        if self.base.space is not None:
            raise ValueError("the learned correction (learn) and the spatial prior "
                             "(space_prior) both correct the base: set space_prior=off")
        self.correction = LearnedCorrection(spec.n_vars, self._decoder_config())
        # trained by init_from_data on pairs of its own, not by the training loop
        self.correction.requires_grad_(False)

    def _decoder_config(self) -> DecoderConfig:
        """The decoder's sizes, the config's learn_features and learn_hidden (the trained
        one and the one kept must agree: a non-default size failed to load before)."""
        return DecoderConfig(features=self.cfg.learn_features, hidden=self.cfg.learn_hidden)

    def init_from_data(self, data: Union[torch.Tensor, Steps],
                       progress: Optional[Callable[[float], Optional[bool]]] = None,
                       budget_s: Optional[float] = None) -> Optional[bool]:
        """The base, then pairs one level down, then the decoder and its measured share
        (learned/): progress runs 0-0.2 over the base fit, 0.2-0.35 over the pairs and
        0.35-1 over the decoder's training. The pairs are cut from the whole series, held
        in memory (fitting.py checks before any work that it fits)."""
        data = as_steps(data).whole()
        opts = self.flow_options()
        t0 = time.perf_counter()
        cfg = self.cfg
        learn_s = None if budget_s is None else cfg.learn_share * budget_s

        def part(lo: float, hi: float):
            if progress is None:
                return None
            return lambda f: progress(lo + (hi - lo) * f)

        base_budget = None if budget_s is None else budget_s - learn_s
        if self.base.fit(data, opts, part(0.0, 0.2), base_budget) is False:
            return False
        left = None if budget_s is None else max(0.0, budget_s - (time.perf_counter() - t0))
        pair_s = None if left is None else LEARN_PAIR_SHARE * left
        kw = {"base_time": cfg.base_time, "flow_coarsen": cfg.flow_coarsen,
              "flow_max_points": cfg.flow_max_points, "flow_path": cfg.flow_path,
              "path_values": cfg.path_values, "boundary": cfg.spline_boundary,
              "between_smoothing": cfg.between_smoothing}
        kinds = {"all": KINDS, "space": ("space",),
                 "time": ("space_time", "time")}[cfg.learn_pairs]
        pairs = build_pairs(data, self.base.slot_times.tolist(), kw, opts,
                            budget_s=None if pair_s is None else pair_s / 4, kinds=kinds)
        lower = lower_pairs(data, self.base.slot_times.tolist(), kw, opts,
                            budget_s=None if pair_s is None else pair_s / 8,
                            kinds=kinds) if pairs else []
        if progress is not None and progress(0.35) is False:
            return False
        self.learn_notes = []
        if not pairs:
            self.learn_notes.append("the data is too small to make training pairs (fewer "
                                    "than 3 steps and no axis with 7 points): the base alone")
            return None
        left = None if budget_s is None else max(0.0, budget_s - (time.perf_counter() - t0))
        trained = learn_across_scales(pairs, lower, self.n_vars,
                                      CorrectionConfig(decoder=self._decoder_config(), seed=0),
                                      budget_s=left,
                                      max_steps=cfg.learn_steps if left is None else None,
                                      progress=part(0.35, 1.0))
        self._trust_only_what_carries_over(trained, tuple(data.shape[-1:-4:-1]), data.shape[1])
        self.correction.load_state_dict(trained.state_dict())
        self.correction.report = trained.report
        return False if trained.report.get("stopped") == "cancelled" else None

    def _trust_only_what_carries_over(self, trained, dims_xyz, n_steps: int) -> None:
        """Shares of data too small for what one level down teaches to carry over (the
        config's learn_min_points / learn_min_steps) are set to 0: the base alone there,
        with the error estimate still given. Says so in learn_notes."""
        cfg = self.cfg
        points = probe_lattice_points(dims_xyz)
        if points < cfg.learn_min_points:
            trained.share[0].zero_()
            self.learn_notes.append(
                f"kept steps: the base alone (the probe's lattice has {points} points per "
                f"axis, fewer than learn_min_points = {cfg.learn_min_points}: too small "
                "for what it learns to carry over)")
        if n_steps < cfg.learn_min_steps:
            trained.share[1].zero_()
            self.learn_notes.append(
                f"in-between steps: the base alone ({n_steps} kept steps, fewer than "
                f"learn_min_steps = {cfg.learn_min_steps})")
        trained.report["share_kept"] = [float(x) for x in trained.share[0]]
        trained.report["share_between"] = [float(x) for x in trained.share[1]]
        trained.report["notes"] = list(self.learn_notes)
