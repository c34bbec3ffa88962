"""Fine-tuning end to end on a toy dataset with a tiny model; transfer modes; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tracklm import config as config_lib
from tracklm.cli import main
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert
from tracklm.presets import load_preset, preset_names
from tracklm.tasks.common import TaskContext
from tracklm.tasks.config import load_finetune_config
from tracklm.tasks.finetune import (
    TASKS,
    TRACK_TASKS,
    FinetuneConfig,
    finetune,
    load_encoder,
    load_finetuned,
    predict_examples,
    run_finetune,
)

# Lightning 2.6 with torch 2.13 warns about a torch pytree API from inside Lightning (not our code).
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
FAST = FinetuneConfig(batch_size=64, max_steps=4, val_every=2, warmup_steps=1, val_tracks=100,
                      eval_tracks=200, eval_batch_size=256, accelerator="cpu")  # fmt: skip
METRIC_KEYS = {
    "holes": {
        "auc",
        "efficiency_at_fpr_1pct",
        "efficiency_at_fpr_5pct",
        "position_accuracy",
        "module_accuracy",
    },
    "outliers": {"auc", "efficiency_at_fpr_1pct", "efficiency_at_fpr_5pct", "position_accuracy"},
    "extrapolate": {"next1_accuracy", "next1_top5_accuracy", "next2_accuracy"},
    "pt": {"pt_sigma68", "pt_std", "pt_bias", "pt_q68_abs", "pt_spearman", "charge_accuracy"},
}
BASELINE_NAMES = {"holes": {"helix"}, "outliers": {"helix"}, "extrapolate": {"helix"},
                  "pt": {"circle", "circle_hits", "lookup", "regression"}}  # fmt: skip


def _check_pt_metrics(block: dict, n_examples: int) -> None:
    """pT metrics that exist and make sense: widths positive, bias above -1 (pT > 0), fractions."""
    assert block["n_tracks"] == n_examples > 0
    for key in ("pt_sigma68", "pt_std", "pt_sigma68_above_1gev", "pt_q68_abs"):
        assert block[key] is not None and 0 < block[key] < 1e3, key
    assert block["pt_q68_abs_above_1gev"] is not None and 0 < block["pt_q68_abs_above_1gev"] < 1e3
    for key in ("pt_bias", "pt_bias_above_1gev"):
        assert block[key] is not None and -1 < block[key] < 1e3, key
    # A barely trained head may predict one pT for every track: no rank correlation (null).
    assert block["pt_spearman"] is None or -1 <= block["pt_spearman"] <= 1
    assert 0 <= block["charge_accuracy"] <= 1


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("task", TRACK_TASKS)
def test_task_runs_end_to_end_and_writes_schema_valid_metrics(task, toy_data, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = finetune(task, tiny_model, toy_data, out, FAST, train_size=300, seed=1)
    written = json.loads((out / "metrics.json").read_text())
    assert written == result
    assert {"task", "mode", "train_size", "metrics", "baseline", "baselines", "zero_shot"} <= set(
        written
    )
    # Every baseline by name; ``baseline`` stays the task's first one.
    assert set(written["baselines"]) == BASELINE_NAMES[task]
    assert written["baseline"] == written["baselines"][TASKS[task].baseline_name]
    assert (written["task"], written["mode"], written["train_size"]) == (task, "finetune", 300)
    assert written["n_train_tracks"] == 300
    assert written["training"]["steps"] == 4
    sections = [written["metrics"], *written["baselines"].values()]
    sections += [written["zero_shot"]] if task != "pt" else []
    for section in sections:
        assert METRIC_KEYS[task] <= set(section)
        if task == "pt":
            _check_pt_metrics(section, written["n_test_examples"])
        else:
            for value in section.values():
                assert value is None or value >= 0
    if task == "pt":
        assert written["zero_shot"] is None
        # the helix baseline measures pT from module centres: coarse, but far from random
        assert written["baseline"]["pt_sigma68"] < 0.5
        assert written["baseline"]["charge_accuracy"] > 0.6
        # the same circle through the measured hits: close to the truth on simulated tracks
        circle_hits = written["baselines"]["circle_hits"]
        assert abs(circle_hits["pt_bias"]) < 0.05 and circle_hits["pt_q68_abs"] < 0.3
        assert circle_hits["pt_spearman"] > 0.8 and circle_hits["charge_accuracy"] > 0.9
    for name in ("config.json", "model.safetensors", "vocab.json", "head.safetensors", "head.json"):
        assert (out / "model" / name).is_file()
    assert json.loads((out / "model" / "head.json").read_text())["task"] == task
    assert (out / "manifest.json").is_file()

    # The saved model reloads and reproduces the reported test metrics.
    spec, encoder, head = load_finetuned(out / "model")
    dataset = open_dataset(toy_data)
    context = TaskContext.from_dataset(dataset)
    rng = np.random.default_rng(1)
    from tracklm.tasks.finetune import sample_tracks, trim_inputs

    for split, n in (("train", 300), ("val", FAST.val_tracks), ("test", FAST.eval_tracks)):
        examples = trim_inputs(
            spec.make_examples(sample_tracks(dataset, split, n, rng), context, rng)
        )
    again = spec.metrics(predict_examples(spec, encoder, head, examples, 256), examples, context)
    for key in METRIC_KEYS[task]:
        assert again[key] == pytest.approx(written["metrics"][key], nan_ok=True, abs=1e-6)


def test_frozen_keeps_the_encoder_and_finetune_changes_it(toy_data, tiny_model, tmp_path):
    pretrained = _weights(tiny_model)
    finetune("pt", tiny_model, toy_data, tmp_path / "frozen", FAST, mode="frozen")
    frozen = _weights(tmp_path / "frozen" / "model")
    assert all(torch.equal(frozen[k], pretrained[k]) for k in pretrained)
    finetune("pt", tiny_model, toy_data, tmp_path / "tuned", FAST, mode="finetune")
    tuned = _weights(tmp_path / "tuned" / "model")
    assert not torch.equal(tuned["embeddings.token.weight"], pretrained["embeddings.token.weight"])
    assert any(
        not torch.equal(tuned[k], pretrained[k]) for k in pretrained if k.startswith("blocks.")
    )


def test_scratch_starts_from_random_weights_of_the_same_architecture(tiny_model):
    pretrained = TrackingBert.from_pretrained(tiny_model)
    fresh = load_encoder(tiny_model, "scratch", seed=5)
    assert fresh.config == pretrained.config
    assert fresh.vocab == pretrained.vocab
    before, after = pretrained.state_dict(), fresh.state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(
        before["blocks.0.attention.qkv.weight"], after["blocks.0.attention.qkv.weight"]
    )
    again = load_encoder(tiny_model, "scratch", seed=5)
    assert torch.equal(
        again.state_dict()["blocks.0.attention.qkv.weight"], after["blocks.0.attention.qkv.weight"]
    )


def test_vocabulary_mismatch_is_refused(toy_data, tiny_model, tmp_path):
    other = tmp_path / "other_data"
    shutil.copytree(toy_data, other)
    vocab = ModuleVocab.load(toy_data / "vocab.json")
    ModuleVocab(vocab.modules[:-1]).save(other / "vocab.json")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.pop("vocab_sha256")
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="vocab"):
        finetune("holes", tiny_model, other, tmp_path / "run", FAST)
    assert not (tmp_path / "run").exists()


def test_bad_options_are_refused(toy_data, tiny_model, tmp_path):
    with pytest.raises(InputError, match="--task"):
        finetune("tracking", tiny_model, toy_data, tmp_path / "a", FAST)
    with pytest.raises(InputError, match="--mode"):
        finetune("pt", tiny_model, toy_data, tmp_path / "b", FAST, mode="partial")


def test_baselines_find_what_the_toy_geometry_allows(pixel_toy_data):
    """Helix baselines on module centres: holes are easy, outliers and pT are coarse but informative."""
    dataset = open_dataset(pixel_toy_data)
    context = TaskContext.from_dataset(dataset)
    tracks = dataset.split("test").take(slice(None))
    scores = {}
    for name in ("holes", "outliers", "extrapolate", "pt"):
        spec = TASKS[name]
        examples = spec.make_examples(tracks, context, np.random.default_rng(0))
        scores[name] = spec.metrics(spec.baseline(examples, context), examples, context)
    assert scores["holes"]["auc"] > 0.95 and scores["holes"]["position_accuracy"] > 0.95
    assert scores["outliers"]["auc"] > 0.6
    assert scores["extrapolate"]["next1_top5_accuracy"] > 0.3
    assert scores["pt"]["charge_accuracy"] > 0.65


def test_circle_hits_measures_exact_helices(pixel_toy_data):
    """The circle through the beam line and the exact hits gives the tracks' pT and charge."""
    dataset = open_dataset(pixel_toy_data)
    context = TaskContext.from_dataset(dataset)
    tracks = dataset.split("test").take(slice(None))
    spec = TASKS["pt"]
    examples = spec.make_examples(tracks, context, np.random.default_rng(0))
    predicted = spec.extra_baselines["circle_hits"](examples, context)
    truth = examples.labels["pt_gev"]
    np.testing.assert_allclose(predicted["pt_gev"], truth, rtol=0.02)
    charge = np.where(examples.labels["charge_positive"] > 0.5, 1, -1)
    np.testing.assert_array_equal(predicted["charge"], charge)
    hits = spec.metrics(predicted, examples, context)
    centres = spec.metrics(spec.baseline(examples, context), examples, context)
    assert hits["pt_q68_abs"] < 0.01 and hits["pt_spearman"] > 0.99
    assert hits["pt_q68_abs"] < centres["pt_q68_abs"]


def test_transfer_study_preset_sets_only_what_differs_from_the_defaults():
    assert "transfer_study" in preset_names("tasks")
    keys = load_preset("tasks", "transfer_study")
    study = config_lib.from_dict(FinetuneConfig, keys)
    assert study.max_steps == 300
    defaults = config_lib.to_dict(FinetuneConfig())
    assert all(defaults[key] != value for key, value in keys.items() if key != "batch_size")


def test_config_file_overrides_the_defaults_and_refuses_unknown_keys(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("max_steps: 7\nlearning_rate: 3.0e-4\n")
    assert load_finetune_config(good) == FinetuneConfig(max_steps=7, learning_rate=3e-4)
    assert load_finetune_config(None) == FinetuneConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 7\nlearnig_rate: 3.0e-4\n")
    with pytest.raises(InputError, match=r"bad\.yaml: unknown key 'learnig_rate'"):
        load_finetune_config(bad)
    zero = tmp_path / "zero.yaml"
    zero.write_text("batch_size: 0\n")
    with pytest.raises(InputError, match=r"zero\.yaml: batch_size: must be at least 1"):
        load_finetune_config(zero)


def test_cli_config_with_an_unknown_key_exits_2_naming_file_and_key(
    toy_data, tiny_model, tmp_path, capsys
):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 3\n")
    argv = ["finetune", "--task", "pt", "--model", str(tiny_model), "--data", str(toy_data),
            "--out", str(tmp_path / "run"), "--config", str(bad)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(bad) in err[0] and "'max_step'" in err[0]
    assert not (tmp_path / "run").exists()


def test_verb_reads_its_config_file(toy_data, tiny_model, tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump(config_lib.to_dict(FAST)))
    result = run_finetune("pt", tiny_model, toy_data, tmp_path / "run", max_steps=2, config=config)
    assert result["training"]["steps"] == 2
    assert result["n_test_examples"] <= FAST.eval_tracks
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"] == config_lib.to_dict(FAST)
