"""Time to accuracy: wall-clock seconds of pre-training to reach validation masked-module accuracies.

Pre-trains a preset on a prepared dataset (demo-like: a few simulated PU200 events) with
``tracklm pretrain --preset small --max-time MINUTES`` (``tracklm.train.pretrain.run_pretrain``):
the demo's short-budget recipe (batch 128, learning rate 2e-3, no dropout) with the chosen model
architecture, its schedule fitted to the pace measured first, with validations every
``--val-every`` steps for the points of the curve. Every run logs ``time/train_seconds`` (the
training time that reached the validated model) beside ``val/masked_accuracy`` in its CSV log;
the curve (accuracy against seconds) is read back from it and written as PNG + JSON.

The peers are the baselines of ``tracklm evaluate`` (``frequency``: most frequent module given the
neighbouring visible modules, counted on the train split; ``sequence``: the most frequent module
at the hidden place among training tracks with the same visible modules, else ``frequency``'s;
``helix``: a helix through the visible
modules' centres crossed with the hidden hit's layer; ``helix+frequency``: the frequency
candidates re-ranked by the helix), scored on the validation tracks with one random hidden hit per
track. Validation hides module tokens at random (15% mask rate, at least one per track), every
one of them behind ``[MASK]``, so the two accuracies measure the same task on the same tracks but
not the same hidden hits. The time to beat each baseline, and the final accuracy over the
frequency baseline, are the figures of merit. Runs made before validation hid every module
(2026-12-03) validated with BERT's masks, a tenth of the answers left in place: their curves read
about 2 points high (``trackml-pixel-small``: 78.9% against 76.8% honest, same batches).

Usage::

    .venv/bin/python benchmarks/bench_time_to_accuracy.py --data DATA --out RUN [--minutes 2.5]
    .venv/bin/python benchmarks/bench_time_to_accuracy.py --from-run RUN

The second form reads the curve of any finished ``tracklm pretrain`` run (any recipe), e.g.
``--preset paper-cpu --max-time 60``: times to beat each baseline and to reach 75% and 80%
validation accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tracklm.config import from_dict
from tracklm.data.masking import IGNORE_INDEX
from tracklm.evaluate.baselines import (
    FrequencyBaseline,
    HelixBaseline,
    HelixFrequencyBaseline,
    SequenceBaseline,
)
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert
from tracklm.train.config import PretrainConfig
from tracklm.train.module import PretrainData, forward_batch
from tracklm.train.pretrain import run_pretrain

log = logging.getLogger(__name__)

RUN_WALL_COLUMN = "time/train_seconds"  # logged by every run at each validation
ACCURACY_COLUMN = "val/masked_accuracy"
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def read_run_curve(metrics_csv: str | os.PathLike[str]) -> list[dict[str, float]]:
    """(step, seconds, accuracy, loss) of every validation of a ``tracklm pretrain`` run, from
    the ``time/train_seconds`` each validation logs beside its metrics (validations excluded
    from the time); the final validation after training repeats the last model and is dropped."""
    curve: list[dict[str, float]] = []
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if not (row.get(ACCURACY_COLUMN) and row.get(RUN_WALL_COLUMN)):
                continue
            step = int(float(row["step"]))
            if curve and step <= curve[-1]["step"]:
                continue
            point = {"step": step, "seconds": float(row[RUN_WALL_COLUMN]),
                     "masked_accuracy": float(row[ACCURACY_COLUMN])}  # fmt: skip
            for name in ("val/loss", "val/pair_accuracy"):
                if row.get(name):
                    point[name.removeprefix("val/")] = float(row[name])
            curve.append(point)
    return curve


def curve_of_run(
    run: str | os.PathLike[str], thresholds: tuple[float, ...] = (0.75, 0.80), seed: int = 0
) -> dict[str, Any]:
    """The time-to-accuracy record of a finished ``tracklm pretrain`` run (any recipe): its
    validation curve against training seconds, the baselines on its dataset's val split, and
    the seconds to beat each baseline and to reach each of ``thresholds``; written with the
    plot to ``RUN/time_to_accuracy.{json,png}``."""
    run = Path(run)
    record = json.loads((run / "run.json").read_text())
    data = Path(record["data"])
    if not data.is_absolute() and not data.exists():
        data = run.parent / data
    curve = read_run_curve(run / "logs" / "version_0" / "metrics.csv")
    baselines = baseline_accuracies(data, seed)
    best = max(baselines, key=baselines.__getitem__)
    config = record["config"]
    result: dict[str, Any] = {
        "run": str(run),
        "model": config["model"],
        "batch_size": config["batch_size"],
        "lr": config["lr"],
        "warmup_steps": config["warmup_steps"],
        "max_steps": config["max_steps"],
        "schedule_fitted": record.get("schedule_fitted"),
        "threads": torch.get_num_threads(),
        "curve": curve,
        "baseline_accuracies": baselines,
        "best_baseline": best,
        "seconds_to_beat": {
            name: time_to_reach(curve, value + 1e-9) for name, value in baselines.items()
        },
        "seconds_to_accuracy": {f"{t:.2f}": time_to_reach(curve, t) for t in thresholds},
        "final_masked_accuracy": curve[-1]["masked_accuracy"] if curve else float("nan"),
        "final_step": curve[-1]["step"] if curve else 0,
        "final_validation": final_validation(run, data),
    }
    fig = plot_curve(
        curve, baselines, f"{config['model']} ({run.name}), batch {config['batch_size']}"
    )
    fig.savefig(run / "time_to_accuracy.png", dpi=120)
    (run / "time_to_accuracy.json").write_text(json.dumps(result, indent=2))
    return result


def final_validation(run: Path, data: Path) -> dict[str, float]:
    """Masked accuracy of a run's final model on the run's own validation batches (the same
    pairs and positions), asked two ways: ``hidden``, every asked module behind ``[MASK]`` (the
    validation ``tracklm pretrain`` logs), and ``bert_masks``, BERT's 80/10/10 with a tenth of
    the answers left in place (what runs logged before validation hid every module). Their
    difference is how far an older run's curve reads high. {} for a run without validation and
    for a ``next-module`` run (it masks nothing)."""
    model = TrackingBert.from_pretrained(run / "model").eval()
    assert model.vocab is not None  # set by from_pretrained
    if model.config.causal:
        return {}
    record = json.loads((run / "run.json").read_text())
    config = from_dict(PretrainConfig, record["config"], where=str(run / "run.json"))
    batches = PretrainData(
        data, model.vocab, config, seed=record["seed"], hits=model.config.reads_hits
    )
    batches.setup("validate")
    if batches.val_batches is None or batches.n_val_batches == 0:
        return {}
    accuracies: dict[str, float] = {}
    for name, hidden in (("hidden", True), ("bert_masks", False)):
        batches.val_batches.hidden_masks = hidden
        right = asked = 0
        with torch.no_grad():
            for index in range(batches.n_val_batches):
                batch = batches.val_batches[index]
                labels = batch["labels"]
                targets = labels[labels != IGNORE_INDEX]
                predicted = forward_batch(model, batch).mlm_logits.argmax(dim=-1)
                right += int((predicted == targets).sum())
                asked += int(targets.numel())
        accuracies[name] = right / asked if asked else float("nan")
    return accuracies


def time_to_reach(curve: list[dict[str, float]], target: float) -> float | None:
    """Seconds of the first validation at or above ``target`` accuracy (None if never)."""
    for point in curve:
        if point["masked_accuracy"] >= target:
            return point["seconds"]
    return None


def baseline_accuracies(data: str | os.PathLike[str], seed: int = 0) -> dict[str, float]:
    """Top-1 accuracy of the evaluation's baselines on the val split, one random hidden hit per track.

    Returns ``frequency`` always, and ``helix`` and ``helix+frequency`` where the dataset has the
    module geometry they need (datasets written by ``tracklm prepare`` do).
    """
    dataset = open_dataset(data)
    train_split, val = dataset.split("train"), dataset.split("val").take(slice(None))
    rng = np.random.default_rng(seed)
    lengths = val.lengths.astype(np.int64)
    hidden = (rng.random(len(val)) * lengths).astype(np.int64)
    real = np.arange(val.max_length)[None, :] < lengths[:, None]
    visible = real & (np.arange(val.max_length)[None, :] != hidden[:, None])
    tokens = val.tokens.astype(np.int64)
    truth = tokens[np.arange(len(val)), hidden]
    train_tokens, train_lengths = np.asarray(train_split.tokens), np.asarray(train_split.lengths)
    frequency = FrequencyBaseline(train_tokens, train_lengths)
    baselines: dict[str, Any] = {
        "frequency": frequency,
        "sequence": SequenceBaseline(train_tokens, train_lengths, frequency),
    }
    try:
        from tracklm.detector.layers import TokenLayers

        surfaces = TokenLayers.from_modules(dataset.modules, len(dataset.vocab))
        helix = HelixBaseline(surfaces, train_tokens, train_lengths, dataset.module_centres,
                              use_hits=False, bounds=dataset.frames())  # fmt: skip
        baselines["helix"] = helix
        baselines["helix+frequency"] = HelixFrequencyBaseline(frequency, helix)
    except Exception as exc:  # e.g. a synthetic dataset without module geometry
        log.info("helix baselines skipped: %s", exc)
    accuracies = {}
    for name, baseline in baselines.items():
        try:
            ranked = baseline.predict(tokens, visible, hidden, val.hits)
        except Exception as exc:
            log.info("baseline %s skipped: %s", name, exc)
            continue
        accuracies[name] = float(np.mean(ranked[:, 0] == truth))
    return accuracies


def plot_curve(curve: list[dict[str, float]], baselines: dict[str, float], title: str) -> Any:
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
    for (name, value), style in zip(baselines.items(), ("--", ":", "-.")):
        ax.axhline(value, color="grey", linestyle=style, label=f"{name} baseline")
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
    preset : model architecture (``tiny``, ``small``, ``paper``), trained with the ``small``
        pretrain preset's recipe (the demo's).
    minutes : wall-clock budget of training; the schedule is fitted to it (``--max-time``).
    val_every : optimiser steps between validations (points of the curve).
    batch_size : pairs per batch (None: the demo recipe's 128).
    thresholds : validation masked accuracies to time.
    threads : torch threads.
    seed : run seed.
    """
    torch.set_num_threads(threads)
    run = Path(out)
    settings: dict[str, Any] = {
        "model": preset,  # the architecture; the recipe is the small preset's (the demo's)
        "val_every": val_every,
        "val_batches": 4,
        "checkpoint_every": 10**9,
    }
    with tempfile.TemporaryDirectory() as scratch:
        recipe = Path(scratch) / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(settings))
        run_pretrain(
            data, run, preset="small", config=recipe, max_time=minutes, batch_size=batch_size,
            accelerator="cpu", seed=seed,
        )  # fmt: skip
    record = curve_of_run(run, thresholds, seed)
    baselines = record["baseline_accuracies"]
    baseline = baselines["frequency"]
    final = record["final_masked_accuracy"]
    result: dict[str, Any] = {
        **record,
        "preset": preset,
        "recipe": "the small preset (the demo's), schedule fitted to --max-time",
        "minutes": minutes,
        "threads": threads,
        "train_tracks": int(
            json.loads((Path(data) / "manifest.json").read_text())["n_tracks"]["train"]
        ),
        "metrics_csv": str(run / "logs" / "version_0" / "metrics.csv"),
        "frequency_baseline_accuracy": baseline,
        "seconds_to_beat_baseline": time_to_reach(record["curve"], baseline + 1e-9),
        "accuracy_over_baseline": final / baseline if baseline > 0 else float("nan"),
        "png": str(run / "time_to_accuracy.png"),
    }
    (run / "time_to_accuracy.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-run",
        default=None,
        help="read the curve of a finished `tracklm pretrain` run (any recipe) instead of training",
    )
    parser.add_argument("--data", help="prepared dataset directory")
    parser.add_argument("--out", help="new run directory")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.from_run is not None:
        torch.set_num_threads(args.threads)
        result = curve_of_run(args.from_run)
        print(json.dumps({key: value for key, value in result.items() if key != "curve"}, indent=2))
        return
    if args.data is None or args.out is None:
        parser.error("--data and --out are needed unless --from-run is given")
    result = benchmark_time_to_accuracy(
        args.data, args.out, args.preset, args.minutes, args.val_every, args.batch_size,
        threads=args.threads,
    )  # fmt: skip
    print(json.dumps({key: value for key, value in result.items() if key != "curve"}, indent=2))


if __name__ == "__main__":
    main()
