"""The model's values: one timestep on any grid or box of one (the fast base's grid plan,
or the network in chunks, plus a learned correction and its error estimate), every output
step written to a file (upscale) or kept in memory (predict), and the latent blend."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import distributed
from .errors import StsrError
from .grid import Grid
from .infer import DEFAULT_CHUNK, predict_grid
from .normalize import VariableStats
from .outputs import (Extent, check_extent, error_names, has_error_estimate, output_arrays,
                      output_grid, output_times, sub_grid)
from . import slabs
from .overlap import compute_and_write, to_host
from .series import VolumeSeries
from .trained import TrainedModel


def grid_plan(tm: TrainedModel, grid: Grid, extent: Optional[Extent] = None) -> Any:
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
                     extent: Optional[Sequence[int]] = None, error: bool = False,
                     host: Optional[torch.Tensor] = None,
                     max_memory: Optional[int] = None) -> Optional[Dict[str, np.ndarray]]:
    """Physical values of every variable at time ``t`` on ``grid``: name -> float32
    [Z, Y, X]; with ``extent`` (x0, x1, y0, y1, z0, z1, inclusive indices of ``grid``) on that
    box of it alone (an MPI or streamed piece: the same numbers as that region of the whole
    grid, to float32 rounding); with ``error`` and a model that has one, also the error
    estimate ``<name>_error`` (same units). Returns None if ``progress`` returned False. The
    fast base alone on a grid over the data's bounds (or a box of one) is evaluated whole
    (tens of millions of points a second); other models and grids go through the model in
    chunks of ``chunk`` points. A learned correction is added on any grid or box. ``host``:
    a [V, Z, Y, X] host buffer the fast base's values are copied into (overlap.py; on CUDA
    without waiting) instead of its reused evaluation buffer. The fast base alone is
    computed slab by slab (slabs.py) within ``max_memory`` (None: the default share)
    besides the arrays returned."""
    info = tm.info
    tn = info.normalised_time(t)
    ext = check_extent(grid, extent)
    if host is None and slabs.fast_base(tm) is not None and slabs.covers_bounds(tm, grid):
        return slabs.predict_box(tm, t, grid, ext, error and has_error_estimate(tm),
                                 max_memory, progress)
    box = None if ext == check_extent(grid, None) else ext
    plan = grid_plan(tm, grid, box)
    target = grid if box is None else sub_grid(grid, box)
    correction = getattr(tm.model, "correction", None)
    corr = err = None
    if correction is not None:
        corr, err = correction.apply(tm.model.base, tn,
                                     _local_axes(target, info.grid, tm.device))
    if plan is not None:
        if host is not None and plan.reuse and host.device == tm.device:
            plan.buffers["out"] = host        # evaluated straight into the caller's buffer
        vals = tm.model.base.evaluate_grid(plan, tn)                    # [V, Z, Y, X]
        if corr is not None:
            vals.add_(corr)
        elif error and tm.model.base.has_error_estimate():    # the base's own (every fit)
            err = tm.model.base.error_grid(plan, tn)
        for i, n in enumerate(info.variables):    # to physical units where computed, in place
            st = info.stats[n]
            if st.hi > st.lo:
                vals[i].add_(1.0).mul_(st.half_range).add_(st.lo)
            else:
                vals[i].fill_(st.lo)
        host = to_host(vals, host)
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
    if error and err is not None:        # a tensor of this step's own: scaled in place
        for i, n in enumerate(info.variables):
            err[i].mul_(info.stats[n].half_range)
        host_err = err.to(torch.float32).cpu().numpy()
        for i, en in enumerate(error_names(info)[0]):
            out[en] = host_err[i]
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
            compression: Optional[str] = None, overwrite: bool = False, error: bool = True,
            callback: Optional[Callable[[float], Optional[bool]]] = None,
            overlap: bool = True, max_memory: Optional[int] = None) -> Dict[str, Any]:
    """The model on an output grid at output times, written to ``path``: the output is
    checked (io/stream.py: format, existing files, disk space), then the memory planned
    (slabs.py: the slab's rows within ``max_memory`` bytes, None: a default share of the
    available memory; one error line before anything is computed when it cannot be met),
    then the fast base computed interval by interval and slab by slab, each slab handed to
    the writer as it comes, so memory is the plan's whatever the output's size. Other
    models (a network, a learned correction) go step by step (overlap.py: each step written
    on a thread while the next is computed). With ``error`` (the default) and a model that
    has one, the error estimate's arrays too. ``callback`` hears the fraction done.
    ``compression``: None is the format's default (io/stream.py DEFAULT_COMPRESSION).
    Returns the timings: seconds spent computing, writing and waiting for the writer,
    steps, points per step, files, and the memory plan.

    In a group of processes (:mod:`stsr_core.distributed`) every rank calls this alike: the
    output steps are shared out round-robin, each rank writes its steps' ``.vti`` files and
    rank 0 the ``.pvd`` once all are complete (a ``.pvd`` output only). The timings are
    then this rank's, with every rank's in ``ranks``."""
    from .io import stream
    grid = output_grid(tm.info.grid, scale, dims)
    t_out = output_times(tm.info.times, time_scale, times)
    several = distributed.world_size() > 1
    mine = distributed.share(len(t_out)) if several else None
    error = error and has_error_estimate(tm)
    names, comps = output_arrays(tm, error)
    slabbed = slabs.fast_base(tm) is not None and slabs.covers_bounds(tm, grid)
    memory = mem = None
    opened: Dict[str, Any] = {}
    if slabbed:
        # the plan before any file: what the writer will hold is known from the output's
        # path (io/stream.py writer_bytes, where the writers take slabs natively)
        t_norm = [tm.info.normalised_time(float(t)) for t in t_out]
        open_steps = max(len(g) for g in slabs.interval_groups(
            tm.model.base, t_norm, list(range(len(t_out))) if mine is None else mine,
            slabs.MIN_OPEN_STEPS))
        ahead = getattr(stream, "writer_bytes", None)
        if ahead is not None:
            mem = slabs.plan_memory(
                tm, grid, slabs.whole_box(grid), len(names), error, max_memory,
                writer_bytes=lambda rows: ahead(path, grid, names, comps, rows, open_steps,
                                                format=format, compression=compression,
                                                metadata=tm.info.metadata),
                group_steps=open_steps)
            opened["slab_rows"] = mem.rows
    with stream.open_series_writer(path, grid, t_out, names, comps,
                                   format=format, compression=compression,
                                   overwrite=overwrite, metadata=tm.info.metadata,
                                   steps=mine, **opened) as writer:
        if slabbed:
            if mem is None:       # a writer that gathers a step's slabs (io/base.py)
                mem = slabs.plan_memory(
                    tm, grid, slabs.whole_box(grid), len(names), error, max_memory,
                    writer_bytes=lambda rows: writer.slab_bytes(rows, open_steps),
                    row_multiple=getattr(writer, "row_multiple", 1), group_steps=open_steps)
            memory = {"rows": mem.rows, "budget": mem.budget, "need": mem.need,
                      "parts": mem.parts, "tile": mem.tile, "full_width": mem.full_width,
                      "text": mem.text()}
            timings = slabs.write_slabs(tm, grid, t_out, writer.steps, writer, error, mem,
                                        callback, overlap)
        else:
            timings = compute_and_write(
                lambda t, buf: predict_timestep(tm, t, grid, DEFAULT_CHUNK, error=error),
                t_out, writer.steps, writer, None, tm.device, callback, overlap)
        files = writer.close()
    n_mine = len(t_out) if mine is None else len(mine)
    compute_s, write_s = timings["compute_s"], timings["write_s"]
    out = {"compute_s": compute_s, "write_s": write_s, "wait_s": timings["wait_s"],
           "steps": n_mine,
           "points_per_step": grid.n_points, "grid": grid, "files": files,
           "processes": distributed.world_size(), "memory": memory}
    if several:
        out["ranks"] = distributed.all_gather_objects(
            {"compute_s": compute_s, "write_s": write_s, "wait_s": timings["wait_s"],
             "steps": n_mine}, "gathering timings")
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
    both = predict_grid(tm.model, info.layout, info.normalised_time(t), grid, info.grid,
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
