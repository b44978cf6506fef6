"""Scale case B: PSNR per truth step (8 kept, 9/10/11 at 1/4, 1/2, 3/4) and the error
estimate's coverage, for the model named by argv[1], into the JSON file argv[2]."""
import json, math, sys, numpy as np, h5py
from stsr_core import api

TRUTH = "/work/scratchB/data/truth.h5"


def scores(tm, g, label=""):
    """Per truth step (its number as a string) and variable: PSNR against the truth and the
    share of points whose error is below the error estimate."""
    f = h5py.File(TRUTH, "r")
    rows = {}
    for i, t in enumerate(float(s) for s in f.attrs["times"]):
        pred = api.predict_timestep(tm, t, g, error=True)
        row = {}
        for n in tm.info.variables:
            ref = f[n][i].astype(np.float64)
            e = pred[n].astype(np.float64) - ref
            row[n] = 20 * math.log10(np.ptp(ref)) - 10 * math.log10(float(np.mean(e * e)))
            row[n + "_coverage"] = float(np.mean(np.abs(e) <= pred[n + "_error"]))
        rows[str(int(t))] = row
        print(label, t, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return rows


if __name__ == "__main__":
    tm = api.load_model(sys.argv[1])
    json.dump(scores(tm, api.output_grid(tm.info.grid, scale=4)), open(sys.argv[2], "w"),
              indent=1)
