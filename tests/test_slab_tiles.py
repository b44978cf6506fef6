"""Slabs cut into tiles along y (issue 29, "real size"): where a full-width slab of one row
does not fit --max-memory, each z-slab is computed tile by tile (a box of its own, its
window the tile plus the halo) into the slab's host buffers. The numbers are the
full-width ones, the default path never tiles, a budget too small even for tiles is still
one line before anything is written, and a real process under such a budget finishes."""
import json
import os
import re
import sys

import pytest
import torch

from stsr_core import StsrError, api, slabs
from stsr_core.io import read_series
from child_peak import run_with_peak
from test_slab_upscale import model, model_file, relative, stsr, whole_box  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forced(real, tile, rows=None):
    """plan_memory with the tile height forced (and the slab rows capped)."""
    def plan(*a, **k):
        m = real(*a, **{**k, "tile": tile})
        if rows is not None:
            m.rows = min(m.rows, rows)
        return m
    return plan


def needs(refusal: str):
    """(bytes the smallest tiles need, bytes a full-width row needs) from a refusal."""
    m = re.search(r"needs ([\d.]+ [MG]B) .*full width ([\d.]+ [MG]B)", refusal)
    assert m, refusal
    return slabs.parse_bytes(m.group(1)), slabs.parse_bytes(m.group(2))


def spied_boxes(monkeypatch):
    boxes, real = [], slabs.slab_plan
    monkeypatch.setattr(slabs, "slab_plan", lambda base, axes, box, *a, **k:
                        boxes.append(tuple(box)) or real(base, axes, box, *a, **k))
    return boxes


@pytest.mark.parametrize("tile, rows", [(3, 2), (4, None), (6, 1)])
def test_a_tiled_upscale_equals_the_full_width_one(model, tmp_path, monkeypatch, tile, rows):
    """The same upscale (bent paths, a cubic share along them, a still variable, error
    arrays; several steps of an interval sharing a tile's fields) full width and in tiles
    of ``tile`` y rows: every value and error within 1e-5 of the largest."""
    real = slabs.plan_memory
    ref = api.upscale(model, str(tmp_path / "whole.h5"), scale=2, time_scale=4)
    assert ref["memory"]["tile"] is None
    monkeypatch.setattr(slabs, "plan_memory", forced(real, tile, rows))
    boxes = spied_boxes(monkeypatch)
    r = api.upscale(model, str(tmp_path / "tiles.h5"), scale=2, time_scale=4)
    y_n = r["grid"].dims[1]
    assert r["memory"]["tile"] == tile and "tiles of" in r["memory"]["text"]
    assert any(b[3] - b[2] + 1 == tile < y_n for b in boxes)      # y-limited boxes planned
    a, b = read_series(str(tmp_path / "whole.h5")), read_series(str(tmp_path / "tiles.h5"))
    assert sorted(a.variables) == sorted(b.variables) and "heat_error" in a.variables
    for n in a.variables:
        assert relative(b.variables[n], a.variables[n]) < 1e-5, n


def test_a_tiled_box_at_one_time_equals_the_full_width_one(model, monkeypatch):
    """predict_box (ParaView's extents, api.predict) in tiles: a sub-extent limited in x, y
    and z, values and error arrays as full width."""
    g = api.output_grid(model.info.grid, scale=2)
    box = (2, g.dims[0] - 3, 1, g.dims[1] - 2, 3, g.dims[2] - 1)
    real = slabs.plan_memory
    for t in (2.0, 2.5, 4.7):
        model.plan = None
        want = slabs.predict_box(model, t, g, box, True)
        monkeypatch.setattr(slabs, "plan_memory", forced(real, 4, 3))
        model.plan = None
        got = slabs.predict_box(model, t, g, box, True)
        monkeypatch.setattr(slabs, "plan_memory", real)
        for n in want:
            assert got[n].shape == want[n].shape
            assert relative(got[n], want[n]) < 1e-5, (t, n)
    model.plan = None


def test_tiles_are_planned_only_where_a_full_width_slab_does_not_fit(model):
    """The default budget and any budget a full-width row fits: no tiles (today's plan);
    between the tiles' smallest need and a full-width row's: tiles, within the budget,
    counted (their window and buffer); below that: refused in one line."""
    g = api.output_grid(model.info.grid, scale=4)
    box, n = whole_box(g), 2 * model.model.base.n_vars
    default = slabs.plan_memory(model, g, box, n, True, None)
    assert default.tile is None and "tiles" not in default.text()
    full = default.full_width
    roomy = slabs.plan_memory(model, g, box, n, True, full + (1 << 20))
    assert roomy.tile is None and roomy.rows >= 1
    with pytest.raises(StsrError) as e:
        slabs.plan_memory(model, g, box, n, True, 1)
    least, said_full = needs(str(e.value))
    assert "in tiles of" in str(e.value) and "\n" not in str(e.value)
    # the line rounds to 1 MB, or to 0.01 GB once the need passes 1 GB (the need includes
    # this process's own RSS: a pytest process that ran other tests first may hold 1 GB)
    rounding = 1e7 if full >= 1e9 else 1e6
    assert abs(said_full - full) < rounding and least < full + rounding, (least, full)
    budget = full - 2_000_000                 # a full-width row just does not fit: tiles
    tiled = slabs.plan_memory(model, g, box, n, True, budget, group_steps=3)
    assert tiled.tile is not None and 1 <= tiled.tile < g.dims[1]
    assert tiled.need <= budget < full and tiled.parts["tile buffers"] > 0
    assert tiled.buffers >= 4                # the group's three steps and one being written
    assert "slabs of" in tiled.text() and "tiles of" in tiled.text()


def test_a_budget_too_small_even_for_tiles_is_refused_in_one_line(model_file, tmp_path):
    r = stsr("upscale", model_file, "-o", tmp_path / "o" / "out.nc", "--scale", "8",
             "--max-memory", "100MB")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in tiles of 8 y rows, full width" in lines[0], r.stderr
    assert lines[0].startswith("stsr: error: --max-memory 100 MB is too small")
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs]       # nothing written


def test_a_process_under_a_budget_that_needs_tiles_finishes_and_reads_back_equal(
        model_file, tmp_path):
    """193^3 x 1 step x 4 arrays by a real `stsr upscale` under a --max-memory between
    what the tiles need and what a full-width row needs (both from its own refusal of a
    tiny budget): it tiles, keeps within 10 % of the budget, and the output reads back as
    the default (full-width) upscale's."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    probe = stsr("upscale", model_file, "-o", tmp_path / "p.h5", "--scale", "12",
                 "--max-memory", "1MB", env={"OMP_NUM_THREADS": "1"})
    least, full = needs(probe.stderr)
    assert full - least > 10e6, (least, full)
    budget = int((least + full) / 2)
    out, timings = tmp_path / "tiles.h5", tmp_path / "t.json"
    rc, err, peak = run_with_peak([sys.executable, "-m", "stsr_core.cli", "upscale",
                                   model_file, "-o", out, "--scale", "12", "--times", "1.75",
                                   "--max-memory", f"{budget // 10 ** 6}MB",
                                   "--timings", timings, "--quiet"], env)
    assert rc == 0, err
    with open(timings) as fh:
        memory = json.load(fh)["memory"]
    assert memory["tile"] is not None and memory["tile"] < 193, memory
    ref = stsr("upscale", model_file, "-o", tmp_path / "whole.h5", "--scale", "12",
               "--times", "1.75", "--quiet", env={"OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr
    a, b = read_series(str(tmp_path / "whole.h5")), read_series(str(out))
    assert b.grid.dims == (193, 193, 193) and b.n_times == a.n_times == 1
    for n in a.variables:
        assert relative(b.variables[n], a.variables[n]) < 1e-5, n
    # its own peak (started by a small launcher: tests/child_peak.py says why)
    assert peak < 1.1 * (budget // 10 ** 6) * 10 ** 6, (peak, budget)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tiles_on_cuda_give_the_cpu_numbers(model_file, tmp_path, monkeypatch):
    real = slabs.plan_memory
    api.upscale(api.load_model(str(model_file), device="cpu"), str(tmp_path / "c.h5"),
                scale=3, time_scale=3)
    monkeypatch.setattr(slabs, "plan_memory", forced(real, 5, 4))
    r = api.upscale(api.load_model(str(model_file), device="cuda"), str(tmp_path / "d.h5"),
                    scale=3, time_scale=3)
    assert r["memory"]["tile"] == 5
    a, b = read_series(str(tmp_path / "c.h5")), read_series(str(tmp_path / "d.h5"))
    for n in a.variables:
        assert relative(b.variables[n], a.variables[n]) < 1e-5, n
