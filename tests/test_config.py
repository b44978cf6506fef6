"""stsr_core/config.py: every setting's choices live there and every config checks them."""
import dataclasses
import os
import subprocess
import sys

import pytest

from stsr_core import StsrError
from stsr_core.config import (CHOICES, DEVICES, MODEL_CONFIGS, PRESET_DESCRIPTIONS, PRESETS,
                              RANGES, FastNetConfig, SirenNetConfig, STSRNetConfig,
                              TrainConfig, apply_settings, model_config_from_dict, preset,
                              settings_overrides)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_preset_has_a_description_and_valid_choices():
    assert list(PRESET_DESCRIPTIONS) == ["fast", "liif", "paper", "siren"]
    assert set(PRESET_DESCRIPTIONS) == set(PRESETS)
    for name in PRESETS:
        preset(name)          # fresh copies pass their own checks
    assert DEVICES == CHOICES["device"] == ("auto", "cpu", "cuda")


@pytest.mark.parametrize("make, setting, value", [
    (FastNetConfig, "base_time", "flw"),
    (FastNetConfig, "encoding", "hash"),
    (FastNetConfig, "grid_interp", "nearest"),
    (FastNetConfig, "base", "poly"),
    (FastNetConfig, "learn_pairs", "both"),
    (FastNetConfig, "between_smoothing", "on"),
    (TrainConfig, "schedule", "step"),
    (TrainConfig, "device", "tpu"),
])
def test_a_config_refuses_a_value_outside_its_choices_naming_all_of_them(make, setting, value):
    with pytest.raises(StsrError) as err:
        make(**{setting: value})
    text = str(err.value)
    assert f"unknown {setting} '{value}'" in text
    assert ", ".join(CHOICES[setting]) in text
    with pytest.raises(StsrError, match=f"unknown {setting}"):   # replace checks too
        dataclasses.replace(make(), **{setting: value})


def test_every_numeric_setting_has_a_range_or_choices():
    """A setting added later gets its range too (this fails until RANGES lists it)."""
    for cls in (*MODEL_CONFIGS.values(), TrainConfig):
        for f in dataclasses.fields(cls):
            numeric = ("int" in str(f.type) or "float" in str(f.type)) and f.type != "bool"
            if numeric:
                assert f.name in RANGES or f.name in CHOICES, f"{cls.__name__}.{f.name}"


@pytest.mark.parametrize("make, setting, value, allowed", [
    (FastNetConfig, "flow_max_points", 0, "an integer >= 2"),     # was a RuntimeError
    (FastNetConfig, "flow_coarsen", 0, "an integer >= 1"),        # was a ZeroDivisionError
    (FastNetConfig, "flow_smooth", -5.0, "a number >= 0"),        # these passed silently
    (FastNetConfig, "flow_iters", -1, "an integer >= 0"),
    (TrainConfig, "lr", -1.0, "a number > 0"),
    (FastNetConfig, "latent_dim", -3, "an integer >= 1"),
    (FastNetConfig, "learn_share", 1.5, "a number in [0, 1]"),
    (FastNetConfig, "flow_iters", 2.5, "an integer >= 0"),        # a crafted model file's
    (FastNetConfig, "width", True, "an integer >= 1"),
    (TrainConfig, "max_minutes", float("nan"), "a number > 0 or none"),
    (TrainConfig, "checkpoint_seconds", float("inf"), "a number > 0"),
    (TrainConfig, "betas", (0.9, 1.0), "a number in [0, 1) each"),
    (STSRNetConfig, "trunk_widths", (64, 0, 256), "an integer >= 1 each"),
    (TrainConfig, "seed", 2 ** 64, "an integer in [-9223372036854775808, 9223372036854775807]"),
    (FastNetConfig, "depth", 10 ** 30, "an integer >= 1 (64-bit)"),
])
def test_a_config_refuses_a_value_outside_its_range_naming_setting_value_and_range(
        make, setting, value, allowed):
    with pytest.raises(StsrError) as err:
        make(**{setting: value})
    assert str(err.value) == f"{setting} {value!r} is out of range; allowed: {allowed}"
    with pytest.raises(StsrError, match="out of range"):      # replace checks too
        dataclasses.replace(make(), **{setting: value})


def test_each_end_of_a_range_is_what_its_text_says():
    for ok in (dict(flow_max_points=2), dict(flow_iters=0), dict(flow_smooth=0.0),
               dict(learn_share=0.0), dict(learn_share=1), dict(base_out_init=-3.5)):
        FastNetConfig(**ok)
    for ok in (dict(steps=None, max_minutes=1e-9), dict(steps=0), dict(betas=(0.0, 0.5)),
               dict(seed=-(2 ** 63)), dict(num_threads=None)):
        TrainConfig(**ok)
    for bad in (dict(max_minutes=0.0), dict(lr=0.0), dict(batch_size=0)):
        with pytest.raises(StsrError, match="out of range"):
            TrainConfig(**bad)


def test_a_model_file_s_setting_out_of_range_is_an_inconsistency_naming_it():
    d = dataclasses.asdict(FastNetConfig())
    d["flow_coarsen"] = 0
    with pytest.raises(StsrError, match="flow_coarsen 0 is out of range"):
        model_config_from_dict(d)


def test_device_accepts_what_the_trainer_accepts():
    for device in ("auto", "CPU", "cuda:1", None):
        TrainConfig(device=device)


def test_a_config_of_one_kind_refuses_another_kind():
    with pytest.raises(StsrError, match="kind 'siren', not 'fast'"):
        SirenNetConfig(kind="fast")


def test_set_texts_are_typed_like_the_preset_defaults():
    m, t = apply_settings(*preset("fast"), [("base_time", "cubic"), ("flow_iters", "10"),
                                             ("lr", "5e-3"), ("betas", "0.8,0.9"),
                                             ("steps", "12")], "preset 'fast'")
    assert (m.base_time, m.flow_iters, t.lr, t.betas) == ("cubic", 10, 0.005, (0.8, 0.9))
    assert t.steps == 12 and preset("fast")[0].base_time == "select"
    model, train = settings_overrides(*preset("fast"), [("width", "8"), ("seed", "4")], "x")
    assert model == {"width": 8} and train == {"seed": 4}


@pytest.mark.parametrize("pair, message", [
    (("bogus", "1"), "no such setting of preset 'fast'; model settings: kind, network, latent_dim"),
    (("kind", "siren"), "use --preset"),
    (("flow_iters", "many"), "--set flow_iters=many: expected an integer"),
    (("base_time", "flw"), "unknown base_time 'flw'; allowed: select, auto, linear, cubic, "
                           "flow"),
    (("flow_path", "curved"), "unknown flow_path 'curved'; allowed: auto, straight, bent"),
    (("flow_max_points", "0"), "flow_max_points 0 is out of range; allowed: an integer >= 2"),
    (("lr", "nan"), "lr nan is out of range; allowed: a number > 0"),
    (("heads", "3"), "unknown heads '3'; allowed: 1, 8"),
])
def test_bad_set_texts_say_what_is_wrong(pair, message):
    with pytest.raises(StsrError) as err:
        apply_settings(*preset("fast"), [pair], "preset 'fast'")
    assert message in str(err.value)


def test_config_imports_without_torch_so_the_plugin_can_read_it_at_load_time():
    code = "import sys, stsr_core.config; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
