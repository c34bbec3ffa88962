"""Pre-training config: presets equal their YAML mirrors, overrides, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracklm import config as config_lib
from tracklm.errors import InputError
from tracklm.train.config import PRESETS, PretrainConfig, load_pretrain_config, preset_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_yaml_preset_loads_and_equals_its_builtin():
    files = sorted((CONFIGS / "pretrain").glob("*.yaml"))
    assert {f.stem for f in files} == set(PRESETS)
    for path in files:
        assert config_lib.load_config(PretrainConfig, path) == preset_config(path.stem), path


def test_presets_differ_where_they_should():
    tiny, paper = preset_config("tiny"), preset_config("paper")
    assert (paper.batch_size, paper.lr, paper.warmup_steps, paper.weight_decay) == (
        5000,
        1e-4,
        10_000,
        0.01,
    )
    assert paper.mask_rates == (0.15, 0.30, 0.50) and paper.model == "paper"
    assert tiny.model == "tiny" and tiny.max_steps <= 500


def test_config_file_then_options_override_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "lr: 0.002\nmask_rates: [0.2, 0.4]\nmask_rate_steps: [50]\nmodel_overrides: {num_layers: 3}\n"
    )
    config = load_pretrain_config("small", str(path), {"max_steps": 77, "batch_size": None})
    assert config.lr == 0.002 and config.max_steps == 77
    assert config.batch_size == preset_config("small").batch_size
    assert config.mask_schedule().rate_at(60) == 0.4
    assert config.model_overrides == {"num_layers": 3}


def test_unknown_key_is_refused_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: 0.001\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*'learning_rate'"):
        load_pretrain_config("tiny", str(path))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("batch_size: 0\n", "batch_size"),
        ("pairing: single\n", "pair_task"),
        ("mask_rates: [0.1, 0.2]\n", "mask_rate"),
        ("pair_task: nsp\n", "pair_task"),
        ("lr: fast\n", "lr"),
    ],
)
def test_invalid_values_are_refused(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_pretrain_config("tiny", str(path))
