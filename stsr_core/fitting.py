"""Fitting a model to a series: a new run (the model built from a preset and fitted to the
data, which counts as training time) or a resumed one, then training (train.py's loop,
data-parallel in a group of processes) and the final save."""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from . import distributed
from .blocks import normalise_times
from .config import DEFAULT_PRESET, TrainConfig, preset as get_preset
from .errors import StsrError
from .kinds import build_model
from .model import FieldModel
from .normalize import compute_stats
from .series import VolumeSeries
from .train import (BatchSampler, ProgressCallback, TrainProgress, budget_fraction,
                    budget_seconds, make_optimizer, resolve_device, train_loop)
from .trained import ModelInfo, TrainedModel, check_compatible, save_model

# share of a time budget the model's fit to the data may take (the rest: training steps,
# saving, and the slack of a fit step that cannot be cut short)
INIT_BUDGET_SHARE = 0.85


def _apply_overrides(cfg: Any, overrides: Optional[Dict[str, Any]], what: str) -> Any:
    if not overrides:
        return cfg
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise StsrError(f"unknown {what} option(s) {bad}; known: {sorted(names)}")
    return dataclasses.replace(cfg, **overrides)

@dataclass
class _Run:
    """What a training run starts from: a fresh model fitted to the data, or a saved one."""

    tm: TrainedModel
    data: torch.Tensor              # [V, T, Z, Y, X] normalised, on the model's device
    optimizer: Optional[torch.optim.Optimizer]    # None: nothing to train (the base alone)
    start_step: int = 0
    start_elapsed: float = 0.0
    init_s: float = 0.0             # the model's fit to the data (counts as training time)
    init_cancelled: bool = False
    resumed: bool = False


def _train_config(tcfg: TrainConfig, overrides: Optional[Dict[str, Any]],
                  steps: Optional[int], max_minutes: Optional[float], device: str,
                  seed: Optional[int]) -> TrainConfig:
    """The run's training settings: the model's or preset's, with the caller's changes."""
    tcfg = _apply_overrides(tcfg, overrides, "training")
    if steps is not None or max_minutes is not None:
        tcfg = dataclasses.replace(tcfg, steps=steps, max_minutes=max_minutes)
    if seed is not None:
        tcfg = dataclasses.replace(tcfg, seed=int(seed))
    return dataclasses.replace(tcfg, device=device)    # checks every setting's range


def _prepare_device(tcfg: TrainConfig) -> torch.device:
    dev = resolve_device(tcfg.device)
    if tcfg.num_threads and dev.type == "cpu":
        torch.set_num_threads(int(tcfg.num_threads))
    torch.manual_seed(tcfg.seed)
    return dev


def _normalised_data(info: ModelInfo, series: VolumeSeries, dev: torch.device) -> torch.Tensor:
    data = np.stack([info.stats[n].normalise(series.variables[n]) for n in info.variables])
    return torch.from_numpy(data).to(dev)                               # [V, T, Z, Y, X]


def _start_run(series: VolumeSeries, preset: str, tcfg: TrainConfig,
               model_overrides: Optional[Dict[str, Any]],
               callback: Optional[ProgressCallback]) -> _Run:
    """A new model of ``series``: built from the preset and fitted to the data (the fast
    base's spline and displacement fits), which counts as training time."""
    mcfg = _apply_overrides(get_preset(preset)[0], model_overrides, "model")
    dev = _prepare_device(tcfg)
    names = list(series.variables)
    info = ModelInfo(variables=names, components={k: list(v) for k, v in
                                                  series.components.items()},
                     stats=compute_stats(series), grid=series.grid,
                     times=[float(t) for t in series.times],
                     heads=int(getattr(mcfg, "heads", 1)), preset=preset,
                     metadata=dict(series.metadata))
    try:
        model = build_model(mcfg, info.field_spec()).to(dev)
    except ValueError as exc:        # a setting out of range, e.g. base_time="flw"
        raise StsrError(f"preset '{preset}' with the given settings: {exc}") from None
    data = _normalised_data(info, series, dev)
    optimizer = _optimizer(model, tcfg)
    t_init = time.perf_counter()
    # the fit to the data's share of the progress bar when no time budget measures it:
    # all of it when nothing is trained after it (the fast base alone), a tenth otherwise
    init_share = 1.0 if optimizer is None else 0.1

    def init_progress(done: float) -> Optional[bool]:
        el = time.perf_counter() - t_init
        return callback(TrainProgress(  # type: ignore[misc]
            0, tcfg.steps, el, budget_seconds(tcfg), math.nan, math.nan,
            max(budget_fraction(tcfg, 0, el), init_share * done), phase="init",
            init_fraction=done))

    # the fit to the data counts against the time budget: it may use most of it
    budget = budget_seconds(tcfg)
    cancelled = model.init_from_data(
        data, progress=init_progress if callback is not None else None,
        budget_s=None if budget is None else INIT_BUDGET_SHARE * budget) is False
    if distributed.active():     # one rank stopped (a signal to it alone): none trains
        cancelled = distributed.any_rank(cancelled, "agreeing whether the fit was stopped")
    info.history["init_notes"] = (list(getattr(getattr(model, "base", None), "fit_notes", []))
                                  + list(getattr(model, "learn_notes", [])))
    choice = getattr(getattr(model, "base", None), "selection", None)
    if choice:                 # base_time select: what the held-out steps said (stsr info)
        info.history["time_choice"] = dict(choice)
    if getattr(model, "correction", None) is not None:
        info.history["learned"] = dict(model.correction.report)
    if getattr(model, "space_report", None):    # the spatial prior's choice (stsr info)
        info.history["space_prior"] = dict(model.space_report)
    tm = TrainedModel(model, info, mcfg, tcfg)
    return _Run(tm, data, optimizer, init_s=time.perf_counter() - t_init,
                init_cancelled=cancelled)


def _optimizer(model: FieldModel, tcfg: TrainConfig) -> Optional[torch.optim.Optimizer]:
    """Adam over the trainable weights; None when there are none (the fast base alone)."""
    if not any(p.requires_grad for p in model.parameters()):
        return None
    return make_optimizer(model, tcfg)


def _resume_run(resume: TrainedModel, series: VolumeSeries, tcfg: TrainConfig) -> _Run:
    """A saved model and its optimiser state, to train on with a new budget."""
    check_compatible(resume, series)
    dev = _prepare_device(tcfg)
    model = resume.model.to(dev)
    optimizer = _optimizer(model, tcfg)
    if optimizer is not None and resume.optimizer_state is not None:
        try:
            optimizer.load_state_dict(resume.optimizer_state)
        except ValueError:
            raise StsrError("the model file's optimizer state does not fit this stsr's model "
                            "(it was written by an older version): fit anew") from None
        for group in optimizer.param_groups:   # base_lr is not part of the saved state
            group.setdefault("base_lr", group["lr"])
    h = resume.info.history
    tm = TrainedModel(model, resume.info, resume.model_config, tcfg)
    return _Run(tm, _normalised_data(resume.info, series, dev), optimizer,
                start_step=int(h.get("steps", 0)), start_elapsed=float(h.get("elapsed_s", 0.0)),
                resumed=True)


def _train(run: _Run, callback: Optional[ProgressCallback],
           checkpoint_path: Optional[str]) -> TrainedModel:
    """The training path shared by new and resumed runs; saves the final model."""
    tm, tcfg, info = run.tm, run.tm.train_config, run.tm.info
    model, optimizer = tm.model, run.optimizer

    def checkpoint(step: int, elapsed: float) -> None:
        tm.info.history.update({"steps": step, "elapsed_s": elapsed, "stopped": "checkpoint"})
        tm.optimizer_state = optimizer.state_dict()  # type: ignore[union-attr]
        save_model(tm, checkpoint_path)  # type: ignore[arg-type]

    def on_progress(p: TrainProgress) -> Optional[bool]:
        p.trained = tm          # lets a hook evaluate the model mid-training
        return callback(p) if callback is not None else None

    if run.init_cancelled or optimizer is None:   # cancelled during the fit to the data,
        # or nothing to train: the model is what that fit made
        hist: Dict[str, Any] = {"steps": run.start_step, "loss": math.nan,
                                "elapsed_s": run.start_elapsed + run.init_s,
                                "batch_psnr": math.nan,
                                "stopped": "cancelled" if run.init_cancelled else "fitted"}
    else:
        times_norm = normalise_times(torch.tensor(info.times, dtype=torch.float64),
                                     info.times[0], info.times[-1])
        part, forward, weight = None, None, 1.0
        if distributed.world_size() > 1:   # data-parallel: each rank its slice of the batch
            part, forward, weight = _data_parallel(model, tcfg)
        sampler = BatchSampler(run.data, info.layout, times_norm,
                               seed=tcfg.seed + run.start_step, part=part)
        with distributed.collective("training (the gradients' all-reduce)"):
            hist = train_loop(model, sampler, tcfg, optimizer, start_step=run.start_step,
                              start_elapsed=run.start_elapsed, budget_spent_s=run.init_s,
                              callback=on_progress if callback is not None else None,
                              checkpoint=checkpoint if checkpoint_path else None,
                              forward=forward, loss_weight=weight)
    info.history.update(hist)
    if not run.resumed:
        info.history["init_s"] = run.init_s
    info.history.update({"device": str(run.data.device), "n_parameters": tm.n_parameters(),
                         "torch": str(torch.__version__),
                         "processes": distributed.world_size()})
    tm.optimizer_state = optimizer.state_dict() if optimizer is not None else None
    if checkpoint_path:
        save_model(tm, checkpoint_path)
    return tm


def _data_parallel(model: FieldModel, tcfg: TrainConfig
                   ) -> Tuple[Tuple[int, int], Callable[..., torch.Tensor], float]:
    """DistributedDataParallel over ``model`` for this rank: its slice of each batch (every
    rank draws the batch one process would, from the same stream), the wrapped forward, and
    the weight of its MSE that makes the averaged gradient the whole batch's."""
    from torch.nn.parallel import DistributedDataParallel
    dev = next(model.parameters()).device
    # parameters a batch may not reach (the base's slopes in time: kept steps only) are
    # found each step; the base's buffers are the same on every rank (fitted alike)
    with warnings.catch_warnings():    # broadcast_buffers' renaming notice (torch 2.13)
        warnings.simplefilter("ignore", FutureWarning)
        ddp = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None,
                                      find_unused_parameters=True, broadcast_buffers=False)
    batch = distributed.share_count(tcfg.batch_size)
    start = sum(distributed.share_count(tcfg.batch_size, r) for r in range(distributed.rank()))
    if batch < 1:
        raise StsrError(f"batch size {tcfg.batch_size} is smaller than the "
                        f"{distributed.world_size()} processes: give each at least one "
                        "sample (--batch-size)")
    weight = batch * distributed.world_size() / tcfg.batch_size
    return (start, start + batch), ddp, weight


def fit(series: VolumeSeries, preset: str = DEFAULT_PRESET, *, steps: Optional[int] = None,
        max_minutes: Optional[float] = None, device: str = "auto", seed: Optional[int] = None,
        callback: Optional[ProgressCallback] = None, checkpoint_path: Optional[str] = None,
        resume: Optional[TrainedModel] = None,
        model_overrides: Optional[Dict[str, Any]] = None,
        train_overrides: Optional[Dict[str, Any]] = None) -> TrainedModel:
    """Train a model of every variable of ``series``.

    Budget: ``steps`` and/or ``max_minutes`` replace the preset's; when only one is given the
    other limit is lifted. ``callback`` gets a :class:`TrainProgress` every ``log_every``
    steps (and, with ``phase="init"``, after each step of the model's fit to the data before
    training); returning False stops training cleanly. ``checkpoint_path`` receives a
    checkpoint every ``checkpoint_seconds`` of the training config (and the final model).
    ``resume`` continues a model returned by :func:`load_model` (same data required): the
    step count and elapsed time carry on.

    In a group of processes (:mod:`stsr_core.distributed`, e.g. under ``torchrun``) every
    rank calls this with the same data: the base's displacement fits are shared out and
    gathered, the network is trained data-parallel, and rank 0 alone writes
    ``checkpoint_path``; every rank returns the same model. ``resume`` may come from a run
    with any number of processes.
    """
    if not distributed.is_main():
        checkpoint_path = None
    series.validate()
    series.check_finite()
    base_tcfg = resume.train_config if resume is not None else get_preset(preset)[1]
    tcfg = _train_config(base_tcfg, train_overrides, steps, max_minutes, device, seed)
    if resume is not None:
        run = _resume_run(resume, series, tcfg)
    else:
        run = _start_run(series, preset, tcfg, model_overrides, callback)
    return _train(run, callback, checkpoint_path)
