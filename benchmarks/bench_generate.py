"""Generation speed: tracks completed per second by a causal model, with the key/value cache and
without it (the peer: the whole sequence encoded again at each step, as a masked model must).

Both complete the same tracks from the same seeds greedily, in batches, in one process on the
same threads; the two are interleaved round by round so the machine's drift hits them alike, and
the median round gives each one's tracks per second. They must also choose the same tracks (the
cache changes how the model computes, not what).

Usage::

    python benchmarks/bench_generate.py --data demo/data [--model RUN/model] [--preset small] \\
        [--seed-hits 3] [--tracks 8192] [--rounds 3] [--threads 2] [--out bench_generate.json]

Without ``--model``, a freshly initialised ``--preset`` model (its tracks run to the longest
length, the slowest case); with one, a trained ``next-module`` model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracklm.detector.vocab import ModuleVocab
from tracklm.generate.decode import DecodeOptions, complete
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.runtime import configure_torch


@torch.no_grad()
def complete_without_cache(
    model: TrackingBert, vocab: ModuleVocab, seeds: np.ndarray, max_hits: int, batch_size: int
) -> np.ndarray:
    """Greedy completion encoding ``[CLS] track`` afresh at every step; (N, max_hits) tokens."""
    out = np.zeros((len(seeds), max_hits), dtype=np.int64)
    special = [i for i in range(vocab.num_special) if i != vocab.sep_id]
    for first in range(0, len(seeds), batch_size):
        block = torch.as_tensor(seeds[first : first + batch_size])
        b, k = block.shape
        seq = torch.cat([torch.full((b, 1), vocab.cls_id), block], dim=1)
        alive = torch.ones(b, dtype=torch.bool)
        for n in range(k, max_hits + 1):
            rows = alive.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            # [CLS] h_0 .. h_{n-1} [MASK]: position n + 1 is predicted from position n
            padded = torch.cat([seq[rows], torch.full((rows.numel(), 1), vocab.mask_id)], dim=1)
            at = torch.stack([torch.arange(rows.numel()), torch.full_like(rows, n + 1)], dim=1)
            logits = model.masked_heads(padded, None, None, at).mlm_logits
            logits[:, special] = -torch.inf
            logits.scatter_(1, seq[rows, 1:], -torch.inf)
            if n == max_hits:
                break
            choice = logits.max(dim=1).indices
            ends = choice == vocab.sep_id
            grow = rows[~ends]
            column = torch.zeros(b, dtype=torch.long)
            column[grow] = choice[~ends]
            seq = torch.cat([seq, column[:, None]], dim=1)
            alive[rows[ends]] = False
        out[first : first + b, : seq.shape[1] - 1] = seq[:, 1:].numpy()
    return out


def benchmark_generate(
    data: Path,
    model: Path | None = None,
    preset: str = "small",
    seed_hits: int = 3,
    tracks: int = 8192,
    batch_size: int = 4096,
    rounds: int = 3,
    threads: int = 2,
) -> dict[str, Any]:
    """Tracks per second with and without the cache (module docstring); the result as JSON data."""
    configure_torch()
    torch.set_num_threads(threads)
    dataset = open_dataset(data)
    split = dataset.split("test")
    n = min(tracks, len(split))
    seeds = np.array(split.tokens[:n, :seed_hits], dtype=np.int64)
    max_hits = split.max_length
    if model is not None:
        net = TrackingBert.from_pretrained(model)
    else:
        torch.manual_seed(0)
        config = TrackingBertConfig.preset(
            preset, vocab_size=len(dataset.vocab), objective="next-module"
        )
        net = TrackingBert(config).eval()
    options = DecodeOptions(max_hits=max_hits, batch_size=batch_size)
    timings: dict[str, list[float]] = {"cache": [], "no_cache": []}
    for _ in range(rounds):
        start = time.perf_counter()
        cached = complete(net, dataset.vocab, seeds, np.full(n, seed_hits), None, options)
        timings["cache"].append(time.perf_counter() - start)
        start = time.perf_counter()
        plain = complete_without_cache(net, dataset.vocab, seeds, max_hits, batch_size)
        timings["no_cache"].append(time.perf_counter() - start)
    speed = {name: n / statistics.median(times) for name, times in timings.items()}
    return {
        "model": str(model) if model else f"{preset} (untrained)",
        "tracks": n,
        "seed_hits": seed_hits,
        "threads": threads,
        "mean_length": float(cached.lengths.mean()),
        "tracks_per_second": speed,
        "cache_over_no_cache": speed["cache"] / speed["no_cache"],
        "same_tracks": float(np.mean(np.all(cached.tokens == plain, axis=1))),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed-hits", type=int, default=3)
    parser.add_argument("--tracks", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = benchmark_generate(
        args.data, args.model, args.preset, args.seed_hits, args.tracks, args.batch_size,
        args.rounds, args.threads,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
