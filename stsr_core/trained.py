"""A trained model: the network, what it knows of the data it was trained on (ModelInfo),
its settings, and its model file (save, load, bytes for other processes, and whether it
matches a series). The file's layout and atomic writes are :mod:`stsr_core.modelfile`'s."""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import modelfile
from .blocks import BlockLayout, normalise_times
from .config import TrainConfig, config_to_dict, model_config_from_dict, train_config_from_dict
from .errors import StsrError
from .grid import Grid
from .kinds import build_model
from .model import FieldModel, FieldSpec
from .model.slots import FileSlots
from .model.spline_base import SplineBase
from .normalize import VariableStats, stats_from_lists, stats_to_lists
from .train import resolve_device


# model files this large keep the fast base's coefficients in the file when loaded (read a
# slot at a time): below it a model is read whole, as it always was
LAZY_MIN_BYTES = 256 * 1000 ** 2
LAZY_WEIGHTS = ("base.coef",)


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

    def field_spec(self) -> FieldSpec:
        """What a model of this data needs to know about it (model/__init__.py)."""
        layout = self.layout
        t = torch.tensor(self.times, dtype=torch.float64)
        return FieldSpec(n_vars=len(self.variables), n_heads=layout.n_heads,
                         block_dims=layout.block_dims, n_times=len(self.times),
                         times_norm=tuple(normalise_times(t, self.times[0],
                                                          self.times[-1]).tolist()))

    def normalised_time(self, t: float) -> float:
        """Physical time ``t`` in the model's frame: the trained times span [-1, 1]."""
        return float(normalise_times(torch.tensor([t], dtype=torch.float64), self.times[0],
                                     self.times[-1])[0])

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
        return next(itertools.chain(self.model.parameters(), self.model.buffers())).device

    def n_parameters(self) -> int:
        """The model's values: its parameters, and the slots it keeps in a file."""
        in_files = sum(math.prod(m.slots_in_file().shape) for m in self.model.modules()
                       if isinstance(m, SplineBase) and m.slots_in_file() is not None)
        return sum(p.numel() for p in self.model.parameters()) + in_files


def _payload(tm: TrainedModel) -> Dict[str, Any]:
    state = {k: v if isinstance(v, FileSlots) else v.detach().cpu()
             for k, v in tm.model.state_dict().items()}
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


def load_model(path: str, device: str = "auto", data: Optional[bytes] = None,
               lazy: Optional[bool] = None) -> TrainedModel:
    """The model in file ``path`` (or in ``data``, bytes from :func:`model_bytes`; ``path``
    then only names it in messages), on ``device``. ``lazy``: the fast base's coefficients
    stay in the file and are read a slot at a time when used (SplineBase.slot_coef; a
    model that is trained further reads them all); None: so for files of
    ``LAZY_MIN_BYTES`` or more."""
    if lazy is None:
        lazy = data is None and os.path.isfile(path) and os.path.getsize(path) >= LAZY_MIN_BYTES
    payload = modelfile.read(path, data, lazy=LAZY_WEIGHTS if lazy and data is None else ())
    try:
        info = ModelInfo.from_dict(payload["info"])
        mcfg = model_config_from_dict(payload["model_config"])
        tcfg = train_config_from_dict(payload["train_config"])
        model = build_model(mcfg, info.field_spec())
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


def check_compatible(tm: TrainedModel, series: Any) -> None:
    """Raise StsrError unless ``series`` (a VolumeSeries, or anything with its
    ``variables``, ``grid``, ``times`` and ``where()``, as fitdata.FitSource) has the
    variables, grid and times of the model."""
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
