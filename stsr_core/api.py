"""The engine's public face: fit, save, load, predict. The CLI and the ParaView plugin call
only these functions (and the readers/writers in stsr_core.io).

CONTRACT (being implemented; signatures are fixed):

fit(series: VolumeSeries, preset: str = "fast", *, steps: int|None = None,
    max_minutes: float|None = None, device: str = "auto", seed: int|None = None,
    callback: Callable[[TrainProgress], bool|None] | None = None,
    checkpoint_path: str|None = None, resume: TrainedModel|None = None,
    model_overrides: dict|None = None, train_overrides: dict|None = None) -> TrainedModel
    Trains on every variable of `series`. `callback` is called every few steps with a
    TrainProgress(step, total_steps|None, elapsed_s, max_seconds|None, loss, psnr, fraction);
    returning False stops training cleanly (the model so far is returned, marked
    `info.history["stopped"] = "cancelled"`).

save_model(tm: TrainedModel, path) -> None        atomic (temp + rename)
load_model(path, device="auto") -> TrainedModel   StsrError on damaged/other-version files

output_grid(tm.info, scale: float|None = None, dims: (nx,ny,nz)|None = None)
    -> (dims, origin, spacing)       dims_out = (dims_in - 1) * s + 1, spacing_in / s, same origin
output_times(tm.info, time_scale: int|None = None, times: list[float]|None = None) -> np.ndarray
predict(tm, *, scale=None, dims=None, time_scale=None, times=None,
        callback: Callable[[float], bool|None] | None = None) -> VolumeSeries
    in physical units, multi-component arrays re-assembled through `components`.
predict_timestep(tm, t: float, dims, origin, spacing) -> dict[name, float32 [Z, Y, X]]
check_compatible(tm, series) -> None   StsrError if variables/grid/times do not match.
"""
