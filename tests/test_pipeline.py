"""The verbs chained as a user runs them, each reading the previous verb's output.

simulate -> prepare -> pretrain -> evaluate -> embed -> finetune -> export, through
``tracklm.cli.main`` (the console script's entry point), on a few low pile-up events.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.cli import main
from tracklm.io.dataset import open_dataset
from tracklm.manifest import file_hashes
from tracklm.models.bert import TrackingBert

# Lightning 2.6 + torch 2.13: Lightning builds a torch pytree LeafSpec, which torch now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


def tracklm(*args: object) -> None:
    status = main([str(a) for a in args])
    assert status == 0, args


def manifest_of(directory: Path, stage: str) -> dict:
    """The stage's manifest, after checking it names the stage and hashes the files beside it."""
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["stage"] == stage
    assert manifest["files"] == file_hashes(directory), f"{directory}: stale manifest hashes"
    return manifest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One thread per process in this module (the conftest fixture)."""


@pytest.mark.slow  # about 30 s on one core
def test_every_verb_reads_the_previous_verbs_output(tmp_path):
    events, data, run = tmp_path / "events", tmp_path / "data", tmp_path / "run"

    tracklm("simulate", "--out", events, "--events", 5, "--pileup", 2, "--seed", 3)
    assert manifest_of(events, "simulate")["config"]["seed"] == 3
    assert (events / "detectors.csv").is_file()

    tracklm("prepare", "--events", events, "--out", data, "--val-fraction", 0.2,
            "--test-fraction", 0.2)  # fmt: skip
    counts = manifest_of(data, "prepare")["n_tracks"]
    dataset = open_dataset(data)
    assert {split: len(dataset.split(split)) for split in counts} == counts
    assert min(counts.values()) > 0

    tracklm("pretrain", "--data", data, "--out", run, "--preset", "tiny", "--max-steps", 3,
            "--batch-size", 8, "--accelerator", "cpu")  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 3 and metrics["stopped_by"] == "max_steps"
    assert 0.0 <= metrics["val"]["masked_accuracy"] <= 1.0
    assert manifest_of(run, "pretrain")["metrics"]["val"] == metrics["val"]
    model = TrackingBert.from_pretrained(run / "model")
    model.check_vocab(dataset.vocab)

    report = tmp_path / "report"
    tracklm("evaluate", "--model", run / "model", "--data", data, "--out", report,
            "--max-tracks", 40)  # fmt: skip
    evaluated = json.loads((report / "metrics.json").read_text())
    assert manifest_of(report, "evaluate")
    assert (evaluated["protocol"], evaluated["split"]) == ("masked", "test")
    assert evaluated["n_tracks"] == min(40, counts["test"])
    assert 0.0 <= evaluated["masked_module"]["accuracy"] <= 1.0
    assert {"frequency", "sequence", "helix", "helix+frequency", "helix_hits"} == set(
        evaluated["baselines"]
    )
    assert "Protocol: masked" in (report / "report.md").read_text()

    table = tmp_path / "embedding.parquet"
    tracklm("embed", "--model", run / "model", "--out", table)
    embedding = pd.read_parquet(table)
    np.testing.assert_array_equal(
        embedding[["volume_id", "layer_id", "module_id"]].to_numpy(), dataset.vocab.modules
    )
    assert embedding.shape[1] == 6 + model.config.hidden_size
    assert 0.0 <= json.loads(table.with_suffix(".json").read_text())["neighbour_fraction"] <= 1.0

    tuned = tmp_path / "finetuned"
    tracklm("finetune", "--task", "pt", "--model", run / "model", "--data", data, "--out", tuned,
            "--max-steps", 2, "--train-size", 64)  # fmt: skip
    finetuned = json.loads((tuned / "metrics.json").read_text())
    assert manifest_of(tuned, "finetune")
    assert (finetuned["task"], finetuned["mode"], finetuned["train_size"]) == ("pt", "finetune", 64)
    assert finetuned["training"]["steps"] == 2
    assert {"pt_sigma68", "pt_std", "pt_bias", "charge_accuracy"} <= set(finetuned["metrics"])

    onnx_file = tmp_path / "model.onnx"
    tracklm("export", "--model", tuned / "model", "--out", onnx_file)
    assert onnx_file.stat().st_size > 10_000
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.load(str(onnx_file)))
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert "input_ids" in {i.name for i in session.get_inputs()}
