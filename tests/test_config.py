"""stsr_core/config.py: every setting's choices live there and every config checks them."""
import dataclasses
import os
import subprocess
import sys

import pytest

from stsr_core import StsrError
from stsr_core.config import (CHOICES, DEVICES, PRESET_DESCRIPTIONS, PRESETS, FastNetConfig,
                              SirenNetConfig, TrainConfig, apply_settings, preset,
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
])
def test_bad_set_texts_say_what_is_wrong(pair, message):
    with pytest.raises(StsrError) as err:
        apply_settings(*preset("fast"), [pair], "preset 'fast'")
    assert message in str(err.value)


def test_config_imports_without_torch_so_the_plugin_can_read_it_at_load_time():
    code = "import sys, stsr_core.config; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
