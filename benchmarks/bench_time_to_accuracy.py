"""Time to accuracy: wall-clock seconds of pre-training to reach validation masked-module accuracies.

Pre-trains a preset on a prepared dataset (demo-like: a few simulated PU200 events) for a fixed
wall-clock budget through the library's ``tracklm.train.pretrain.train`` (the function behind
``tracklm pretrain``), with one extra callback that writes the elapsed training wall time into the
run's CSV log (``RUN/logs/version_0/metrics.csv``, column ``time/wall_seconds``) next to Lightning's
``val/masked_accuracy`` rows. The curve (accuracy against seconds) is read back from that CSV and
written as PNG + JSON.

The peer is the frequency baseline of ``tracklm evaluate`` (most frequent module given the
neighbouring visible modules, counted on the train split), scored on the same validation tracks
with one hidden hit per track: the time to beat it, and the final accuracy over it, are the
figures of merit.

Usage::

    .venv/bin/python benchmarks/bench_time_to_accuracy.py --data DATA --out RUN [--minutes 2.5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from tracklm.evaluate.baselines import FrequencyBaseline
from tracklm.io.dataset import open_dataset
from tracklm.train.config import load_pretrain_config
from tracklm.train.pretrain import train

WALL_COLUMN = "time/wall_seconds"
ACCURACY_COLUMN = "val/masked_accuracy"
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


class WallClockLog(pl.Callback):
    """Logs, at every validation, the training wall time so far into the run's loggers.

    The time of a validation is taken when it starts, minus the time spent in earlier
    validations: the seconds of training it took to reach the model being validated.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.validating_since = 0.0
        self.validation_seconds = 0.0
        self.training_seconds = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validating_since = time.perf_counter()
        if self.started is not None:
            self.training_seconds = self.validating_since - self.started - self.validation_seconds

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is None or trainer.sanity_checking:
            return
        self.validation_seconds += time.perf_counter() - self.validating_since
        for logger in trainer.loggers:
            logger.log_metrics({WALL_COLUMN: self.training_seconds}, step=trainer.global_step)


def read_curve(metrics_csv: str | os.PathLike[str]) -> list[dict[str, float]]:
    """(step, seconds, accuracy) of every validation in a run's ``metrics.csv``.

    Lightning writes each validation's metrics (at its own step count, one below the trainer's
    during training) and then our wall-clock entry (at the trainer's optimiser step) as separate
    rows; the n-th of one kind belongs to the n-th of the other. The final validation after
    training repeats the last model and is kept once.
    """
    accuracy: list[float] = []
    walls: list[tuple[int, float]] = []
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(ACCURACY_COLUMN):
                accuracy.append(float(row[ACCURACY_COLUMN]))
            if row.get(WALL_COLUMN):
                walls.append((int(float(row["step"])), float(row[WALL_COLUMN])))
    curve: list[dict[str, float]] = []
    for value, (step, wall) in zip(accuracy, walls):
        if curve and step <= curve[-1]["step"]:
            continue
        curve.append({"step": step, "seconds": wall, "masked_accuracy": value})
    return curve


def time_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """Seconds of the first validation at or above ``target`` accuracy (None if never)."""
    for point in curve:
        if point["masked_accuracy"] >= target:
            return point["seconds"]
    return None


def frequency_baseline_accuracy(data: str | os.PathLike[str], seed: int = 0) -> float:
    """Accuracy of the frequency baseline on the val split, one random hidden hit per track."""
    dataset = open_dataset(data)
    train_split, val = dataset.split("train"), dataset.split("val").take(slice(None))
    baseline = FrequencyBaseline(np.asarray(train_split.tokens), np.asarray(train_split.lengths))
    rng = np.random.default_rng(seed)
    lengths = val.lengths.astype(np.int64)
    hidden = (rng.random(len(val)) * lengths).astype(np.int64)
    real = np.arange(val.max_length)[None, :] < lengths[:, None]
    visible = real & (np.arange(val.max_length)[None, :] != hidden[:, None])
    tokens = val.tokens.astype(np.int64)
    ranked = baseline.predict(tokens, visible, hidden, val.hits)
    return float(np.mean(ranked[:, 0] == tokens[np.arange(len(val)), hidden]))


def plot_curve(curve: list[dict[str, float]], baseline: float, title: str) -> Any:
    """Validation masked accuracy against training wall time; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [p["seconds"] for p in curve],
        [p["masked_accuracy"] for p in curve],
        "o-",
        label="TrackingBERT",
    )
    ax.axhline(baseline, color="grey", linestyle="--", label="frequency baseline")
    ax.set_xlabel("training wall time [s]")
    ax.set_ylabel("validation masked-module accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def benchmark_time_to_accuracy(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    preset: str = "small",
    minutes: float = 2.5,
    val_every: int = 50,
    batch_size: int | None = None,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    threads: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train for ``minutes`` and report the accuracy curve and the times to reach ``thresholds``.

    Parameters
    ----------
    data : prepared dataset (train and val splits).
    out : run directory (must not exist or be empty); the curve goes to ``out/time_to_accuracy.{png,json}``.
    preset : pre-training preset; its settings are kept except validation frequency and early stopping.
    minutes : wall-clock budget of training.
    val_every : optimiser steps between validations (points of the curve).
    batch_size : pairs per batch (None: the preset's).
    thresholds : validation masked accuracies to time.
    threads : torch threads.
    seed : run seed.
    """
    torch.set_num_threads(threads)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=False)
    overrides: dict[str, Any] = {
        "val_every": val_every,
        "val_batches": 4,
        "early_stopping_patience": None,
        "checkpoint_every": 10**9,
        "num_workers": 0,
    }
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    config = load_pretrain_config(preset, None, overrides)
    dataset = open_dataset(data)
    train(
        dataset,
        run,
        config,
        seed=seed,
        max_time=minutes,
        trainer_options={"accelerator": "cpu", "devices": 1},
        callbacks=[WallClockLog()],
    )
    metrics_csv = run / "logs" / "version_0" / "metrics.csv"
    curve = read_curve(metrics_csv)
    baseline = frequency_baseline_accuracy(data, seed)
    final = curve[-1]["masked_accuracy"] if curve else float("nan")
    result: dict[str, Any] = {
        "preset": preset,
        "batch_size": config.batch_size,
        "minutes": minutes,
        "threads": threads,
        "train_tracks": int(
            json.loads((Path(data) / "manifest.json").read_text())["n_tracks"]["train"]
        ),
        "metrics_csv": str(metrics_csv),
        "curve": curve,
        "seconds_to_accuracy": {f"{t:.2f}": time_to_reach(curve, t) for t in thresholds},
        "final_masked_accuracy": final,
        "final_step": curve[-1]["step"] if curve else 0,
        "frequency_baseline_accuracy": baseline,
        "seconds_to_beat_baseline": time_to_reach(curve, baseline + 1e-9),
        "accuracy_over_baseline": final / baseline if baseline > 0 else float("nan"),
    }
    fig = plot_curve(
        curve, baseline, f"{preset} preset, batch {config.batch_size}, {threads} threads"
    )
    fig.savefig(run / "time_to_accuracy.png", dpi=120)
    (run / "time_to_accuracy.json").write_text(json.dumps(result, indent=2))
    result["png"] = str(run / "time_to_accuracy.png")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="new run directory")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = benchmark_time_to_accuracy(
        args.data, args.out, args.preset, args.minutes, args.val_every, args.batch_size,
        threads=args.threads,
    )  # fmt: skip
    print(json.dumps({key: value for key, value in result.items() if key != "curve"}, indent=2))


if __name__ == "__main__":
    main()
