"""The engine's public face: fit, save, load, predict, blend. The CLI and the ParaView
plugin call only these functions (and the readers/writers in :mod:`stsr_core.io`).

Where each job lives:
    trained.py     the trained model (ModelInfo, TrainedModel) and its model file: save,
                   load, bytes for other processes, whether it matches a series
    fitting.py     fit: a new or resumed run, training (data-parallel in a group), the save
    outputs.py     what an output is: its grid, times, box (extent) and arrays
    prediction.py  the model's values: one timestep on a grid or box, upscale to a file,
                   predict in memory, the latent blend
"""
from __future__ import annotations

from .config import preset as get_preset  # noqa: F401 (the plugin reads a preset's settings)
from .fitting import fit
from .outputs import (check_extent, error_names, has_error_estimate, output_arrays, output_grid,
                      output_times, sub_grid)
from .prediction import blend, predict, predict_timestep, upscale
from .train import TrainProgress
from .trained import (ModelInfo, TrainedModel, check_compatible, load_model, model_bytes,
                      save_model)

__all__ = ["ModelInfo", "TrainedModel", "TrainProgress", "fit", "save_model", "load_model",
           "model_bytes", "sub_grid", "check_extent",
           "output_grid", "output_times", "predict", "upscale", "predict_timestep", "check_compatible",
           "blend", "error_names", "has_error_estimate", "output_arrays"]
