"""Case B's warps' fields on the output grid (the rule at s = 4) against a grid twice as
fine as the data (tried for memory as a change of SplineBase.plan_grid, not kept; here the
same plan is made by replacing the lookup grid of the rule's plan): the two outputs
compared at four in-between steps, and the seconds a step."""
import math, time, numpy as np, torch
from stsr_core import api
from stsr_core.model.grid_plan import spline_matrix


def plan_for(tm, g, rule):
    """Set ``tm``'s plan for the whole grid ``g``: the warps' fields on the output grid
    ("output") or on a grid twice as fine as the data ("twice")."""
    base = tm.model.base
    tm.plan = None
    plan = base.plan_grid([torch.linspace(-1.0, 1.0, n) for n in g.dims], None, factors=(2,))
    if rule == "twice":
        plan.warp_spline = [spline_matrix(torch.linspace(-1.0, 1.0, 2 * (n - 1) + 1), n)
                            for n in base.dims]
    tm.plan = ((g, None), plan)


if __name__ == "__main__":
    tm = api.load_model("/work/scratchB/B.stsr")
    g = api.output_grid(tm.info.grid, scale=4)
    times = (9.0, 10.0, 11.0, 13.0)
    keep = {}
    plan_for(tm, g, "twice")
    for t in times:
        t0 = time.perf_counter(); keep[t] = api.predict_timestep(tm, t, g)
        print("twice", t, round(time.perf_counter() - t0, 2), "s", flush=True)
    plan_for(tm, g, "output")
    for t in times:
        t0 = time.perf_counter(); a = api.predict_timestep(tm, t, g)
        print("output", t, round(time.perf_counter() - t0, 2), "s", flush=True)
        for n in tm.info.variables:
            x, y = a[n].astype(np.float64), keep[t][n].astype(np.float64)
            peak = np.ptp(x); mse = np.mean((x - y) ** 2)
            print(t, n, "PSNR twice vs output",
                  round(10 * math.log10(peak ** 2 / mse), 2) if mse else "inf",
                  "max rel", round(float(np.abs(x - y).max() / peak), 4), flush=True)
