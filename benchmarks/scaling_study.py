"""Scaling study: test masked accuracy and validation loss against training tracks and parameters.

Trains each model preset (``tiny``, ``small``, ``paper``) on the first N training events of a
prepared dataset, for several N, each run for the same wall-clock minutes on this machine (equal
compute per point; ``tracklm pretrain --max-time`` fits the recipe's schedule to them), then
evaluates every model on the same held-out test tracks with ``tracklm evaluate`` (masked
protocol, baselines counted on the full train split). The recipe is one pretrain preset
(default ``paper-cpu``) with its ``model`` swapped for each architecture.

Output::

    OUT/data-N/            the dataset with its train split cut to N events (val, test, vocabulary
                           linked to the full dataset)
    OUT/runs/PRESET-N/     each run (config, logs, model, metrics) and its report (``report/``)
    OUT/scaling.json       one record per run: preset, parameters, train_events, train_tracks,
                           train_seconds, steps, test_accuracy, val_loss, the baselines, and
                           cpu_steal (the share of CPU time a virtual machine's hypervisor took
                           during the training, from /proc/stat; null off Linux)
    OUT/scaling.md         the table
    OUT/scaling.png        test accuracy and validation loss against training tracks and against
                           parameters, the baselines as horizontal lines

Usage::

    tracklm simulate --out EV --events 60 && tracklm prepare --events EV --out DATA
    .venv/bin/python benchmarks/scaling_study.py --data DATA --out OUT \\
        --events 3,12,48 --presets tiny,small,paper --minutes 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tracklm.evaluate.report import run_evaluate
from tracklm.io.dataset import TrackArrays, open_dataset
from tracklm.models import TrackingBert
from tracklm.train.pretrain import run_pretrain

log = logging.getLogger(__name__)

BASELINES = ("frequency", "sequence", "helix+frequency")


def cut_dataset(data: Path, out: Path, events: int) -> tuple[Path, int]:
    """``out``: ``data`` with its train split cut to its first ``events`` events; returns the
    directory and its number of training tracks. Val, test and the vocabulary are linked."""
    source = open_dataset(data)
    train = source.split("train", mmap=True)
    event_ids = np.unique(np.asarray(train.event_id))
    if events > len(event_ids):
        raise SystemExit(
            f"--events: {events} exceeds the {len(event_ids)} training events of {data}"
        )
    keep = np.isin(np.asarray(train.event_id), event_ids[:events])
    if out.exists():
        shutil.rmtree(out)
    (out / "train").mkdir(parents=True)
    for name in TrackArrays.DTYPES:
        np.save(out / "train" / f"{name}.npy", np.asarray(getattr(train, name))[keep])
    for entry in source.path.iterdir():
        if entry.name != "train":
            (out / entry.name).symlink_to(entry.resolve())
    manifest = json.loads((source.path / "manifest.json").read_text())
    (out / "manifest.json").unlink()
    manifest["n_tracks"]["train"] = int(keep.sum())
    manifest["events"]["train"] = [int(e) for e in event_ids[:events]]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out, int(keep.sum())


def cpu_times() -> tuple[int, int] | None:
    """(all, stolen) CPU clock ticks since boot from Linux's ``/proc/stat``; None elsewhere.

    On a virtual machine the hypervisor may run other guests on this machine's cores ("steal"),
    so equal wall-clock minutes are equal compute only where the stolen share is alike."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in fields[1:]]
    return sum(ticks[:8]), (ticks[7] if len(ticks) > 7 else 0)  # guest time is in user already


def steal_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor took between two ``cpu_times`` readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round((after[1] - before[1]) / (after[0] - before[0]), 3)


def run_point(
    data: Path, full: Path, run: Path, preset: str, recipe: str, minutes: float, seed: int,
    max_tracks: int,
) -> dict[str, Any]:  # fmt: skip
    """Train ``preset`` with ``recipe`` for ``minutes`` on ``data``; evaluate on the test split."""
    config = run.parent / f"{run.name}.yaml"
    config.write_text(yaml.safe_dump({"model": preset}))
    if run.exists():
        shutil.rmtree(run)
    started, ticks = time.perf_counter(), cpu_times()
    run_pretrain(data, run, preset=recipe, config=config, max_time=minutes, seed=seed)
    seconds, stolen = time.perf_counter() - started, steal_fraction(ticks, cpu_times())
    metrics = json.loads((run / "metrics.json").read_text())
    report = run_evaluate(
        run / "model", data, run / "report", max_tracks=max_tracks, seed=seed, baseline_data=full
    )
    model = TrackingBert.from_pretrained(run / "model")
    baselines = report.get("baselines", {})
    return {
        "preset": preset,
        "recipe": recipe,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "cpu_steal": stolen,
        "steps": metrics["step"],
        "test_accuracy": report["masked_module"]["accuracy"],
        "val_loss": metrics["val"]["loss"],
        "val_masked_accuracy": metrics["val"]["masked_accuracy"],
        "pair_accuracy": report.get("pair_pt", {}).get("accuracy"),
        "baselines": {name: baselines[name]["accuracy"] for name in BASELINES if name in baselines},
    }


def plot(records: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    presets = sorted({r["preset"] for r in records}, key=lambda p: min(
        r["parameters"] for r in records if r["preset"] == p))  # fmt: skip
    sizes = sorted({r["train_tracks"] for r in records})
    for preset in presets:
        rows = sorted(
            (r for r in records if r["preset"] == preset), key=lambda r: r["train_tracks"]
        )
        x = [r["train_tracks"] for r in rows]
        axes[0, 0].plot(x, [r["test_accuracy"] for r in rows], "o-", label=preset)
        axes[1, 0].plot(x, [r["val_loss"] for r in rows], "o-", label=preset)
    for size in sizes:
        rows = sorted(
            (r for r in records if r["train_tracks"] == size), key=lambda r: r["parameters"]
        )
        x = [r["parameters"] for r in rows]
        axes[0, 1].plot(x, [r["test_accuracy"] for r in rows], "o-", label=f"{size:,} tracks")
        axes[1, 1].plot(x, [r["val_loss"] for r in rows], "o-", label=f"{size:,} tracks")
    largest = max(records, key=lambda r: r["train_tracks"])
    for (name, value), style in zip(largest["baselines"].items(), ("--", "-.", ":"), strict=False):
        for ax in axes[0]:
            ax.axhline(value, ls=style, lw=1, color="grey", label=f"{name} baseline")
    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test masked accuracy (one hidden hit)")
    axes[1, 0].set_ylabel("validation loss")
    axes[1, 0].set_xlabel("training tracks")
    axes[1, 1].set_xlabel("parameters")
    fig.suptitle(f"Scaling at equal compute ({records[0]['minutes']} min per run)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| preset | parameters | train events | train tracks | steps | test accuracy | val loss "
        "| pair accuracy | CPU stolen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        pair = "-" if r["pair_accuracy"] is None else f"{r['pair_accuracy']:.3f}"
        stolen = "-" if r.get("cpu_steal") is None else f"{100 * r['cpu_steal']:.0f}%"
        lines.append(
            f"| {r['preset']} | {r['parameters']:,} | {r['train_events']} | {r['train_tracks']:,} "
            f"| {r['steps']:,} | {r['test_accuracy']:.3f} | {r['val_loss']:.3f} | {pair} | {stolen} |"
        )
    largest = max(records, key=lambda r: r["train_tracks"])
    baselines = ", ".join(f"{k} {v:.3f}" for k, v in largest["baselines"].items())
    lines.append("")
    lines.append(
        f"Baselines on the same test tracks (counted on the full train split): {baselines}."
    )
    return "\n".join(lines) + "\n"


def study(
    data: Path, out: Path, events: list[int], presets: list[str], recipe: str = "paper-cpu",
    minutes: float = 3.0, max_tracks: int = 2000, seed: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Train and evaluate every preset on every cut of ``data``; writes ``OUT/scaling.json``
    (after each run, so an interrupted study keeps its points), ``scaling.md`` and
    ``scaling.png``, and returns the records."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    result = out / "scaling.json"
    for count in events:
        cut, tracks = cut_dataset(data, out / f"data-{count}", count)
        for preset in presets:
            log.info("scaling: %s on %d events (%d tracks), %.1f min", preset, count, tracks,
                     minutes)  # fmt: skip
            record = run_point(cut, data, out / "runs" / f"{preset}-{count}", preset, recipe,
                               minutes, seed, max_tracks)  # fmt: skip
            record.update(train_events=count, train_tracks=tracks, minutes=minutes)
            records.append(record)
            result.write_text(json.dumps(records, indent=1))
    write_outputs(records, out)
    return records


def write_outputs(records: list[dict[str, Any]], out: Path) -> None:
    """``OUT/scaling.md`` and ``OUT/scaling.png`` from the records."""
    (out / "scaling.md").write_text(table(records))
    plot(records, out / "scaling.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="prepared dataset (full)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--events", default="3,12,48", help="training events per point")
    parser.add_argument("--presets", default="tiny,small,paper", help="model presets")
    parser.add_argument("--recipe", default="paper-cpu", help="pretrain preset (schedule fitted)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes per run")
    parser.add_argument("--max-tracks", type=int, default=2000, help="test tracks evaluated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replot", action="store_true", help="redraw OUT's table and plot from its scaling.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.replot:
        records = json.loads((args.out / "scaling.json").read_text())
    elif args.data is None:
        parser.error("--data is needed unless --replot is given")
    else:
        records = study(
            args.data, args.out, [int(e) for e in args.events.split(",")],
            args.presets.split(","), args.recipe, args.minutes, args.max_tracks, args.seed,
        )  # fmt: skip
    write_outputs(records, args.out)
    print(table(records))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
