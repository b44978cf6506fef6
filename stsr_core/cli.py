"""The ``stsr`` command: fit, upscale, eval, info, blend, coarsen, plugin-path.

User mistakes (bad files, options, mismatched models) print one line ``stsr: error: ...``
and exit with status 2; a traceback means a bug.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence

from .config import (DEFAULT_PRESET, DEVICES, PRESET_DESCRIPTIONS, apply_settings,
                     preset as get_preset, settings_overrides)
from .errors import StsrError
from .io.stream import COMPRESSIONS, DEFAULT_COMPRESSION

if TYPE_CHECKING:
    from . import api
    from .fitdata import FitSource

DEVICE_HELP = f"where to compute: {', '.join(DEVICES)} (auto: CUDA when available)"
# every writer's compressions, first the ones every format has
COMPRESSION_CHOICES = list(dict.fromkeys(c for cs in COMPRESSIONS.values() for c in cs))
EPILOG = ("Formats: .pvd, a folder of .vti, .vti, .h5/.hdf5, .nc (netCDF), .json (raw layout). "
          "See README.md and docs/.")
DISTRIBUTED_HELP = ("run as one of the processes torchrun, srun or mpiexec started (on by "
                    "itself when their environment says there are several): {work}; "
                    "docs/cluster.md")


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'")


def _names(text: str) -> List[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _key_value(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip(), value.strip()


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stsr",
        description="Spatiotemporal super-resolution of multivariate time-varying volumes "
                    "with an implicit neural representation (STSR-INR).",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    f = sub.add_parser("fit", help="train a model on a volume time series",
                       description="Train one implicit neural representation of every "
                                   "variable of INPUT and save it to MODEL.", epilog=EPILOG)
    f.add_argument("input", metavar="INPUT", help="the (coarse) series to learn")
    f.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (refused if it exists, unless --overwrite "
                        "or --resume)")
    f.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESET_DESCRIPTIONS),
                   help="network + training settings: " + "; ".join(
                       f"{k}: {v}" for k, v in PRESET_DESCRIPTIONS.items())
                   + f" (default: {DEFAULT_PRESET})")
    f.add_argument("--steps", type=_positive_int, help="number of training steps")
    f.add_argument("--max-minutes", type=_positive_float, metavar="M",
                   help="training time budget in minutes (with --steps: whichever first; "
                        "default: the preset's budget)")
    f.add_argument("--device", default="auto", choices=DEVICES,
                   help=DEVICE_HELP)
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--arrays", type=_names, metavar="a,b,...",
                   help="point-data arrays to learn (default: all)")
    f.add_argument("--batch-size", type=_positive_int, help="coordinates per step")
    f.add_argument("--lr", type=_positive_float, help="learning rate (network and codes)")
    f.add_argument("--set", action="append", default=[], type=_key_value,
                   metavar="KEY=VALUE", dest="settings",
                   help="change one setting of the preset's model or training config, e.g. "
                        "--set base_time=flow (repeatable; names, defaults and meaning in "
                        "stsr_core/config.py; an unknown name lists the known ones)")
    f.add_argument("--checkpoint-seconds", type=_positive_float, default=60.0,
                   help="seconds between checkpoints written to MODEL (default 60)")
    f.add_argument("--resume", action="store_true",
                   help="continue training the model in MODEL (same data) with the new budget")
    f.add_argument("--overwrite", action="store_true", help="replace an existing MODEL")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP.format(
        work="the base's displacement fits are shared out, a network is trained "
             "data-parallel (--batch-size is the total over the processes), rank 0 writes "
             "MODEL"))

    u = sub.add_parser("upscale", help="query a model on a finer grid and/or more times",
                       description="Write the model's variables on an output grid at output "
                                   "times, in physical units. Grid: --scale S gives "
                                   "(dims-1)*S+1 points per axis and spacing/S over the same "
                                   "bounds (as ParaView's Resample To Image).", epilog=EPILOG)
    u.add_argument("model", metavar="MODEL")
    u.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (.pvd, .h5 or .nc)")
    g = u.add_mutually_exclusive_group()
    g.add_argument("--scale", type=_positive_float, help="spatial scale factor (default 1)")
    g.add_argument("--dims", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="output point counts")
    h = u.add_mutually_exclusive_group()
    h.add_argument("--time-scale", type=_positive_int, metavar="K",
                   help="insert K-1 evenly spaced steps between input steps (default 1)")
    h.add_argument("--times", type=_floats, metavar="t1,t2,...", help="explicit output times")
    u.add_argument("--format", choices=["vti", "h5", "netcdf"],
                   help="output format (default: from the extension)")
    u.add_argument("--compression", choices=COMPRESSION_CHOICES,
                   help="zlib (level 1) or none for every format; lz4 for .vti, gzip/lzf for "
                        ".h5; default: " + ", ".join(f"{c} for {f}" for f, c in
                                                     DEFAULT_COMPRESSION.items() if f != "raw")
                        + " (docs/formats.md has measured rates and sizes)")
    u.add_argument("--timings", metavar="FILE.json",
                   help="also write the seconds spent computing and writing as JSON")
    u.add_argument("--no-error", dest="error", action="store_false",
                   help="leave out the error estimate's arrays (NAME_error, written by "
                        "default for every model that has one: every fit of the default "
                        "preset, and preset liif)")
    u.add_argument("--max-memory", metavar="SIZE", type=_size,
                   help="the most memory the upscale may use, e.g. 1GB or 512MB (default: "
                        "half the available memory, at most 2 GB); the output is computed "
                        "in slabs that fit (cut into tiles along y, slower, where even a "
                        "full-width slab of one row does not), or refused at once when the "
                        "smallest tile does not")
    u.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)
    u.add_argument("--overwrite", action="store_true", help="replace existing output")
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP.format(
        work="the output steps are shared out, each process writes its steps' .vti files "
             "and rank 0 the .pvd (OUT must be a .pvd)"))

    e = sub.add_parser("eval", help="score a prediction against a reference (PSNR)",
                       description="PSNR per variable and timestep, "
                                   "20 log10(max(GT_t)-min(GT_t)) - 10 log10(MSE_t), in "
                                   "physical units; both series need the same grid and times.",
                       epilog=EPILOG)
    e.add_argument("pred", metavar="PRED")
    e.add_argument("--reference", required=True, metavar="GT")
    e.add_argument("--kept-times", type=_floats, metavar="t1,t2,...",
                   help="times that were in the training input (reports kept vs in-between)")
    e.add_argument("--json", metavar="FILE", help="also write the full result as JSON")

    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser("blend", help="decode latent codes between two variables",
                       description="The paper's latent interpolation: decode codes on the "
                                   "segment between variables A and B at time T. The output "
                                   "series' time values are the blend weights 0..1.")
    b.add_argument("model", metavar="MODEL")
    b.add_argument("--from", dest="var_from", required=True, metavar="A")
    b.add_argument("--to", dest="var_to", required=True, metavar="B")
    b.add_argument("--steps", type=_positive_int, default=5, help="number of blends (>= 2)")
    b.add_argument("--time", type=float, required=True, metavar="T")
    b.add_argument("--scale", type=_positive_float)
    b.add_argument("-o", "--output", required=True, metavar="OUT.pvd")
    b.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)
    b.add_argument("--overwrite", action="store_true")
    c = sub.add_parser("coarsen", help="keep every S-th point and every K-th step",
                       description="Make the coarse input of the paper's protocol from a fine "
                                   "series: every S-th point per axis, every K-th timestep "
                                   "(the first point and step are kept).", epilog=EPILOG)
    c.add_argument("input", metavar="INPUT")
    c.add_argument("-o", "--output", required=True, metavar="OUT")
    c.add_argument("--space", type=_positive_int, default=2, metavar="S")
    c.add_argument("--time", type=_positive_int, default=4, metavar="K")
    c.add_argument("--arrays", type=_names, metavar="a,b,...")
    c.add_argument("--format", choices=["vti", "h5", "netcdf"])
    c.add_argument("--overwrite", action="store_true")

    pp = sub.add_parser("plugin-path", help="print the folder of the installed ParaView plugin",
                        description="Print the folder that holds the ParaView plugin installed "
                                    "with this package (STSRINRPlugin.py, alone there): give "
                                    "it to ParaView as PV_PLUGIN_PATH, or load the file by "
                                    "Tools > Manage Plugins > Load New (docs/paraview.md).")
    pp.add_argument("--file", action="store_true",
                    help="print the plugin file's path instead of its folder")
    return p


class _Progress:
    """A tqdm bar when stderr is a terminal-ish stream, else sparse log lines."""

    def __init__(self, quiet: bool, desc: str):
        self.quiet = quiet
        self.bar = None
        self.desc = desc
        self.last = 0.0
        self.started = False     # drawn at the first update: an error before it stays one line

    def update(self, fraction: float, postfix: str = "") -> None:
        if self.quiet:
            return
        if not self.started:
            self.started = True
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=1000, desc=self.desc, file=sys.stderr,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
            except ImportError:
                self.bar = None
        if self.bar is not None:
            self.bar.n = int(1000 * min(1.0, fraction))
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.refresh()
        elif time.time() - self.last > 5 or fraction >= 1:
            print(f"{self.desc}: {100 * fraction:5.1f}% {postfix}", file=sys.stderr)
            self.last = time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_new_output(path: str, overwrite: bool) -> None:
    """Before any work: refuse an existing output (unless ``overwrite``), then create
    missing folders."""
    from .io.base import make_output_folder
    if os.path.exists(path) and not overwrite:
        raise StsrError(f"'{path}' exists; pass --overwrite to replace it")
    make_output_folder(path)


@contextlib.contextmanager
def _process_group(a: argparse.Namespace) -> Iterator[bool]:
    """The group of processes a launcher started (with --distributed, or when its
    environment says there are several), joined for the command and left after it; yields
    whether this process is rank 0 (the one that prints). Other ranks are quiet."""
    from . import distributed
    launch = distributed.detect()
    if launch.world_size <= 1:
        if a.distributed:
            print("stsr: note: --distributed, but no launcher's environment (RANK/WORLD_SIZE, "
                  "OMPI_COMM_WORLD_*, SLURM_PROCID/SLURM_NTASKS) says there are other "
                  "processes: running alone", file=sys.stderr)
        yield True
        return
    a.device = distributed.device_for(a.device, launch)
    a.joined_a_group = True              # main() ends this process itself (see there)
    with distributed.session(a.device, launch=launch):
        if launch.rank != 0:
            a.quiet = True
        yield launch.rank == 0


def cmd_fit(a: argparse.Namespace) -> int:
    from . import distributed
    from .modelfile import writing_lock
    from .train import resolve_device
    resolve_device(a.device)                  # fail before reading data or training
    with _process_group(a) as main, contextlib.ExitStack() as held:
        def prepare() -> tuple:
            if main:       # rank 0 alone writes MODEL: it alone holds the lock
                held.enter_context(writing_lock(a.output, steal=a.overwrite))
            return _prepare_fit(a, main)
        return _fit(a, main, *distributed.together(prepare, "checking the inputs"))


def _prepare_fit(a: argparse.Namespace, main: bool) -> tuple:
    """What fit needs, checked before any work: the data, the model to resume (or None)
    and the settings' overrides."""
    from . import api
    from .fitdata import open_source
    if a.resume:
        if not os.path.exists(a.output):
            raise StsrError(f"--resume: model file '{a.output}' does not exist")
    else:
        _check_new_output(a.output, a.overwrite)
        apply_settings(*get_preset(a.preset), a.settings, f"preset '{a.preset}'")  # fail early
    series = open_source(a.input, arrays=a.arrays)      # read a step at a time by the fit
    if main:
        print(f"read {a.input}: {len(series.variables)} variable(s) "
              f"{', '.join(series.variables)}; grid {series.dims[0]}x{series.dims[1]}x"
              f"{series.dims[2]}, {series.n_times} timestep(s)", file=sys.stderr)
    resume = api.load_model(a.output, device=a.device) if a.resume else None
    if resume is not None:
        configs = (resume.model_config, resume.train_config)
        label = f"the model in '{a.output}'"
    else:
        configs, label = get_preset(a.preset), f"preset '{a.preset}'"
    model_overrides, overrides = settings_overrides(*configs, a.settings, label)
    if model_overrides and resume is not None:
        raise StsrError(f"--set {', '.join(model_overrides)}: model settings cannot change "
                        "when resuming a trained model (training settings can)")
    if a.batch_size:
        overrides["batch_size"] = a.batch_size
    if a.lr:
        overrides.update(lr=a.lr, lr_latent=a.lr)
    overrides["checkpoint_seconds"] = a.checkpoint_seconds
    return series, resume, model_overrides, overrides


def _fit(a: argparse.Namespace, main: bool, series: "FitSource",
         resume: Optional["api.TrainedModel"], model_overrides: dict, overrides: dict) -> int:
    from . import api
    bar = _Progress(a.quiet, "training")
    stop = _StopDuringTheFit(main)

    def on_progress(p: "api.TrainProgress") -> Optional[bool]:
        if p.phase == "init":
            bar.update(p.fraction, f"fitting the base to the data: {p.init_fraction:.0%}")
            return stop.signum is None       # a signal came: the fit ends as a budget would
        stop.training_started()
        bar.update(p.fraction,
                   f"step {p.step} loss {p.loss:.3g} PSNR(kept) {p.psnr:.2f} dB")
        return None

    overrides.setdefault("log_every", 10)
    try:
        with stop.handling():
            tm = api.fit(series, a.preset, steps=a.steps, max_minutes=a.max_minutes,
                         device=a.device, seed=a.seed, callback=on_progress,
                         checkpoint_path=a.output, resume=resume, train_overrides=overrides,
                         model_overrides=model_overrides or None)
    finally:
        bar.close()
    h = tm.info.history
    code = 0 if stop.signum is None else _stopped(stop.signum)[1]
    if not main:
        return code
    if h.get("processes", 1) > 1:
        print(f"stsr: {h['processes']} processes", file=sys.stderr)
    for note in h.get("init_notes", []):
        print(f"stsr: note: {note}", file=sys.stderr)
    if code:
        print(f"stsr: {_stopped(stop.signum)[0]}; the model file holds the model fitted so "
              f"far (saved {a.output}: it loads; the notes above say what the stop skipped)",
              file=sys.stderr)
    elif h["stopped"] == "fitted":
        print(f"fitted the base to the data in {h['elapsed_s']:.1f} s on {h['device']} (no "
              f"network to train); saved {a.output}", file=sys.stderr)
    else:
        print(f"trained {h['steps']} steps in {h['elapsed_s']:.1f} s on {h['device']}; "
              f"PSNR on kept data (last batch) {h['batch_psnr']:.2f} dB; saved {a.output}",
              file=sys.stderr)
    return code


def _size(text: str) -> int:
    """--max-memory's value: bytes with a unit (1GB, 512MB)."""
    from .slabs import parse_bytes
    try:
        return parse_bytes(text)
    except StsrError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_upscale(a: argparse.Namespace) -> int:
    with _process_group(a) as main:
        return _upscale(a, main)


def _upscale(a: argparse.Namespace, main: bool) -> int:
    from . import api, distributed
    tm = distributed.together(lambda: api.load_model(a.model, device=a.device),
                              "reading the model")
    times = None
    if a.times is not None:
        times = a.times
        lo, hi = tm.info.times[0], tm.info.times[-1]
        outside = [t for t in times if t < lo or t > hi]
        if outside and len(tm.info.times) > 1 and main:
            print(f"stsr: warning: times {outside} lie outside the trained range "
                  f"[{lo:g}, {hi:g}]: they are extrapolated", file=sys.stderr)
    # api.upscale's writer checks the output (exists, disk space) before computing a step
    bar = _Progress(a.quiet, "upscaling")
    try:
        r = api.upscale(tm, a.output, scale=a.scale, dims=a.dims, time_scale=a.time_scale,
                        times=times, format=a.format, compression=a.compression,
                        overwrite=a.overwrite, error=a.error,
                        callback=lambda f: bar.update(f), max_memory=a.max_memory)
    finally:
        bar.close()
    g = r["grid"]
    ranks = r.get("ranks", [r])
    if not main:
        return 0
    steps = sum(x["steps"] for x in ranks)
    compute_s = max(x["compute_s"] for x in ranks)     # the slowest process's
    write_s = max(x["write_s"] for x in ranks)
    wait_s = max(x["wait_s"] for x in ranks)
    voxels = r["points_per_step"] * steps
    by = f" by {len(ranks)} processes" if len(ranks) > 1 else ""
    print(f"wrote {a.output}: grid {g.text()}, {steps} timestep(s){by}, "
          f"{len(r['files'])} file(s); computed "
          f"{voxels / max(compute_s, 1e-9) / 1e6:.1f} M points/s ({compute_s:.1f} s"
          f"{', the slowest process' if by else ''}), wrote in {write_s:.1f} s while "
          f"computing, then waited {wait_s:.1f} s for the writer", file=sys.stderr)
    tiles = (r.get("memory") or {}).get("tile")
    if tiles:
        print(f"  a full-width slab did not fit the memory budget: slabs of "
              f"{r['memory']['rows']} rows computed in tiles of {tiles} y rows (each tile's "
              "window made whole, slower than full-width slabs)", file=sys.stderr)
    if a.timings:
        timings = {k: v for k, v in r.items() if k not in ("grid", "files")}
        timings.update(dims=list(g.dims), n_files=len(r["files"]),
                       variables=list(tm.info.variables), steps=steps,
                       compute_s=compute_s, write_s=write_s, wait_s=wait_s)
        _write_json(a.timings, timings)
    return 0


def _write_json(path: str, data: object) -> None:
    _check_new_output(path, overwrite=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def cmd_eval(a: argparse.Namespace) -> int:
    from .io import read_series
    from .metrics import evaluate, format_report
    pred = read_series(a.pred)
    ref = read_series(a.reference)
    result = evaluate(pred, ref, kept_times=a.kept_times)
    print(format_report(result))
    if a.json:
        _write_json(a.json, result)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from . import api
    from .config import config_to_dict
    tm = api.load_model(a.model, device="cpu")
    info = tm.info
    d = {"file": a.model, "size_bytes": os.path.getsize(a.model),
         "parameters": tm.n_parameters(), "model": config_to_dict(tm.model_config),
         "training": config_to_dict(tm.train_config), **info.to_dict()}
    base = getattr(tm.model, "base", None)
    mixes = base.mixes() if base is not None else {}
    mix, flow = mixes.get("time_mix"), mixes.get("flow_mix")
    if mix is not None:   # the fast model's base between kept steps, per variable
        d["base_time_mix"] = dict(zip(info.variables, mix))
    if flow is not None:
        d["base_flow_mix"] = dict(zip(info.variables, flow))
        d["base_path_mix"] = dict(zip(info.variables, mixes["path_mix"]))
        d["base_path_bend"] = bool(mixes["path_bend"][0])
    if "between_smooth" in mixes:
        d["base_between_smooth"] = dict(zip(info.variables, mixes["between_smooth"]))
    if base is not None and api.has_error_estimate(tm) and \
            getattr(tm.model, "correction", None) is None:
        from .model.error_estimate import data_scales
        used, down1 = data_scales(base).tolist(), base.error_scale.tolist()
        levels = hasattr(base, "error_scale_data") and bool((base.error_scale_data[0] > 0).any())
        d["error_scale"] = {}
        for i, n in enumerate(info.variables):
            e = d["error_scale"][n] = {"space": used[0][i], "time": used[1][i]}
            if levels:            # issue 30's recalibration: the levels behind those
                down2, cover = base.error_scale_down2.tolist(), base.error_cover_down1.tolist()
                e.update(space_down1=down1[0][i], time_down1=down1[1][i],
                         space_down2=down2[0][i], space_cover_down1=cover[0][i],
                         time_cover_down1=cover[1][i])
    if base is not None and hasattr(base, "spline_boundary"):
        from .model.encodings import BOUNDARIES
        d["spline_boundary"] = {n: {axis: [BOUNDARIES[c] for c in ends]
                                    for axis, ends in zip("xyz", row)}
                                for n, row in zip(info.variables, base.spline_boundary.tolist())}
    learned = info.history.get("learned")
    if learned:
        d["learned"] = learned
    space = info.history.get("space_prior")
    if space:
        d["space_prior"] = space
    refine = info.history.get("time_refine")
    if refine:
        d["time_refine"] = refine
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"model file   {a.model} ({d['size_bytes'] / 1e6:.2f} MB, {d['parameters']:,} "
          "parameters)")
    if getattr(tm.model, "has_network", True):
        print(f"network      {tm.model_config.kind} (preset '{info.preset}'), "
              f"{info.layout.n_heads} head(s)")
    elif getattr(tm.model, "correction", None) is not None:
        print(f"network      the spline base plus a learned correction (local implicit "
              f"decoder; preset '{info.preset}')")
    else:
        print(f"network      none: the spline base alone (preset '{info.preset}')")
    print(f"variables    {', '.join(info.variables)}")
    for n in info.variables:
        s = info.stats[n]
        print(f"  {n:<20s} range [{s.lo:.6g}, {s.hi:.6g}]"
              + (f"; between steps: {_between_steps(d, n)}" if mix is not None else ""))
    if info.components:
        print("components   " + "; ".join(f"{k} = {', '.join(v)}"
                                          for k, v in info.components.items()))
    print(f"grid         {info.grid.text()} points, origin {info.grid.origin}, spacing "
          f"{info.grid.spacing}")
    t = info.times
    print(f"times        {len(t)}: {', '.join(f'{v:g}' for v in t[:8])}"
          f"{' ...' if len(t) > 8 else ''}")
    h = info.history
    procs = f" x {h['processes']} processes" if int(h.get("processes", 1)) > 1 else ""
    if h.get("stopped") == "fitted" or (h.get("stopped") == "cancelled"
                                        and not h.get("steps")):
        print(f"fit          to the data in {float(h.get('elapsed_s', 0)):.1f} s on "
              f"{h.get('device', '?')}{procs} ("
              + ("nothing to train)" if h["stopped"] == "fitted" else
                 "stopped before its end, nothing trained)"))
    elif h:
        print(f"training     {h.get('steps', '?')} steps, {float(h.get('elapsed_s', 0)):.1f} s "
              f"on {h.get('device', '?')}{procs}, last batch PSNR "
              f"{float(h.get('batch_psnr', float('nan'))):.2f} dB ({h.get('stopped', '')})")
    for note in h.get("init_notes", []):
        print(f"             {note}")
    if h.get("time_choice"):
        _print_time_choice(h["time_choice"], info.variables)
    if "spline_boundary" in d and all(e == "natural" for f in d["spline_boundary"].values()
                                      for ends in f.values() for e in ends):
        print("faces        the spline is natural at every face (a model file written before "
              "the choice, spline_boundary=natural, or too few points to choose)")
    elif "spline_boundary" in d:
        print("faces        the spline's condition at each face (x, y, z; low/high), chosen "
              "per variable on the kept data one level down:")
        for n, faces in d["spline_boundary"].items():
            print(f"  {n:<20s} " + ", ".join(f"{axis} {'/'.join(ends)}"
                                            for axis, ends in faces.items()))
    if "error_scale" in d and all("space_down1" in e for e in d["error_scale"].values()):
        from .model.error_estimate import SPACE_EXPONENT, TIME_EXPONENT
        print("error        NAME_error arrays, made for 90 % of points below them: per "
              "variable the scales applied, in space and in time: each the scale one level "
              "down (space: kept steps thinned to every other point; time: held-out steps of "
              "the half series) times how much the space scale shrank from two levels down "
              f"to one (to the power {SPACE_EXPONENT:g} in space, {TIME_EXPONENT:g} in time); "
              "and the share of the one-level-down points each applied scale covers (under "
              "90 %: one level down the error is larger for the same indicators):")
        for n, e in d["error_scale"].items():
            print(f"  {n:<20s} space {e['space']:.3g} (one level down {e['space_down1']:.3g}, "
                  f"two {e['space_down2']:.3g}; covers {100 * e['space_cover_down1']:.0f} % one "
                  f"level down), time {e['time']:.3g} (one level down {e['time_down1']:.3g}; "
                  f"covers {100 * e['time_cover_down1']:.0f} %)")
    elif "error_scale" in d:
        print("error        NAME_error arrays: the estimate's scales per variable, in space "
              "(kept steps thinned to every other point) and in time (held-out steps of the "
              "half series), made for 90 % of points below it one level down (a model file "
              "made before the scales were carried to the data's level: it covers more there):")
        for n, e in d["error_scale"].items():
            print(f"  {n:<20s} space {e['space']:.3g}, time {e['time']:.3g}")
    if learned:
        _print_learned(learned, info.variables)
    if space:
        _print_space_prior(space, info.variables)
    if refine:
        _print_time_refine(refine, info.variables)
    return 0


def _between_steps(d: dict, n: str) -> str:
    """How the fast base interpolates variable ``n`` between kept steps, in words."""
    c = d["base_time_mix"][n]
    m = d.get("base_flow_mix", {}).get(n, 0.0)
    smooth = d.get("base_between_smooth", {}).get(n, 0.0)
    smoothing = (f", blended towards trilinear in space by {smooth:.2f} x 4w(1-w)"
                 if smooth and m < 1.0 else "")
    if m == 0.0:
        return f"still, linear + {c:.2f} (cubic - linear){smoothing}"
    path = "bent" if d.get("base_path_bend") else "straight"
    text = f"{'moving' if m == 1.0 else f'{m:.2f} moving'} along {path} paths, " \
           f"linear + {d['base_path_mix'][n]:.2f} (cubic - linear) along them"
    return text + (f", plus {c:.2f} (cubic - linear) in time" if c else "") + smoothing


def _print_time_choice(r: dict, names: List[str]) -> None:
    """What the held-out steps of the half series said (base_time select)."""
    if "held_out_db" not in r:
        print(f"time choice  {r.get('reason', '')}")
        return
    db = r["held_out_db"]
    print(f"time choice  on held-out steps of the half series (dB per variable): common "
          f"choice {r.get('common')}, paths {'bent' if r.get('bend') else 'straight'}")
    carried = r.get("carried_gain_db", {}).get("reversed", [])
    if carried:
        print("             at the real gap, a step carried ahead by the motion before it "
              "beats the motion reversed by (dB): "
              + ", ".join(f"{n} {g:.2f}" for n, g in zip(names, carried)))
    share, gain = r.get("trilinear_share", []), r.get("trilinear_gain_db", [])
    over = r.get("time_over_space_db", [])
    for i, n in enumerate(names):
        cells = ", ".join(f"{k} {v[i]:.2f}" for k, v in db.items() if i < len(v))
        if i < len(gain) and i < len(over):  # between_smooth.py, scored one level down
            cells += (f"; trilinear share {share[i]:.2f} ({gain[i]:+.2f} dB one level down, "
                      f"error between steps {over[i]:.1f} dB over the kept ones')")
        print(f"  {n:<20s} {cells}")

def _print_time_refine(r: dict, names: List[str]) -> None:
    """The time refinement network's use per variable and the scores behind it."""
    if r.get("mode") == "refine_all":
        print("time refine  refine_all: the time refinement network on every moved variable: "
              + ", ".join(n for n, u in zip(names, r.get("use", [])) if u))
        return
    print("time refine  per variable where it beats the base on the held-out steps of the "
          f"half series by more than {r.get('margin_db', 0):g} dB"
          + (f" ({r['held_out_steps']} steps)" if "held_out_steps" in r else ""))
    if r.get("reason"):
        print(f"             {r['reason']}")
    use = r.get("use", [])
    for i, n in enumerate(names):
        if i < len(r.get("gain_db", [])):
            print(f"  {n:<20s} base {r['base_db'][i]:.2f}, refined {r['refine_db'][i]:.2f} dB "
                  f"({r['gain_db'][i]:+.2f}) -> {'on' if i < len(use) and use[i] else 'off'}")


def _print_space_prior(r: dict, names: List[str]) -> None:
    """The spatial prior's choice per variable and the scores behind it (one level down)."""
    how = {"gate": "per variable the network that gains most over the cubic B-spline one "
                   f"level down, if by at least {r.get('margin_db', 0):g} dB",
           "shipped": "the shipped network on every variable",
           "tuned": "the fine-tuned network on every variable"}.get(r.get("mode"), "")
    print(f"space prior  {r.get('mode')}: {how}")
    if r.get("note"):
        print(f"             {r['note']}")
    tuned = r.get("tune_note") or (f"fine-tuned {r.get('tune_steps', 0)} steps in "
                                   f"{float(r.get('tune_s', 0)):.1f} s")
    print(f"             {tuned}; gains one level down ({r.get('scored_on', '-')}): "
          "shipped / fine-tuned")

    def db(xs: list, i: int) -> str:
        return "-" if i >= len(xs) or xs[i] is None else f"{xs[i]:+.2f}"
    for i, n in enumerate(names):
        choice = r.get("decision", [])
        pick = choice[i] if i < len(choice) else "-"
        print(f"  {n:<20s} {db(r.get('gain_db_shipped', []), i)} / "
              f"{db(r.get('gain_db_tuned', []), i)} dB -> "
              f"{ {'base': 'the spline alone', 'shipped': 'shipped prior', 'tuned': 'fine-tuned prior'}.get(pick, pick)}")


def _print_learned(r: dict, names: List[str]) -> None:
    """The learned correction's measured shares, held-out gains and error calibration."""
    print(f"learned      correction trained {r.get('steps', 0)} steps in "
          f"{float(r.get('train_s', 0)):.0f} s on {r.get('pairs', 0)} pairs made from the "
          "data one level down; per variable, share used at kept / in-between steps "
          "(chosen on held-out pairs), held-out gain, error estimate's coverage (made for "
          "90 %):")
    if not any(v > 0 for g in ("share_kept", "share_between") for v in r.get(g, [])):
        print("             it did not improve any held-out pairs: the model is the base alone")
    gk, gb = r.get("held_out_gain_db_kept", []), r.get("held_out_gain_db_between", [])
    cov = r.get("error_calibration", [])
    for i, n in enumerate(names):
        def at(xs: list, fmt: str) -> str:
            return format(xs[i], fmt) if i < len(xs) else "-"
        print(f"  {n:<20s} share {at(r.get('share_kept', []), '.2f')} / "
              f"{at(r.get('share_between', []), '.2f')}, gain {at(gk, '+.2f')} / "
              f"{at(gb, '+.2f')} dB, coverage {at([100 * c for c in cov], '.0f')} %")


def cmd_blend(a: argparse.Namespace) -> int:
    from . import api
    from .io import write_series
    _check_new_output(a.output, a.overwrite)
    tm = api.load_model(a.model, device=a.device)
    out = api.blend(tm, a.var_from, a.var_to, a.steps, a.time, scale=a.scale)
    write_series(out, a.output, overwrite=a.overwrite)
    print(f"wrote {a.output}: {a.steps} blends from '{a.var_from}' to '{a.var_to}' at "
          f"time {a.time:g}", file=sys.stderr)
    return 0


def cmd_coarsen(a: argparse.Namespace) -> int:
    from .io import read_series, write_series
    _check_new_output(a.output, a.overwrite)
    fine = read_series(a.input, arrays=a.arrays)
    coarse = fine.subsample(space=a.space, time=a.time)
    write_series(coarse, a.output, format=a.format, overwrite=a.overwrite)
    print(f"wrote {a.output}: grid {coarse.dims[0]}x{coarse.dims[1]}x{coarse.dims[2]}, "
          f"{coarse.n_times} timestep(s) (from {fine.dims[0]}x{fine.dims[1]}x{fine.dims[2]}, "
          f"{fine.n_times})", file=sys.stderr)
    return 0


PLUGIN_FILE = "STSRINRPlugin.py"


def cmd_plugin_path(a: argparse.Namespace) -> int:
    """The plugin ships as the one file of ``stsr_paraview`` (a folder beside stsr_core, no
    ``__init__``; see setup.py): found without importing it (it imports ParaView)."""
    import importlib.util
    spec = importlib.util.find_spec("stsr_paraview")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(folder, PLUGIN_FILE)):
            print(os.path.join(folder, PLUGIN_FILE) if a.file else folder)
            return 0
    raise StsrError(f"the ParaView plugin ({PLUGIN_FILE}) is not installed with this "
                    f"package (no stsr_paraview folder holding it beside stsr_core): "
                    f"reinstall it, e.g. '{sys.executable} -m pip install stsr-inr'")


COMMANDS = {"coarsen": cmd_coarsen, "fit": cmd_fit, "upscale": cmd_upscale, "eval": cmd_eval, "info": cmd_info,
            "blend": cmd_blend, "plugin-path": cmd_plugin_path}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: checkpoints written, partial outputs removed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _stopped(signum: int) -> tuple:
    """What the exit message says of a signal, and the exit status (128 + its number)."""
    return ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)


class _StopDuringTheFit:
    """Ctrl-C and SIGTERM during ``stsr fit``. While the model is fitted to the data (the
    base's displacement fits: seconds to minutes) the first one is noted and the fit ends as
    a spent time budget ends it: the fits done so far kept, the rest skipped, the model
    saved (as ParaView's abort does). Once training has started, or at a second signal,
    they stop at once as before (a network writes its last checkpoint)."""

    def __init__(self, main: bool) -> None:
        self.main = main
        self.signum: Optional[int] = None
        self.deferring = True

    def __call__(self, signum: int, frame: object) -> None:
        if not self.deferring or self.signum is not None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.signum = signum
        if self.main:
            # straight to the descriptor: the signal may come while the progress bar is
            # inside a write to sys.stderr, where a print raises 'reentrant call' (seen on
            # Debian 13's Python 3.13 in make test-debian13)
            text = (f"\nstsr: {_stopped(signum)[0]}: ending the fit with the work done so far "
                    "and saving it (again to stop at once, leaving the model file as it was)\n")
            try:
                os.write(sys.stderr.fileno(), text.encode())
            except (OSError, ValueError):          # no descriptor (an in-memory stream)
                print(text, end="", file=sys.stderr)

    def training_started(self) -> None:
        """From here a signal stops at once; one that came just before stops now."""
        self.deferring = False
        if self.signum is not None:
            raise Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """This handler for SIGTERM and SIGINT (unless SIGINT is ignored, as a background
        job's is) while the block runs; the previous ones after it."""
        names = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT)
                                    is not signal.SIG_IGN else [])
        previous = {n: signal.signal(n, self) for n in names}
        try:
            yield
        finally:
            self.deferring = False
            for n, handler in previous.items():
                signal.signal(n, handler)


INTERRUPTED = {
    "fit": "the model file holds the last checkpoint (or, if none was written, is unchanged)",
    "upscale": "the output lists only complete steps; partial files were removed",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line ``argv`` (``sys.argv[1:]`` when None); returns the exit status.
    Called without ``argv`` -- as the ``stsr`` program and ``python -m stsr_core.cli`` call
    it -- the process ends here once the command has returned (:func:`_end_process`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code = _run(args)
    if getattr(args, "joined_a_group", False):
        # One of several processes, its work done, saved and the group left: it ends here.
        # At the interpreter's exit torch 2.13 sometimes aborts such a process ("terminate
        # called without an active exception", SIGABRT, after all Python code ran: 2 of 40
        # two-process fits on the busy 2-core machine, never with one process), which
        # would turn a finished run into a failed one; os._exit skips that exit.
        _end_process(code)
    if argv is None:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the process with ``code`` once a command has returned, without the interpreter's
    teardown: with torch and numba's kernels loaded that teardown (freeing every module's
    objects, LLVM's and torch's destructors) took 0.4-0.5 s after ``stsr upscale`` had
    finished its work (0.3 s for ``import torch`` alone; 2-core VM, 2026-12-06), 8 % of the
    129^3 x 17 upscale end to end. Nothing is lost by skipping it: every command has
    closed (and flushed to the disk) what it wrote before returning; the exit handlers run
    here (they close what a library registered), then stdout and stderr are flushed."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):   # a closed pipe (stsr ... | head): nothing to add
                pass
        os._exit(code)


def _first_line(exc: BaseException) -> str:
    """The gist of an allocator's message (torch's carries a C++ location before it)."""
    text = str(exc) or type(exc).__name__
    return text.split("] ")[-1].splitlines()[0][:200]


def _run(args: argparse.Namespace) -> int:
    """The command, with its user errors and signals as one line and an exit status."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return COMMANDS[args.command](args)
    except StsrError as exc:
        print(f"stsr: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:   # past the memory plan: still one line
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        lower = " or fit fewer variables (--arrays)" if args.command == "fit" else ""
        print(f"stsr: error: {args.command} ran out of memory ({_first_line(exc)}); files "
              "it writes are only renamed into place when complete; free memory or use a "
              f"machine with more{lower}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what, code = _stopped(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        detail = INTERRUPTED.get(args.command)
        print(f"stsr: {what}" + (f"; {detail}" if detail else ""), file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
