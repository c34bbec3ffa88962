"""Fine-tuning end to end on a toy dataset with a tiny model; transfer modes; refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tracklm import config as config_lib
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert
from tracklm.tasks.common import TaskContext
from tracklm.tasks.finetune import (
    TASKS,
    FinetuneConfig,
    load_encoder,
    load_finetuned,
    predict_examples,
    run_finetune,
)

# Lightning 2.6 with torch 2.13 warns about a torch pytree API from inside Lightning (not our code).
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
REPO = Path(__file__).resolve().parents[2]
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
    "pt": {"pt_sigma68", "pt_std", "pt_bias", "charge_accuracy"},
}


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_runs_end_to_end_and_writes_schema_valid_metrics(task, toy_data, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = run_finetune(task, tiny_model, toy_data, out, train_size=300, seed=1, config=FAST)
    written = json.loads((out / "metrics.json").read_text())
    assert written == result
    assert {"task", "mode", "train_size", "metrics", "baseline", "zero_shot"} <= set(written)
    assert (written["task"], written["mode"], written["train_size"]) == (task, "finetune", 300)
    assert written["n_train_tracks"] == 300
    assert written["training"]["steps"] == 4
    for section in ("metrics", "baseline") + (("zero_shot",) if task != "pt" else ()):
        assert METRIC_KEYS[task] <= set(written[section]), section
        for value in written[section].values():
            assert value is None or value >= 0 or task == "pt"
    if task == "pt":
        assert written["zero_shot"] is None
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
    run_finetune("pt", tiny_model, toy_data, tmp_path / "frozen", mode="frozen", config=FAST)
    frozen = _weights(tmp_path / "frozen" / "model")
    assert all(torch.equal(frozen[k], pretrained[k]) for k in pretrained)
    run_finetune("pt", tiny_model, toy_data, tmp_path / "tuned", mode="finetune", config=FAST)
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
        run_finetune("holes", tiny_model, other, tmp_path / "run", config=FAST)
    assert not (tmp_path / "run").exists()


def test_bad_options_are_refused(toy_data, tiny_model, tmp_path):
    with pytest.raises(InputError, match="--task"):
        run_finetune("tracking", tiny_model, toy_data, tmp_path / "a", config=FAST)
    with pytest.raises(InputError, match="--mode"):
        run_finetune("pt", tiny_model, toy_data, tmp_path / "b", mode="partial", config=FAST)


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


def test_default_config_file_matches_the_dataclass():
    assert (
        config_lib.load_config(FinetuneConfig, REPO / "configs/tasks/default.yaml")
        == FinetuneConfig()
    )
    study = config_lib.load_config(FinetuneConfig, REPO / "configs/tasks/transfer_study.yaml")
    assert study.max_steps == 300
