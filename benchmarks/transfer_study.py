"""Transfer study: how much does pre-training help each task, as a function of labelled data?

For every task, every transfer mode (finetune, frozen, scratch) and every training size, run
``tracklm finetune`` from one pre-trained model on one dataset, then write::

    OUT/transfer_study.json         every run's headline metric, timing and full metrics, and
                                    per task the references: ``baseline``, every classical
                                    baseline by name (``baselines``, e.g. pt's ``circle`` and
                                    ``circle_hits``) and ``zero_shot``
    OUT/transfer_<task>.png         data-efficiency curve: headline metric vs training tracks,
                                    one line per mode, each baseline and zero-shot as flat lines
    OUT/runs/<task>-<mode>-<size>/  each run's directory (metrics.json, model/, manifest.json)

The budget is fixed per run by ``--max-steps`` (default from the built-in ``tasks`` preset
``transfer_study``, ``src/tracklm/presets/tasks/transfer_study.yaml``: 300 steps of 256 tracks), so the whole study costs about tasks x modes x sizes runs of that size.
Training sizes larger than the ``train`` split are capped (and recorded as such); baselines and
zero-shot scores are computed once per task (they do not depend on the mode or training size).

Usage::

    python benchmarks/transfer_study.py --model RUN/model --data DATA --out STUDY \\
        [--tasks holes outliers extrapolate pt] [--sizes 1000 10000 100000] [--max-steps 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure

from tracklm import config as config_lib
from tracklm._fs import atomic_output_file, write_json
from tracklm.io.dataset import open_dataset
from tracklm.presets import load_preset
from tracklm.tasks.config import FinetuneConfig, load_finetune_config
from tracklm.tasks.finetune import MODES, TASKS, finetune

PRESET = "transfer_study"
logger = logging.getLogger("transfer_study")


def data_efficiency_figure(task: str, runs: list[dict], references: dict) -> Figure:
    """Headline metric against training tracks (log scale), one line per mode."""
    spec = TASKS[task]
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    ax = figure.subplots()
    for mode in MODES:
        points = sorted(
            (r["n_train_tracks"], r["headline"])
            for r in runs
            if r["task"] == task and r["mode"] == mode
        )
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=mode)
    flat = {
        name if name == "baseline" else f"baseline {name}": scores
        for name, scores in reference_baselines(references).items()
    }
    flat["zero-shot"] = references.get("zero_shot")
    styles = ["--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2))]
    for i, (label, scores) in enumerate(flat.items()):
        value = (scores or {}).get(spec.headline)
        if value is not None:
            style = ":" if label == "zero-shot" else styles[i % len(styles)]
            ax.axhline(value, linestyle=style, color="grey", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training tracks")
    better = "higher" if spec.higher_is_better else "lower"
    ax.set_ylabel(f"{spec.headline} ({better} is better)")
    ax.set_title(f"{task}: {spec.description}", fontsize=9)
    ax.legend()
    return figure


def reference_baselines(references: dict) -> dict[str, dict | None]:
    """A task's baselines by name (``baselines``), or its one ``baseline`` as ``baseline`` for
    results written before ``baselines`` existed."""
    return references.get("baselines") or {"baseline": references.get("baseline")}


def log_references(task: str, references: dict) -> None:
    """One line per task: the headline metric of each baseline and of the zero-shot model."""
    headline = TASKS[task].headline
    scores = {name: (m or {}).get(headline) for name, m in reference_baselines(references).items()}
    scores["zero_shot"] = (references.get("zero_shot") or {}).get(headline)
    logger.info("%-11s references, %s: %s", task, headline, scores)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="pre-trained model directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--out", type=Path, required=True, help="study directory (created)")
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[1000, 10000, 100000], help="training tracks"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="optimiser steps per run (default: config)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"FinetuneConfig YAML (default: the built-in tasks preset {PRESET!r})",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    if args.config is None:
        preset = load_preset("tasks", PRESET)
        settings = config_lib.from_dict(FinetuneConfig, preset, where=f"tasks preset {PRESET}")
    else:
        settings = load_finetune_config(args.config)
    if args.max_steps is not None:
        settings = config_lib.merge(settings, {"max_steps": args.max_steps})
    available = len(open_dataset(args.data).split("train"))
    sizes = sorted({min(size, available) for size in args.sizes})
    args.out.mkdir(parents=True, exist_ok=True)

    runs: list[dict] = []
    references: dict[str, dict] = {}
    started = time.perf_counter()
    for task in args.tasks:
        for mode in args.modes:
            for size in sizes:
                run_dir = args.out / "runs" / f"{task}-{mode}-{size}"
                first = task not in references
                t0 = time.perf_counter()
                result = finetune(
                    task, args.model, args.data, run_dir, settings, mode=mode, train_size=size,
                    seed=args.seed, references=first,
                )  # fmt: skip
                seconds = time.perf_counter() - t0
                if first:
                    references[task] = {
                        key: result.get(key) for key in ("baseline", "baselines", "zero_shot")
                    }
                    log_references(task, references[task])
                headline = result["metrics"].get(TASKS[task].headline)
                runs.append({
                    "task": task, "mode": mode, "train_size": size, "n_train_tracks": result["n_train_tracks"],
                    "headline_metric": TASKS[task].headline, "headline": headline,
                    "steps": result["training"]["steps"], "seconds": round(seconds, 1), "metrics": result["metrics"],
                })  # fmt: skip
                logger.info(
                    "%-11s %-8s %7d tracks: %s = %s (%.0f s)",
                    task,
                    mode,
                    size,
                    TASKS[task].headline,
                    headline,
                    seconds,
                )
    total = time.perf_counter() - started
    summary = {
        "model": str(args.model),
        "data": str(args.data),
        "sizes": sizes,
        "train_tracks_available": available,
        "config": config_lib.to_dict(settings),
        "seconds_total": round(total, 1),
        "runs": runs,
        "references": references,
    }
    write_json(args.out / "transfer_study.json", summary)
    for task in args.tasks:
        figure = data_efficiency_figure(task, runs, references[task])
        with atomic_output_file(args.out / f"transfer_{task}.png") as tmp:
            figure.savefig(tmp, format="png", dpi=120)
    logger.info("transfer study: %d runs in %.0f s -> %s", len(runs), total, args.out)
    print(json.dumps({"runs": len(runs), "seconds_total": round(total, 1), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
