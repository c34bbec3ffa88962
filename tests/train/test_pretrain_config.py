"""Pre-training config: presets load by name, the defaults live once, overrides, bad keys refused."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tracklm import config as config_lib
from tracklm.cli import build_parser
from tracklm.errors import InputError
from tracklm.presets import load_preset, preset_names
from tracklm.train.config import PretrainConfig, load_pretrain_config, preset_config

FIELDS = {f.name for f in dataclasses.fields(PretrainConfig)}


PRESET_MODELS = {
    "tiny": "tiny", "small": "small", "paper": "paper", "paper-cpu": "paper",
    "trackml-pixel": "paper", "trackml-pixel-small": "small",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRESET_MODELS))
def test_each_preset_loads_by_name_and_sets_only_its_own_keys(name):
    keys = load_preset("pretrain", name)
    assert keys["model"] == PRESET_MODELS[name] and set(keys) <= FIELDS
    config = preset_config(name)
    assert config == load_pretrain_config(name)
    for key, value in config_lib.to_dict(config).items():
        # a key the file leaves out keeps the dataclass default
        expected = keys.get(key, config_lib.to_dict(PretrainConfig())[key])
        assert value == expected, key


def test_the_command_line_offers_exactly_the_shipped_presets():
    parser = build_parser()
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    (preset,) = [a for a in verbs.choices["pretrain"]._actions if a.dest == "preset"]
    assert preset.choices is not None
    assert set(preset.choices) == set(preset_names("pretrain")) == set(PRESET_MODELS)


def test_unknown_preset_is_a_one_line_input_error():
    with pytest.raises(InputError) as error:
        load_pretrain_config("huge")
    message = str(error.value)
    assert (
        message
        == "--preset: unknown pretrain preset 'huge' (choose from paper, paper-cpu, small, tiny, "
        "trackml-pixel, trackml-pixel-small)"
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("preset", "base"), [("trackml-pixel", "paper-cpu"), ("trackml-pixel-small", "small")]
)
def test_a_shipped_models_preset_is_its_recipe(preset, base):
    # The shipped model was made with `--preset BASE --inputs geometry --config C`, where C
    # sets the per-track pair head and in-batch pairs (its model card): the preset is the same
    # recipe in one name.
    made_with = config_lib.merge(
        preset_config(base),
        {
            "model_overrides": {
                **preset_config(base).model_overrides,
                "pair_head": "difference",
                "inputs": "geometry",
            },
            "pair_in_batch_weight": 1.0,
        },
    )
    assert preset_config(preset) == made_with


def test_the_mask_schedule_is_built_once_from_the_config():
    config = preset_config("tiny")
    assert config.mask_schedule is config.mask_schedule
    assert config.mask_schedule.rates == config.mask_rates == (0.15, 0.30, 0.50)
    assert config.mask_schedule.boundaries == config.mask_rate_steps == (100, 200)
    assert config.val_mask_schedule.rates == (config.val_mask_rate,)
    assert config.val_mask_schedule.boundaries == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mask_rates = (0.5,)  # frozen: the schedule cannot go stale


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
    assert config.mask_schedule.rate_at(60) == 0.4
    # nested mappings merge: the file's model field joins the preset's
    assert config.model_overrides == {**preset_config("small").model_overrides, "num_layers": 3}
    # every key the file and the options leave alone keeps the preset's value
    small = config_lib.to_dict(preset_config("small"))
    changed = {"lr", "mask_rates", "mask_rate_steps", "model_overrides", "max_steps"}
    resolved = config_lib.to_dict(config)
    assert {key: resolved[key] for key in small if key not in changed} == {
        key: value for key, value in small.items() if key not in changed
    }


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


def test_loss_weights_reweight_the_training_loss_and_are_checked():
    import torch

    from tracklm.models.heads import TrackingBertOutput
    from tracklm.train.module import PretrainModule

    mlm, pair, position = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(0.25)
    out = TrackingBertOutput(
        loss=mlm + pair + position, mlm_loss=mlm, pair_loss=pair, mlm_logits=torch.zeros(1),
        pair_logits=torch.zeros(1), hidden_states=None, position_loss=position,
    )  # fmt: skip
    config = dataclasses.replace(preset_config("tiny"), mlm_loss_weight=0.5, pair_loss_weight=4.0)
    module = PretrainModule(torch.nn.Linear(1, 1), config, seed=0)  # type: ignore[arg-type]
    assert float(module._weighted_loss(out)) == pytest.approx(0.5 * 2.0 + 4.0 * 0.5 + 0.25)
    plain = PretrainModule(torch.nn.Linear(1, 1), preset_config("tiny"), seed=0)  # type: ignore[arg-type]
    assert plain._weighted_loss(out) is out.loss
    with pytest.raises(InputError, match="not both 0"):
        dataclasses.replace(config, mlm_loss_weight=0.0, pair_loss_weight=0.0)
    with pytest.raises(InputError, match="must be >= 0"):
        dataclasses.replace(config, pair_loss_weight=-1.0)
