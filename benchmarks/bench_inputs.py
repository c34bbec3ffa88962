"""Training speed of the three input modes (tokens, geometry, hits) against each other.

One step = building the batch from a prepared dataset (pairs, masking and, for ``hits``, the
laid-out positions with the hidden ones removed), forward, backward and the AdamW update, as
``tracklm pretrain`` does with ``num_workers: 0``. The modes run interleaved, step by step, in one
process on the same threads, so the machine's drift hits them alike; each mode's median step time
gives its pairs per second, and the ratios are against the ``tokens`` model (the paper's).

Usage::

    python benchmarks/bench_inputs.py --data demo/data --preset small --batch-size 128 \\
        --steps 60 --threads 2 [--out bench_inputs.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tracklm.data.batches import PairBatches
from tracklm.data.masking import MaskSchedule
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.config import INPUT_MODES
from tracklm.models.inputs import module_geometry_table
from tracklm.runtime import configure_torch
from tracklm.train.optim import build_optimizer


def build(data: Path, preset: str, mode: str, batch_size: int) -> tuple[TrackingBert, Any, Any]:
    """A fresh model of ``mode``, its optimiser and its batches (seed 0, mask rate 15%)."""
    dataset = open_dataset(data)
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        preset, vocab_size=len(dataset.vocab), inputs=mode, dropout=0.0, attention_dropout=0.0
    )
    model = TrackingBert(config)
    if config.reads_geometry:
        model.set_module_geometry(module_geometry_table(dataset.frames()))
    optimiser, _ = build_optimizer(
        model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=1, total_steps=10**6
    )
    batches = PairBatches(
        data / "train", dataset.vocab, batch_size=batch_size, seed=0, pairing="event",
        pair_task="pt", mask_schedule=MaskSchedule((0.15,), ()), hits=config.reads_hits,
    )  # fmt: skip
    return model.train(), optimiser, batches


def step(model: TrackingBert, optimiser: Any, batches: PairBatches, index: int) -> None:
    batch = batches[index]
    out = model(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
        labels=batch["labels"], pair_labels=batch.get("pair_labels"),
        hits=batch.get("hits"), hit_labels=batch.get("hit_labels"),
    )  # fmt: skip
    assert out.loss is not None
    optimiser.zero_grad(set_to_none=True)
    out.loss.backward()
    optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    args = parser.parse_args()
    configure_torch()
    torch.set_num_threads(args.threads)
    runs = {mode: build(args.data, args.preset, mode, args.batch_size) for mode in INPUT_MODES}
    times: dict[str, list[float]] = {mode: [] for mode in INPUT_MODES}
    for index in range(args.warmup + args.steps):
        for mode, (model, optimiser, batches) in runs.items():
            start = time.perf_counter()
            step(model, optimiser, batches, index)
            if index >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    median = {mode: statistics.median(t) for mode, t in times.items()}
    result = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps": args.steps,
        "pairs_per_second": {m: args.batch_size / s for m, s in median.items()},
        "speed_vs_tokens": {m: median["tokens"] / s for m, s in median.items()},
        "parameters": {m: runs[m][0].num_parameters() for m in INPUT_MODES},
    }
    for mode in INPUT_MODES:
        print(
            f"{mode:9s} {result['pairs_per_second'][mode]:8.0f} pairs/s  "
            f"{result['speed_vs_tokens'][mode]:.2f} x tokens  "
            f"{result['parameters'][mode]:,} parameters"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
