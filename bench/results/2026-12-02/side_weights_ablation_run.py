"""How side_weights_ablation.json was made: the lead's full-pipeline harness (pipe.py, not in
this repository: coarsen every 2nd point and every 4th step, api.fit with the 2-minute
budget and the overrides, predict every fine step at the fine grid, PSNR per phase of the
interval) on each data set, the shipped side-weights network off and on.

    STSR_ROOT=<this checkout> THREADS=1 python side_weights_ablation_run.py OUT.json NAME...
    STSR_ROOT=... MODELS=DIR python side_weights_ablation_run.py --same-fit OUT.json NAME...
    python side_weights_ablation_run.py --tables SEPARATE.json SAME_FIT.json   (markdown)
"""
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("PIPE_DIR", "/work/research"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pipe import coarsen, fine_series, line, run, scores  # noqa: E402
from stsr_core import api  # noqa: E402
from stsr_core.series import VolumeSeries  # noqa: E402

VARIANTS = {"off": {"base_time": "select"},
            "prior": {"base_time": "select", "side_net": "prior"}}


def same_fit(name, s=2, k=4, minutes=2.0):
    """One fit (side_net = prior, 2-minute budget; kept in $MODELS when set), to be
    predicted with the network and with it taken out (:func:`weigh`): the network's own
    contribution, free of the fits' variation from run to run on a shared machine."""
    fine = fine_series(name)
    n = (fine.n_times - 1) // k * k + 1
    fine = VolumeSeries(times=fine.times[:n], variables={v: a[:n] for v, a in
                                                         fine.variables.items()},
                        origin=fine.origin, spacing=fine.spacing)
    t0 = time.time()
    tm = api.fit(coarsen(fine, s, k), "fast", max_minutes=minutes, device="cpu", seed=0,
                 model_overrides=VARIANTS["prior"])
    out = {"name": name, "fit_s": time.time() - t0,
           "mixes": {kk: list(v) for kk, v in tm.model.base.mixes().items()}}
    if os.environ.get("MODELS"):         # kept, to weigh the sides of the same fit again
        os.makedirs(os.environ["MODELS"], exist_ok=True)
        api.save_model(tm, os.path.join(os.environ["MODELS"], f"{name}.stsr"))
    return out, tm, fine


def weigh(tm, fine, nets, s=2, k=4):
    """Scores of the fitted model ``tm`` with each of ``nets`` (label -> module or None)
    weighing its sides."""
    out = {}
    for label, module in nets.items():
        tm.model.base.side_weights = module
        tm.plan = None
        t0 = time.time()
        pred = api.predict(tm, scale=s, time_scale=k, error=False)
        out[label] = scores(pred, fine, k)
        out[label]["predict_s"] = time.time() - t0
    return out


def _phases(r):
    return {int(p): v for p, v in r["phase"].items()}


def table_separate(rows):
    """Separate fits (as a user runs them): per data set kept, between and each phase."""
    by = {}
    for r in rows:
        by.setdefault(r["name"], {})[r["label"]] = r
    out = ["| data set | kept off / on | between off | between on | gain | 1/4 off / on | "
           "1/2 off / on | 3/4 off / on | fit s off / on | predict s off / on | "
           "error coverage between off / on |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    gains = []
    for name, v in by.items():
        a, b = v["off"], v["prior"]
        g = b["between"] - a["between"]
        gains.append(g)
        pa, pb = _phases(a), _phases(b)
        ph = " | ".join(f"{pa[p]:.2f} / {pb[p]:.2f}" for p in (1, 2, 3))
        cov = [sum(v for p, v in r["coverage"].items() if int(p)) / 3 for r in (a, b)]
        out.append(f"| {name} | {a['kept']:.2f} / {b['kept']:.2f} | {a['between']:.2f} | "
                   f"{b['between']:.2f} | {g:+.2f} | {ph} | {a['fit_s']:.0f} / "
                   f"{b['fit_s']:.0f} | {a['predict_s']:.1f} / {b['predict_s']:.1f} | "
                   f"{cov[0]:.2f} / {cov[1]:.2f} |")
    out.append(f"| **mean** | | | | **{sum(gains) / len(gains):+.2f}** | | | | | | |")
    return "\n".join(out)


def table_same_fit(rows):
    """One fit per data set, its sides weighed without and with the network."""
    out = ["| data set | moved variables | between off | between on | gain | 1/4 off / on | "
           "1/2 off / on | 3/4 off / on | fit s |", "|---|---|---|---|---|---|---|---|---|"]
    gains = []
    for r in rows:
        a, b = r["off"], r["prior"]
        g = b["between"] - a["between"]
        gains.append(g)
        pa, pb = _phases(a), _phases(b)
        moved = sum(1 for m in r["mixes"].get("flow_mix", []) if m)
        ph = " | ".join(f"{pa[p]:.2f} / {pb[p]:.2f} ({pb[p] - pa[p]:+.2f})" for p in (1, 2, 3))
        out.append(f"| {r['name']} | {moved} of {len(r['mixes'].get('time_mix', []))} | "
                   f"{a['between']:.2f} | {b['between']:.2f} | {g:+.2f} | {ph} | "
                   f"{r['fit_s']:.0f} |")
    out.append(f"| **mean** | | | | **{sum(gains) / len(gains):+.2f}** | | | | |")
    return "\n".join(out)


if __name__ == "__main__" and sys.argv[1] == "--tables":
    separate, same = (json.load(open(p)) for p in sys.argv[2:4])
    print("### One fit per data set, predicted with and without the network\n")
    print(table_same_fit(same))
    print("\n### Separate fits, network off and on (as a user runs them)\n")
    print(table_separate(separate))
elif __name__ == "__main__" and sys.argv[1] == "--same-fit":
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    out_path, names = sys.argv[2], sys.argv[3:]
    rows = json.load(open(out_path)) if os.path.exists(out_path) else []
    for name in names:
        if name in {r["name"] for r in rows}:
            continue
        r, tm, fine = same_fit(name)
        r.update(weigh(tm, fine, {"prior": tm.model.base.side_weights, "off": None}))
        a, b = r["off"], r["prior"]
        print(f"{name:13s} between off {a['between']:.2f} on {b['between']:.2f} "
              f"({b['between'] - a['between']:+.2f}) | " + " ".join(
                  f"{a['phase'][p]:.2f}/{b['phase'][p]:.2f}" for p in (1, 2, 3))
              + f" | predict {a['predict_s']:.1f}/{b['predict_s']:.1f} s", flush=True)
        rows.append(r)
        with open(out_path + ".tmp", "w") as fh:
            json.dump(rows, fh, indent=1)
        os.replace(out_path + ".tmp", out_path)
elif __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    out_path, names = sys.argv[1], sys.argv[2:]
    rows = json.load(open(out_path)) if os.path.exists(out_path) else []
    done = {(r["name"], r["label"]) for r in rows}
    for name in names:
        for label, overrides in VARIANTS.items():
            if (name, label) in done:
                continue
            t0 = time.time()
            r = run(name, overrides, minutes=2.0, label=label)
            r["wall_s"] = time.time() - t0
            print(line(r), flush=True)
            rows.append(r)
            with open(out_path + ".tmp", "w") as fh:
                json.dump(rows, fh, indent=1)
            os.replace(out_path + ".tmp", out_path)

