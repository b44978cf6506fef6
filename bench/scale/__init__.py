"""The scale benchmark of issue 16: what fit and upscale cost on real-size data, beside
SciPy's interpolation, on this machine.

For each case (examples/data/scale/generate.py makes the coarse input; the fine truth is
evaluated analytically, slab by slab, only at a few steps):
  - ``stsr fit`` as a child process: wall time, peak RSS (os.wait4), the model file's size
    (and any file written beside it, e.g. optimiser state) against the coarse input's float32
    size;
  - compute rate apart from writing: in this process, api.load_model, then
    api.predict_timestep on the scored steps; output points (all variables) per second;
  - PSNR (20 log10(range) - 10 log10(MSE), per variable per step, averaged) on those steps
    for the model, trilinear+linear and tricubic+cubic (bench/baselines.py, slab by slab);
  - write rate of one output step per format (.vti raw/zlib, .h5 raw/gzip-chunked);
  - end to end: ``stsr upscale`` of EVERY fine step (scale s, time scale k) into a scratch
    folder, as a child (wall time, peak RSS, output size), and in the same run SciPy's
    trilinear+linear as a child doing the same job (read coarse, every step, write the same
    format); the scratch output is removed afterwards, and the step is skipped with a message
    when the free disk space cannot hold it.
Cases: A 257^3 x 49 steps (coarse 129^3 x 13, s = 2, k = 4); B 597x245x245 x 97 (coarse
150x62x62 x 25, s = 4, k = 4); growth: coarse 33^3, 65^3, 129^3 x 13 steps (fit time, model
size, peak RSS, upscale rate; 129^3 is case A's data, reused when A ran).

    make bench-scale ARGS="--quick"
    python -m bench.scale [--cases A,B,growth] [--quick] [--fit-minutes M] [--formats h5,vti]
                          [--keep-output] [--upscale-timeout-minutes M] [--out DIR]
    python -m bench.scale --processes 1,2 [--process-case growth65] [--quick]

``--processes`` (issue 18) runs only ``stsr fit`` and ``stsr upscale`` with 1 and with N
processes (torchrun) on one case, into processes.json and processes.md.

Writes bench/results/<date>/scale.json (after every case, atomically: a cut-off run keeps
what it measured), scale.md and scale.png. A figure that was not measured is null/"-", never
estimated. The CLI children run this tree's stsr_core (PYTHONPATH), not an installed copy.

Where each part lives: __main__.py (the arguments and the run over the cases), cases.py (one
case: fit, score, upscale), measure.py (PSNR, compute and write rates, the end-to-end
upscale against SciPy), children.py (CLI children and their wall time and peak RSS),
data.py (the cases' coarse input), processes.py (1 process against several), report.py
(machine, JSON, tables, plot).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
