"""Pre-training end to end: learning, resume, interruption, refusals, time limit, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from tests.reference.chains import make_synthetic_dataset
from tracklm.data.prepare import run_prepare
from tracklm.errors import InputError
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert
from tracklm.train import pretrain
from tracklm.train.pretrain import run_pretrain

# Lightning 2.6 + torch 2.13: Lightning's CombinedLoader builds a torch pytree LeafSpec, which torch
# now flags with a FutureWarning attributed to lightning (pyproject filters FutureWarning from torch.*
# only).
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

SHORT_RUN = """\
model_overrides: {dropout: 0.1, attention_dropout: 0.1}
batch_size: 16
max_steps: 12
warmup_steps: 2
mask_rate_steps: [4, 8]
val_every: 4
val_batches: 2
checkpoint_every: 4
early_stopping_patience: 50
"""


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One thread per process in this module (the conftest fixture)."""


@pytest.fixture(scope="module")
def data(toy_data) -> Path:
    return toy_data


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> Path:
    """Learnable module chains (tests/reference/chains.py): 64 modules, 2,000 tracks."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("chains"), n_events=40, tracks_per_event=50, seed=0
    )


@pytest.fixture
def short_config(tmp_path) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT_RUN)
    return path


def train_losses(run: Path, version: int) -> dict[int, float]:
    with open(run / "logs" / f"version_{version}" / "metrics.csv") as handle:
        return {
            int(row["step"]): float(row["train/loss"])
            for row in csv.DictReader(handle)
            if row["train/loss"]
        }


class CrashAt(Callback):
    """Simulates a killed run: an error after optimiser step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_tiny_preset_learns_masked_modules_and_pair_order(chains, tmp_path):
    data = chains
    config = tmp_path / "fit.yaml"
    config.write_text("model_overrides: {dropout: 0.0, attention_dropout: 0.0}\nlr: 0.01\nmax_steps: 500\n"
                      "mask_rate_steps: [250, 400]\nval_every: 100\n")  # fmt: skip
    run = run_pretrain(data, tmp_path / "run", preset="tiny", config=config, accelerator="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 500 and metrics["stopped_by"] == "max_steps"
    # chance is 1/64 modules (1/8 within the right layer); pT order follows track length
    assert metrics["val"]["masked_accuracy"] > 0.6
    assert metrics["val"]["pair_accuracy"] > 0.8
    model = TrackingBert.from_pretrained(run / "model")
    model.check_vocab(open_dataset(data).vocab)
    assert model.config.max_length == 2 * 8 + 3
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "pretrain" and manifest["metrics"]["val"] == metrics["val"]
    assert "model/model.safetensors" in manifest["files"]
    assert manifest["config"]["max_steps"] == 500
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "masked_accuracy" in (run / "model" / "README.md").read_text()


def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(
    data, tmp_path, short_config, monkeypatch
):
    straight = run_pretrain(data, tmp_path / "straight", config=short_config, accelerator="cpu")

    original = pretrain.train
    monkeypatch.setattr(
        pretrain, "train", lambda *a, **k: original(*a, **{**k, "callbacks": [CrashAt(7)]})
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pretrain(data, tmp_path / "resumed", config=short_config, accelerator="cpu")
    monkeypatch.undo()
    resumed = tmp_path / "resumed"
    assert not (resumed / "model").exists()  # no half-written model
    checkpoint = torch.load(
        resumed / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu"
    )
    assert checkpoint["global_step"] == 4  # lost at most one checkpoint interval (steps 5-7)

    run_pretrain(data, resumed, resume=True, accelerator="cpu")
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 12
    weights, again = (
        load_file(straight / "model" / "model.safetensors"),
        load_file(resumed / "model" / "model.safetensors"),
    )
    for name, tensor in weights.items():
        torch.testing.assert_close(again[name], tensor, rtol=1e-5, atol=1e-6)
    losses, resumed_losses = train_losses(straight, 0), train_losses(resumed, 1)
    assert sorted(resumed_losses) == list(range(4, 12))
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(losses[step], rel=1e-5)
    # and the resumed run can be extended
    run_pretrain(data, resumed, resume=True, max_steps=14, accelerator="cpu")
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 14


def test_refuses_existing_output_other_vocabulary_and_unknown_keys(
    data, toy_events, tmp_path, short_config
):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"--out.*occupied.*--resume"):
        run_pretrain(data, occupied, config=short_config, accelerator="cpu")

    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 16\nwarmup: 3\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*'warmup'"):
        run_pretrain(data, tmp_path / "new", config=bad, accelerator="cpu")
    assert not (tmp_path / "new").exists()

    with pytest.raises(InputError, match=r"--resume.*run\.json"):
        run_pretrain(data, tmp_path / "nothing", resume=True, accelerator="cpu")

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"vocab_sha256": open_dataset(data).vocab.sha256, "seed": 0, "config": {}})
    )
    # the same events prepared over every volume: a larger vocabulary
    other = tmp_path / "other"
    run_prepare(toy_events, other, selection="all-min4", val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(
        InputError, match=r"vocab\.json: vocabulary sha256 .* differs from the run's"
    ):
        run_pretrain(other, run, resume=True, accelerator="cpu")


def test_a_refused_new_run_leaves_no_directory(data, tmp_path, short_config):
    overrides = tmp_path / "heads.yaml"
    overrides.write_text("model_overrides: {num_heads: 3}\n")  # 3 does not divide the width
    with pytest.raises(InputError, match=r"heads\.yaml: model_overrides: .*not divisible"):
        run_pretrain(data, tmp_path / "a", config=overrides, accelerator="cpu")
    # found once the trainer and the data are set up, after the run directory was made
    with pytest.raises(InputError, match=r"--batch-size"):
        run_pretrain(data, tmp_path / "b", config=short_config, batch_size=10**6, accelerator="cpu")
    with pytest.raises(InputError, match=r"--accelerator abacus, .*: Lightning refused them"):
        run_pretrain(data, tmp_path / "c", config=short_config, accelerator="abacus")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.yaml", "short.yaml"]


def test_max_time_stops_training_and_still_writes_the_model(data, tmp_path, short_config):
    run = run_pretrain(data, tmp_path / "run", config=short_config, max_time=0.0, accelerator="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_by"] == "max_time" and metrics["step"] < 12
    assert TrackingBert.from_pretrained(run / "model").config.vocab_size == len(
        open_dataset(data).vocab
    )


def test_single_track_mode_trains_without_pair_task(data, tmp_path, short_config):
    config = tmp_path / "single.yaml"
    config.write_text(
        SHORT_RUN.replace("max_steps: 12", "max_steps: 4") + "pairing: single\npair_task: none\n"
    )
    run = run_pretrain(data, tmp_path / "run", config=config, accelerator="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    assert "pair_accuracy" not in metrics["val"] and metrics["step"] == 4
    assert TrackingBert.from_pretrained(run / "model").config.max_length == 8 + 2


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains(data, tmp_path, short_config):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "tracklm", "pretrain", "--data", str(data), "--out", str(run),
        "--config", str(short_config), "--max-steps", "8", "--devices", "2", "--strategy", "ddp",
        "--accelerator", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 8 and metrics["train"]["devices"] == 2
    assert metrics["train"]["pairs_seen"] == 8 * 16 * 2
    assert 0.0 <= metrics["val"]["masked_accuracy"] <= 1.0
    TrackingBert.from_pretrained(run / "model")


@pytest.mark.slow
def test_two_process_ddp_fits_one_schedule_to_max_time(data, tmp_path):
    """Rank 0 times the steps and fits the schedule; the rank Lightning starts reads it from
    run.json, and both take rank 0's re-fits, so both run the same steps (different ones would
    hang or fail the collective)."""
    run = tmp_path / "ddp-time"
    config = tmp_path / "no-max-steps.yaml"
    config.write_text(
        SHORT_RUN.replace("max_steps: 12\n", "").replace("val_every: 4", "val_every: 20")
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "tracklm", "pretrain", "--data", str(data), "--out", str(run),
        "--config", str(config), "--max-time", "0.1", "--devices", "2", "--strategy",
        "ddp", "--accelerator", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    fitted = record["schedule_fitted"]
    # rank 0 re-fits on the way and every rank follows (run.json holds the last schedule)
    final = (fitted.get("refits") or [fitted])[-1]["max_steps"]
    assert fitted["to"] == "max_time" and record["config"]["max_steps"] == final
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["step"] <= final and metrics["train"]["devices"] == 2
    assert metrics["train"]["pairs_seen"] == metrics["step"] * 16 * 2


def test_in_batch_pair_loss_trains_and_is_refused_without_a_difference_head(data, tmp_path):
    config = tmp_path / "in-batch.yaml"
    config.write_text(
        SHORT_RUN.replace("{dropout: 0.1,", "{pair_head: difference, dropout: 0.1,")
        + "pair_in_batch_weight: 0.5\n"
    )
    run = run_pretrain(data, tmp_path / "run", preset="tiny", config=config, accelerator="cpu")
    with open(run / "logs" / "version_0" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/pair_in_batch_loss")]
    assert rows and all(float(row["train/pair_in_batch_loss"]) > 0 for row in rows)
    # an untrained head scores every track about alike: the loss starts at ln 2
    assert float(rows[0]["train/pair_in_batch_loss"]) == pytest.approx(0.693, abs=0.05)
    cls = tmp_path / "cls.yaml"
    cls.write_text(SHORT_RUN + "pair_in_batch_weight: 0.5\n")
    with pytest.raises(InputError, match=r"cls\.yaml.*pair_head: difference"):
        run_pretrain(data, tmp_path / "refused", preset="tiny", config=cls, accelerator="cpu")
    assert not (tmp_path / "refused").exists()
    swap = tmp_path / "swap.yaml"
    swap.write_text(SHORT_RUN + "pair_task: swap\npair_in_batch_weight: 0.5\n")
    with pytest.raises(InputError, match="pair_task: pt"):
        run_pretrain(data, tmp_path / "swap", preset="tiny", config=swap, accelerator="cpu")
