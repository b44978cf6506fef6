"""The streamed fit makes the model main made, bit for bit: each dataset coarsened (every 2nd
point, every 4th step), fitted by main's tree (a copy of 2e1fd8a in BASE) and by this one with
a budget no displacement fit reaches (so that neither is cut by time), and every tensor of
the two model files compared.

    python bench/results/2026-12-05/fit-memory/same_model.py BASE WORKDIR [DATASET.pvd|h5 ...]
"""
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))


def fit(src, data, model):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=src)
    subprocess.run([sys.executable, "-m", "stsr_core.cli", "fit", data, "-o", model,
                    "--max-minutes", "60", "--quiet", "--overwrite", "--device", "cpu"],
                   check=True, env=env, cwd="/")


def main():
    base, work = sys.argv[1], os.path.abspath(sys.argv[2])
    datasets = [os.path.abspath(d) for d in sys.argv[3:]]
    os.makedirs(work, exist_ok=True)
    out = {}
    for d in datasets:
        name = os.path.splitext(os.path.basename(d))[0]
        data = d
        if d.endswith(".pvd"):         # the benchmark's protocol: coarsened first
            data = os.path.join(work, f"{name}_coarse.pvd")
            subprocess.run([sys.executable, "-m", "stsr_core.cli", "coarsen", d, "-o", data,
                            "--space", "2", "--time", "4", "--overwrite"], check=True,
                           env=dict(os.environ, PYTHONPATH=ROOT), cwd="/")
        models = [os.path.join(work, f"{name}_{tag}.stsr") for tag in ("main", "streamed")]
        fit(base, data, models[0])
        fit(ROOT, data, models[1])
        a, b = (torch.load(m, weights_only=True)["state_dict"] for m in models)
        diff = {k: float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a}
        out[name] = {"same_keys": sorted(a) == sorted(b),
                     "identical": all(torch.equal(a[k], b[k]) for k in a),
                     "max_abs_diff": max(diff.values()),
                     "shape": list(a["base.coef"].shape)}
        print(name, out[name], flush=True)
    with open(os.path.join(HERE, "same_model.json"), "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
