"""Fitting a model to a series: a new run (the model built from a preset and fitted to the
data, which counts as training time) or a resumed one, then training (train.py's loop,
data-parallel in a group of processes) and the final save."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from . import distributed
from .blocks import normalise_times
from .config import DEFAULT_PRESET, TrainConfig, preset as get_preset
from .errors import StsrError
from .kinds import build_model
from .model import kernels
from .model.slots import FileSlots
from .model import FieldModel
from .fitdata import (FitSource, NormalisedSteps, check_memory, fit_source, plan_fit,
                      scan_stats)
from .io.base import SeriesReader
from .normalize import VariableStats
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
    data: Optional[torch.Tensor]    # [V, T, Z, Y, X] normalised on the model's device, for
                                    # training on samples; None when nothing is trained
    optimizer: Optional[torch.optim.Optimizer]    # None: nothing to train (the base alone)
    device: torch.device
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


def _trains_on_samples(mcfg: Any) -> bool:
    """Whether a model of this config is trained on samples of the whole series (a network,
    or the learned correction), which then is held in memory, normalised."""
    return mcfg.kind != "fast" or bool(mcfg.network) or mcfg.base == "none" or bool(mcfg.learn)


def _prepare(src: FitSource, preset: str, mcfg: Any,
             stats: Optional[Dict[str, VariableStats]] = None,
             trains: Optional[bool] = None,
             slots_folder: Optional[str] = None) -> Dict[str, VariableStats]:
    """Before any work: the memory plan (one line when it does not fit, see fitdata.py),
    then the statistics from one pass over the steps (``stats`` given: a saved model's,
    only the values checked when the series is trained on). ``slots_folder``: where the
    base's coefficients are kept instead of memory (see :func:`_slots_folder`)."""
    trains = _trains_on_samples(mcfg) if trains is None else trains
    spline = mcfg.kind == "fast" and mcfg.base == "spline"
    if spline:       # the compiled kernels' code mapped before the plan counts what is left
        kernels.warm_up()
    plan = plan_fit(src, trains, spline, spline and bool(mcfg.base_trainable) and trains,
                    getattr(mcfg, "base_time", "select"), slots_folder is not None)
    check_memory(plan, src, preset, trains)
    if stats is None:
        return scan_stats(src)
    if trains:
        scan_stats(src)                                  # NaN/Inf refused as for a new fit
    return stats


def _slots_folder(src: FitSource, mcfg: Any, near: Optional[str]) -> Optional[str]:
    """Where the fast base keeps its coefficients while a series on disk is fitted: a
    scratch file beside the model file ``near`` (or in the temporary folder), so that the
    fit holds a step at a time, not a model the size of the data; None (in memory) for a
    series in memory, a base that is trained, or a disk without room for them."""
    if src.series is not None or _trains_on_samples(mcfg) or mcfg.kind != "fast" \
            or mcfg.base != "spline":
        return None
    folder = os.path.dirname(os.path.abspath(near)) if near else tempfile.gettempdir()
    nx, ny, nz = src.dims
    need = 4 * src.n_times * len(src.variables) * (nx + 2) * (ny + 2) * (nz + 2)
    try:
        room = shutil.disk_usage(folder).free
    except OSError:
        return None
    return folder if room > 2 * need + (64 << 20) else None   # and the model file's room


def _start_run(src: FitSource, preset: str, tcfg: TrainConfig,
               model_overrides: Optional[Dict[str, Any]],
               callback: Optional[ProgressCallback], near: Optional[str] = None) -> _Run:
    """A new model of ``src``: built from the preset and fitted to the data (the fast
    base's spline and displacement fits, reading the steps one at a time), which counts as
    training time; the whole series is held, normalised, only to train on samples."""
    mcfg = _apply_overrides(get_preset(preset)[0], model_overrides, "model")
    folder = _slots_folder(src, mcfg, near)
    stats = distributed.together(lambda: _prepare(src, preset, mcfg, slots_folder=folder),
                                 "checking the memory and reading the statistics")
    dev = _prepare_device(tcfg)
    info = ModelInfo(variables=list(src.variables), components={k: list(v) for k, v in
                                                               src.components.items()},
                     stats=stats, grid=src.grid, times=[float(t) for t in src.times],
                     heads=int(getattr(mcfg, "heads", 1)), preset=preset,
                     metadata=dict(src.metadata))
    try:
        model = build_model(mcfg, info.field_spec()).to(dev)
    except ValueError as exc:        # a setting out of range, e.g. base_time="flw"
        raise StsrError(f"preset '{preset}' with the given settings: {exc}") from None
    if folder is not None:        # the coefficients to a file as they are made (slots.py)
        model.base.keep_slots_in(FileSlots.scratch(folder, model.base.slots_shape()))
    steps = NormalisedSteps(src, info.stats, dev)
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
        steps, progress=init_progress if callback is not None else None,
        budget_s=None if budget is None else INIT_BUDGET_SHARE * budget) is False
    if distributed.active():     # one rank stopped (a signal to it alone): none trains
        cancelled = distributed.any_rank(cancelled, "agreeing whether the fit was stopped")
    info.history["init_notes"] = (list(getattr(getattr(model, "base", None), "fit_notes", []))
                                  + list(getattr(model, "learn_notes", [])))
    choice = getattr(getattr(model, "base", None), "selection", None)
    if choice:                 # base_time select: what the held-out steps said (stsr info)
        info.history["time_choice"] = dict(choice)
    refine = getattr(getattr(model, "base", None), "refine_report", None)
    if refine:                 # side_net refine: the time refinement's gate (stsr info)
        info.history["time_refine"] = dict(refine)
    if getattr(model, "correction", None) is not None:
        info.history["learned"] = dict(model.correction.report)
    if getattr(model, "space_report", None):    # the spatial prior's choice (stsr info)
        info.history["space_prior"] = dict(model.space_report)
    tm = TrainedModel(model, info, mcfg, tcfg)
    init_s = time.perf_counter() - t_init
    data = steps.whole() if optimizer is not None and not cancelled else None
    return _Run(tm, data, optimizer, dev, init_s=init_s, init_cancelled=cancelled)


def _optimizer(model: FieldModel, tcfg: TrainConfig) -> Optional[torch.optim.Optimizer]:
    """Adam over the trainable weights; None when there are none (the fast base alone)."""
    if not any(p.requires_grad for p in model.parameters()):
        return None
    return make_optimizer(model, tcfg)


def _resume_run(resume: TrainedModel, src: FitSource, tcfg: TrainConfig) -> _Run:
    """A saved model and its optimiser state, to train on with a new budget (the series is
    read, normalised with the model's statistics, only when there is something to train)."""
    check_compatible(resume, src)
    trains = any(p.requires_grad for p in resume.model.parameters())
    distributed.together(lambda: _prepare(src, resume.info.preset, resume.model_config,
                                          resume.info.stats, trains),
                         "checking the memory and the data")
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
    data = (NormalisedSteps(src, resume.info.stats, dev).whole() if optimizer is not None
            else None)
    return _Run(tm, data, optimizer, dev, start_step=int(h.get("steps", 0)),
                start_elapsed=float(h.get("elapsed_s", 0.0)), resumed=True)


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
        sampler = BatchSampler(run.data, info.layout, times_norm,  # type: ignore[arg-type]
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
    info.history.update({"device": str(run.device), "n_parameters": tm.n_parameters(),
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


def fit(series: Union[VolumeSeries, SeriesReader, FitSource], preset: str = DEFAULT_PRESET,
        *, steps: Optional[int] = None, max_minutes: Optional[float] = None,
        device: str = "auto", seed: Optional[int] = None,
        callback: Optional[ProgressCallback] = None, checkpoint_path: Optional[str] = None,
        resume: Optional[TrainedModel] = None,
        model_overrides: Optional[Dict[str, Any]] = None,
        train_overrides: Optional[Dict[str, Any]] = None) -> TrainedModel:
    """Train a model of every variable of ``series``: a :class:`VolumeSeries` in memory
    (never copied whole: its steps are normalised one at a time), or a series on disk (a
    step reader, :func:`stsr_core.io.open_series_reader`, or :func:`fitdata.open_source`),
    read one step at a time. Before any work the fit's memory plan is checked against what
    this process may use (one line saying what is needed when it does not fit).

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
    src = fit_source(series)
    base_tcfg = resume.train_config if resume is not None else get_preset(preset)[1]
    tcfg = _train_config(base_tcfg, train_overrides, steps, max_minutes, device, seed)
    if resume is not None:
        run = _resume_run(resume, src, tcfg)
    else:
        run = _start_run(src, preset, tcfg, model_overrides, callback, checkpoint_path)
    return _train(run, callback, checkpoint_path)
