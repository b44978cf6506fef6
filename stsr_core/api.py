"""The engine's public face: fit, save, load, predict, blend. The CLI and the ParaView
plugin call only these functions (and the readers/writers in :mod:`stsr_core.io`)."""
from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import distributed, modelfile
from .blocks import BlockLayout, normalise_times
from .config import (DEFAULT_PRESET, TrainConfig, config_to_dict, model_config_from_dict,
                     preset as get_preset, train_config_from_dict)
from .errors import StsrError
from .grid import Grid
from .infer import DEFAULT_CHUNK, predict_grid
from .model import FieldModel, FieldSpec, build_model
from .normalize import VariableStats, compute_stats, stats_from_lists, stats_to_lists
from .series import VolumeSeries
from .train import (BatchSampler, ProgressCallback, TrainProgress, budget_fraction,
                    budget_seconds, make_optimizer, resolve_device, train_loop)

# share of a time budget the model's fit to the data may take (the rest: training steps,
# saving, and the slack of a fit step that cannot be cut short)
INIT_BUDGET_SHARE = 0.85

__all__ = ["ModelInfo", "TrainedModel", "TrainProgress", "fit", "save_model", "load_model",
           "model_bytes", "sub_grid", "check_extent",
           "output_grid", "output_times", "predict", "upscale", "predict_timestep", "check_compatible",
           "blend", "error_names", "has_error_estimate", "output_arrays"]


@dataclass
class ModelInfo:
    """Everything about the data a model was trained on, needed to answer queries."""

    variables: List[str]
    components: Dict[str, List[str]]
    stats: Dict[str, VariableStats]
    grid: Grid
    times: List[float]
    heads: int
    preset: str = ""
    history: Dict[str, Any] = field(default_factory=dict)
    # the source file's metadata (VolumeSeries.metadata), so that upscaled output written
    # in the source's format gets its attributes back
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.create(self.grid.dims, self.heads)

    def to_dict(self) -> Dict[str, Any]:
        return {"variables": list(self.variables),
                "components": {k: list(v) for k, v in self.components.items()},
                "stats": stats_to_lists(self.stats, self.variables),
                "dims": list(self.grid.dims), "origin": list(self.grid.origin),
                "spacing": list(self.grid.spacing), "times": list(self.times),
                "heads": self.heads, "preset": self.preset, "history": dict(self.history),
                "metadata": dict(self.metadata)}

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "ModelInfo":
        names = list(d["variables"])
        grid = Grid(d["dims"], d["origin"], d["spacing"])
        times = [float(t) for t in d["times"]]
        if not times or not all(math.isfinite(t) for t in times) \
                or any(b <= a for a, b in zip(times, times[1:])):
            raise StsrError(f"its times {times[:10]} are not finite and increasing")
        if not all(math.isfinite(v) and v > 0 for v in grid.spacing) \
                or not all(math.isfinite(v) for v in grid.origin):
            raise StsrError(f"its grid (origin {grid.origin}, spacing {grid.spacing}) needs a "
                            "finite origin and positive spacing")
        return ModelInfo(variables=names, components={k: list(v) for k, v in
                                                      d["components"].items()},
                         stats=stats_from_lists(d["stats"], names), grid=grid,
                         times=times, heads=int(d["heads"]),
                         preset=str(d.get("preset", "")), history=dict(d.get("history", {})),
                         metadata=dict(d.get("metadata", {})))


@dataclass
class TrainedModel:
    model: FieldModel
    info: ModelInfo
    model_config: Any
    train_config: TrainConfig
    optimizer_state: Optional[Dict[str, Any]] = None
    # the last output grid's evaluation plan (fast base): (grid, plan); one at a time, as it
    # holds an interval's fields on that grid
    plan: Optional[Tuple[Any, Any]] = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _spec(info: ModelInfo) -> FieldSpec:
    layout = info.layout
    t = torch.tensor(info.times, dtype=torch.float64)
    return FieldSpec(n_vars=len(info.variables), n_heads=layout.n_heads,
                     block_dims=layout.block_dims, n_times=len(info.times),
                     times_norm=tuple(normalise_times(t, info.times[0], info.times[-1]).tolist()))


def _payload(tm: TrainedModel) -> Dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in tm.model.state_dict().items()}
    payload = {"format": modelfile.FORMAT_NAME, "version": modelfile.FORMAT_VERSION,
               "model_config": config_to_dict(tm.model_config),
               "train_config": config_to_dict(tm.train_config),
               "state_dict": state, "info": tm.info.to_dict(),
               "step": int(tm.info.history.get("steps", 0))}
    payload["checksum"] = modelfile.checksum(payload)
    return payload


def save_model(tm: TrainedModel, path: str, with_optimizer: bool = True) -> None:
    """Write the model file atomically (temp file + rename): the model alone. With
    ``with_optimizer`` the optimiser state goes to :func:`modelfile.resume_path` beside it,
    so that ``fit(..., resume=...)`` continues where training stopped; a state left there
    by an earlier model is removed."""
    modelfile.write_atomic(path, _payload(tm))
    side = modelfile.resume_path(path)
    if with_optimizer and tm.optimizer_state is not None:
        modelfile.write_atomic(side, {"format": modelfile.RESUME_FORMAT,
                                      "step": int(tm.info.history.get("steps", 0)),
                                      "optimizer": tm.optimizer_state})
    elif os.path.exists(side):
        os.unlink(side)


def model_bytes(tm: TrainedModel) -> bytes:
    """The model as the bytes of its model file (without the optimiser state): what one
    process sends the others (ParaView's MPI ranks) instead of a file they may not see."""
    return modelfile.to_bytes(_payload(tm))


def load_model(path: str, device: str = "auto", data: Optional[bytes] = None
               ) -> TrainedModel:
    """The model in file ``path`` (or in ``data``, bytes from :func:`model_bytes`; ``path``
    then only names it in messages), on ``device``."""
    payload = modelfile.read(path, data)
    try:
        info = ModelInfo.from_dict(payload["info"])
        mcfg = model_config_from_dict(payload["model_config"])
        tcfg = train_config_from_dict(payload["train_config"])
        model = build_model(mcfg, _spec(info))
        model.load_state_dict(payload["state_dict"])
    except StsrError as exc:          # e.g. a grid of its info that is not one
        raise StsrError(f"model file '{path}' is inconsistent: {exc}") from None
    except Exception as exc:
        raise StsrError(f"model file '{path}' is inconsistent: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0]}") from None
    model.to(resolve_device(device)).eval()
    optimizer = payload.get("optimizer")            # format 3 kept it inside
    if optimizer is None and data is None:
        optimizer = modelfile.read_resume_state(path, int(payload.get("step", 0)))
    return TrainedModel(model, info, mcfg, tcfg, optimizer)


def _apply_overrides(cfg: Any, overrides: Optional[Dict[str, Any]], what: str) -> Any:
    if not overrides:
        return cfg
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise StsrError(f"unknown {what} option(s) {bad}; known: {sorted(names)}")
    return dataclasses.replace(cfg, **overrides)


def check_compatible(tm: TrainedModel, series: VolumeSeries) -> None:
    """Raise StsrError unless ``series`` has the variables, grid and times of the model."""
    info = tm.info
    problems = []
    if list(series.variables) != list(info.variables):
        problems.append(f"arrays {list(series.variables)} vs the model's {info.variables}")
    problems += [f"{d} (data vs model)" for d in series.grid.differences(info.grid)]
    if len(series.times) != len(info.times) or not np.allclose(series.times, info.times,
                                                               rtol=1e-6, atol=1e-9):
        problems.append(f"times {list(series.times)} vs the model's {info.times}")
    if problems:
        raise StsrError("the model does not match the data" + series.where() + ": "
                        + "; ".join(problems))


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
    tcfg = dataclasses.replace(tcfg, device=device)
    if tcfg.steps is not None and tcfg.steps < 0:
        raise StsrError(f"steps must be >= 0, got {tcfg.steps}")
    if tcfg.max_minutes is not None and tcfg.max_minutes <= 0:
        raise StsrError(f"max minutes must be > 0, got {tcfg.max_minutes}")
    return tcfg


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
        model = build_model(mcfg, _spec(info)).to(dev)
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
    info.history["init_notes"] = (list(getattr(getattr(model, "base", None), "fit_notes", []))
                                  + list(getattr(model, "learn_notes", [])))
    if getattr(model, "correction", None) is not None:
        info.history["learned"] = dict(model.correction.report)
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


# --- queries ------------------------------------------------------------------------------
def output_grid(grid_in: Grid, scale: Optional[float] = None,
                dims: Optional[Sequence[int]] = None) -> Grid:
    """The output grid over ``grid_in``'s bounds, as ParaView's ResampleToImage makes it: a
    scale s gives ``(dims_in - 1) * s + 1`` points per axis and spacing ``spacing_in / s``;
    ``dims`` sets the point counts directly."""
    if scale is not None and dims is not None:
        raise StsrError("give either a spatial scale or output dimensions, not both")
    if dims is not None:
        return grid_in.resampled(dims)
    return grid_in.scaled(1.0 if scale is None else scale)


def output_times(times_in: Sequence[float], time_scale: Optional[int] = None,
                 times: Optional[Sequence[float]] = None) -> np.ndarray:
    """The input times ``times_in`` with ``time_scale - 1`` evenly spaced steps inserted between each
    consecutive pair, or an explicit list."""
    if time_scale is not None and times is not None:
        raise StsrError("give either a time scale or a list of times, not both")
    t_in = np.asarray(list(times_in), dtype=np.float64)
    if times is not None:
        out = np.asarray(list(times), dtype=np.float64)
        if out.size == 0 or not np.all(np.isfinite(out)):
            raise StsrError(f"times must be a non-empty list of finite numbers, got {list(out)}")
        if len(t_in) == 1 and np.any(np.abs(out - t_in[0]) > 1e-12 * max(1, abs(t_in[0]))):
            raise StsrError(f"the model was trained on a single timestep ({t_in[0]:g}): it is "
                            "spatial only and cannot answer other times")
        return out
    k = 1 if time_scale is None else int(time_scale)
    if k < 1 or (time_scale is not None and k != time_scale):
        raise StsrError(f"time scale must be an integer >= 1, got {time_scale}")
    if k > 1 and len(t_in) == 1:
        raise StsrError("the model was trained on a single timestep: it is spatial only, so "
                        "a time scale > 1 has no in-between steps to make")
    if k == 1:
        return t_in.copy()
    pieces = [t_in[i] + (t_in[i + 1] - t_in[i]) * np.arange(k) / k for i in range(len(t_in) - 1)]
    return np.concatenate(pieces + [t_in[-1:]])


def _t_norm(info: ModelInfo, t: float) -> float:
    return float(normalise_times(torch.tensor([t], dtype=torch.float64), info.times[0],
                                 info.times[-1])[0])


Extent = Tuple[int, int, int, int, int, int]


def check_extent(grid: Grid, extent: Optional[Sequence[int]]) -> Extent:
    """``extent`` (x0, x1, y0, y1, z0, z1: inclusive point indices, as VTK writes them) as a
    tuple inside ``grid``; None: the whole grid. A non-empty box is required."""
    whole = (0, grid.dims[0] - 1, 0, grid.dims[1] - 1, 0, grid.dims[2] - 1)
    if extent is None:
        return whole
    ext = tuple(int(v) for v in extent)
    if len(ext) != 6 or any(ext[2 * a] < 0 or ext[2 * a] > ext[2 * a + 1]
                            or ext[2 * a + 1] >= grid.dims[a] for a in range(3)):
        raise StsrError(f"extent {list(extent)} is not a non-empty box inside the grid's "
                        f"{list(whole)}")
    return ext  # type: ignore[return-value]


def sub_grid(grid: Grid, extent: Sequence[int]) -> Grid:
    """The points of ``grid`` inside ``extent`` (inclusive indices) as a grid of their own."""
    return Grid([extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)],
                [o + extent[2 * a] * sp for a, (o, sp) in enumerate(zip(grid.origin,
                                                                       grid.spacing))],
                grid.spacing)


def _grid_plan(tm: TrainedModel, grid: Grid, extent: Optional[Extent] = None) -> Any:
    """The fast base's plan for evaluating whole ``grid``s (or the ``extent`` box of one) at
    once (separable filtering), or None where points must go through the model one by one:
    a network on top, or a grid that does not span the data's bounds."""
    model = tm.model
    base = getattr(model, "base", None)
    if base is None or getattr(model, "has_network", True):
        return None
    same = tm.info.grid.resampled(grid.dims)
    if same.differences(grid):
        return None
    key = (grid, extent)
    if tm.plan is None or tm.plan[0] != key:
        tm.plan = None                       # free the last plan's fields first
        axes = [torch.linspace(-1.0, 1.0, n, device=tm.device) for n in grid.dims]
        tm.plan = (key, base.plan_grid(axes, extent))
    return tm.plan[1]


def error_names(info: ModelInfo) -> Tuple[List[str], Dict[str, List[str]]]:
    """The error estimate's arrays: ``<name>_error`` per variable, and vectors' components
    grouped as ``<vector>_error`` (ParaView shows them as one vector array)."""
    names = [f"{n}_error" for n in info.variables]
    comps = {f"{k}_error": [f"{p}_error" for p in v] for k, v in info.components.items()}
    return names, comps


def has_error_estimate(tm: TrainedModel) -> bool:
    """Whether the model carries a learned correction, and so an error estimate."""
    return getattr(tm.model, "correction", None) is not None


def output_arrays(tm: TrainedModel, error: bool) -> Tuple[List[str], Dict[str, List[str]]]:
    """The scalar arrays an output of ``tm`` holds and how they group into vectors: the
    variables, and with ``error`` (when the model has an estimate) their error arrays."""
    names = list(tm.info.variables)
    comps = {k: list(v) for k, v in tm.info.components.items()}
    if error and has_error_estimate(tm):
        e_names, e_comps = error_names(tm.info)
        names, comps = names + e_names, {**comps, **e_comps}
    return names, comps


def _local_axes(grid: Grid, grid_in: Grid, device: torch.device) -> List[torch.Tensor]:
    """Per axis (x, y, z) the local coordinates in [-1, 1] of ``grid``'s points, in the
    frame of the model's grid ``grid_in`` (any box: the whole bounds or a piece of them)."""
    axes = []
    for n, o, s, n_in, o_in, s_in in zip(grid.dims, grid.origin, grid.spacing,
                                         grid_in.dims, grid_in.origin, grid_in.spacing):
        idx = (o + np.arange(n) * s - o_in) / s_in
        loc = 2.0 * idx / (n_in - 1) - 1.0 if n_in > 1 else np.zeros(n)
        axes.append(torch.tensor(loc, dtype=torch.float32, device=device))
    return axes


def predict_timestep(tm: TrainedModel, t: float, grid: Grid, chunk: int = DEFAULT_CHUNK,
                     progress: Optional[Callable[[float], Optional[bool]]] = None,
                     extent: Optional[Sequence[int]] = None, error: bool = False
                     ) -> Optional[Dict[str, np.ndarray]]:
    """Physical values of every variable at time ``t`` on ``grid``: name -> float32
    [Z, Y, X]; with ``extent`` (x0, x1, y0, y1, z0, z1, inclusive indices of ``grid``) on that
    box of it alone (an MPI or streamed piece: the same numbers as that region of the whole
    grid, to float32 rounding); with ``error`` and a model that has one, also the error
    estimate ``<name>_error`` (same units). Returns None if ``progress`` returned False. The
    fast base alone on a grid over the data's bounds (or a box of one) is evaluated whole
    (tens of millions of points a second); other models and grids go through the model in
    chunks of ``chunk`` points. A learned correction is added on any grid or box."""
    info = tm.info
    tn = _t_norm(info, t)
    ext = check_extent(grid, extent)
    box = None if ext == check_extent(grid, None) else ext
    plan = _grid_plan(tm, grid, box)
    target = grid if box is None else sub_grid(grid, box)
    correction = getattr(tm.model, "correction", None)
    corr = err = None
    if correction is not None:
        corr, err = correction.apply(tm.model.base, tn,
                                     _local_axes(target, info.grid, tm.device))
    if plan is not None:
        vals = tm.model.base.evaluate_grid(plan, tn)                    # [V, Z, Y, X]
        if corr is not None:
            vals.add_(corr)
        for i, n in enumerate(info.variables):    # to physical units where computed, in place
            st = info.stats[n]
            if st.hi > st.lo:
                vals[i].add_(1.0).mul_(st.half_range).add_(st.lo)
            else:
                vals[i].fill_(st.lo)
        host = vals.cpu().numpy()
        if progress is not None and progress(1.0) is False:
            return None
        out = {n: host[i] for i, n in enumerate(info.variables)}
    else:
        var_idx = torch.arange(len(info.variables), device=tm.device)
        norm = predict_grid(tm.model, info.layout, tn, target, info.grid,
                            var_idx=var_idx, chunk=chunk, progress=progress)
        if norm is None:
            return None
        if corr is not None:
            norm += corr.cpu().numpy()
        out = {n: info.stats[n].denormalise(norm[i]).astype(np.float32)
               for i, n in enumerate(info.variables)}
    if error and err is not None:
        host_err = err.cpu().numpy()
        for i, (n, en) in enumerate(zip(info.variables, error_names(info)[0])):
            out[en] = (host_err[i] * info.stats[n].half_range).astype(np.float32)
    return out


def _each_step(tm: TrainedModel, grid: Grid, t_out: np.ndarray, chunk: int,
               callback: Optional[Callable[[float], Optional[bool]]],
               steps: Optional[Sequence[int]] = None, error: bool = False
               ) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """(index, physical values) of every output time in turn (or of the indices ``steps``),
    the progress callback told of each step's share; a callback returning False cancels."""
    todo = list(range(len(t_out))) if steps is None else list(steps)
    n_t = len(todo)
    for k, i in enumerate(todo):
        def prog(f: float, k: int = k) -> Optional[bool]:
            return None if callback is None else callback((k + f) / max(1, n_t))
        vals = predict_timestep(tm, float(t_out[i]), grid, chunk, prog, error=error)
        if vals is None:
            raise StsrError("prediction cancelled")
        yield i, vals


def upscale(tm: TrainedModel, path: str, *, scale: Optional[float] = None,
            dims: Optional[Sequence[int]] = None, time_scale: Optional[int] = None,
            times: Optional[Sequence[float]] = None, format: Optional[str] = None,
            compression: str = "zlib", overwrite: bool = False, error: bool = True,
            callback: Optional[Callable[[float], Optional[bool]]] = None) -> Dict[str, Any]:
    """The model on an output grid at output times, written to ``path`` one step at a time
    (io/stream.py: checked for disk space first, each step complete before it is listed),
    so memory stays bounded whatever the output size; with ``error`` (the default) and a
    model that has one, the error estimate's arrays too. Returns the timings: seconds spent
    computing and writing, steps, points per step, files.

    In a group of processes (:mod:`stsr_core.distributed`) every rank calls this alike: the
    output steps are shared out round-robin, each rank writes its steps' ``.vti`` files and
    rank 0 the ``.pvd`` once all are complete (a ``.pvd`` output only). The timings are
    then this rank's, with every rank's in ``ranks``."""
    from .io.stream import open_series_writer
    grid = output_grid(tm.info.grid, scale, dims)
    t_out = output_times(tm.info.times, time_scale, times)
    several = distributed.world_size() > 1
    mine = distributed.share(len(t_out)) if several else None
    compute_s = write_s = 0.0
    error = error and has_error_estimate(tm)
    names, comps = output_arrays(tm, error)
    with open_series_writer(path, grid, t_out, names, comps,
                            format=format, compression=compression,
                            overwrite=overwrite, metadata=tm.info.metadata,
                            steps=mine) as writer:
        plan = _grid_plan(tm, grid)
        if plan is not None:     # each step is written before the next is computed
            plan.reuse = True
        try:
            t0 = time.perf_counter()
            for i, vals in _each_step(tm, grid, t_out, DEFAULT_CHUNK, callback, mine,
                                      error):
                t1 = time.perf_counter()
                compute_s += t1 - t0
                writer.write_step(i, vals)
                t0 = time.perf_counter()
                write_s += t0 - t1
            files = writer.close()
        finally:
            tm.plan = None       # its buffers are reused: no later query may see them
    n_mine = len(t_out) if mine is None else len(mine)
    out = {"compute_s": compute_s, "write_s": write_s, "steps": n_mine,
           "points_per_step": grid.n_points, "grid": grid, "files": files,
           "processes": distributed.world_size()}
    if several:
        out["ranks"] = distributed.all_gather_objects(
            {"compute_s": compute_s, "write_s": write_s, "steps": n_mine}, "gathering timings")
    return out


def predict(tm: TrainedModel, *, scale: Optional[float] = None,
            dims: Optional[Sequence[int]] = None, time_scale: Optional[int] = None,
            times: Optional[Sequence[float]] = None, chunk: int = DEFAULT_CHUNK,
            callback: Optional[Callable[[float], Optional[bool]]] = None,
            error: bool = False) -> VolumeSeries:
    """The model on an output grid at output times, as a VolumeSeries in physical units
    (with ``error`` and a model that has one, the error estimate's arrays too)."""
    grid = output_grid(tm.info.grid, scale, dims)
    t_out = output_times(tm.info.times, time_scale, times)
    arrays: Dict[str, List[np.ndarray]] = {}
    for _, vals in _each_step(tm, grid, t_out, chunk, callback, error=error):
        for n, a in vals.items():
            arrays.setdefault(n, []).append(a)
    return VolumeSeries(times=t_out, variables={n: np.stack(v) for n, v in arrays.items()},
                        origin=grid.origin, spacing=grid.spacing,
                        components=output_arrays(tm, error)[1], source="",
                        metadata=dict(tm.info.metadata))


def blend(tm: TrainedModel, var_from: str, var_to: str, steps: int, t: float,
          scale: Optional[float] = None, dims: Optional[Sequence[int]] = None) -> VolumeSeries:
    """The paper's latent interpolation: decode codes on the segment from ``var_from``'s code
    to ``var_to``'s at time ``t``. Returns a series whose "times" are the blend weights
    0..1 (``steps`` values) and whose one variable ``blend`` is in units interpolated the same
    way between the two variables' ranges."""
    info = tm.info
    if tm.model.latent_mu is None:
        raise StsrError(f"this model (kind '{tm.model_config.kind}') has no latent codes to "
                        "blend; train with the paper or fast preset")
    for v in (var_from, var_to):
        if v not in info.variables:
            raise StsrError(f"no variable '{v}' in the model; it has: "
                            f"{', '.join(info.variables)}")
    if steps < 2:
        raise StsrError(f"blend needs at least 2 steps, got {steps}")
    output_times(info.times, times=[t])
    grid = output_grid(info.grid, scale, dims)
    a, b = info.variables.index(var_from), info.variables.index(var_to)
    mu = tm.model.latent_mu.detach()
    w = torch.linspace(0.0, 1.0, steps, device=mu.device)
    codes = (1 - w)[:, None] * mu[a][None] + w[:, None] * mu[b][None]    # [steps, D]
    # decode each code once as variable a and once as b and mix the two with the same weight:
    # the network's part is the same in both, and a per-variable part (the fast model's
    # spline base) is interpolated like the code
    var_idx = torch.tensor([a] * steps + [b] * steps, dtype=torch.long, device=mu.device)
    both = predict_grid(tm.model, info.layout, _t_norm(info, t), grid, info.grid,
                        var_idx=var_idx, codes=torch.cat([codes, codes]))
    wn = w.cpu().numpy().reshape((steps,) + (1,) * (both.ndim - 1))
    norm = (1 - wn) * both[:steps] + wn * both[steps:]
    sa, sb = info.stats[var_from], info.stats[var_to]
    frames = []
    for i, wi in enumerate(w.tolist()):
        st = VariableStats((1 - wi) * sa.lo + wi * sb.lo, (1 - wi) * sa.hi + wi * sb.hi)
        frames.append(st.denormalise(norm[i]).astype(np.float32))
    return VolumeSeries(times=w.cpu().numpy(), variables={"blend": np.stack(frames)},
                        origin=grid.origin, spacing=grid.spacing)
