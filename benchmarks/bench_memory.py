"""Peak memory of training against dataset size: splits are memory-mapped, so RSS stays ~flat.

For each size, a synthetic prepared dataset of that many training tracks (paper-sized vocabulary
of 4,000 modules, tracks of 4 to 8 hits, 1,000 tracks per event) is written with ``SplitWriter``;
then a short ``run_pretrain`` (tiny preset) runs in a child process. The peak resident set size
is read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh intermediate process
whose only child is the training run (``RUSAGE_CHILDREN`` keeps the maximum over all children
ever waited for, so each measurement needs its own parent). The peer is the same measurement for
a process that only imports the training code: the fixed cost of torch and Lightning.

What does grow with the dataset: the per-track scalars the pair sampler keeps in memory
(event id and pT, 12 bytes per track) and one epoch of pair indices (about 20 bytes per track),
plus the pages of the memory-mapped token array that the run touched (counted in RSS while
mapped, but reclaimable page cache, not allocations).

Usage::

    .venv/bin/python benchmarks/bench_memory.py --sizes 10000 100000 1000000 [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import SplitWriter, TrackArrays
from tracklm.manifest import write_manifest

N_LAYERS = 4
MODULES_PER_LAYER = 1000
MAX_HITS = 8
TRACKS_PER_EVENT = 1000
CHUNK_TRACKS = 200_000

# Runs in the intermediate process: starts the measured command, waits, reports its peak RSS.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode != 0:
    sys.stderr.write(done.stderr[-4000:])
    sys.exit(done.returncode)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"peak_rss_mib": peak_kib / 1024, "seconds": time.perf_counter() - start}))
"""

_TRAIN = """
import sys, torch
from tracklm.runtime import configure_torch
configure_torch()
torch.set_num_threads(1)
from tracklm.train.pretrain import run_pretrain
run_pretrain(sys.argv[1], sys.argv[2], preset="tiny", max_steps=int(sys.argv[3]),
             batch_size=int(sys.argv[4]), accelerator="cpu")
"""

_IMPORT_ONLY = """
import torch
torch.set_num_threads(1)
import tracklm.train.pretrain
"""


def _random_tracks(
    vocab: ModuleVocab, n: int, first_track: int, rng: np.random.Generator
) -> TrackArrays:
    lengths = rng.integers(4, MAX_HITS + 1, n).astype(np.int32)
    layer = np.arange(MAX_HITS)[None, :] % N_LAYERS
    module = rng.integers(0, MODULES_PER_LAYER, (n, MAX_HITS))
    real = np.arange(MAX_HITS)[None, :] < lengths[:, None]
    tokens = vocab.num_special + layer * MODULES_PER_LAYER + module
    tokens = np.where(real, tokens, vocab.pad_id).astype(np.int32)
    index = first_track + np.arange(n)
    return TrackArrays(
        tokens=tokens,
        lengths=lengths,
        hits=np.where(real[..., None], rng.normal(0, 100, (n, MAX_HITS, 3)), 0).astype(np.float32),
        pt=rng.exponential(1.0, n).astype(np.float32),
        eta=rng.uniform(-2, 2, n).astype(np.float32),
        phi=rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        charge=rng.choice(np.array([-1, 1], np.int8), n),
        vertex=np.zeros((n, 3), np.float32),
        event_id=(index // TRACKS_PER_EVENT).astype(np.int64),
        particle_id=(index + 1).astype(np.int64),
    )


def write_random_dataset(path: str | os.PathLike[str], n_train: int, seed: int = 0) -> Path:
    """A prepared dataset with ``n_train`` random training tracks (and 2,000 val, 2,000 test).

    Token sequences have no structure (nothing to learn): only the sizes matter here.
    """
    root = Path(path)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    layers, modules = np.meshgrid(np.arange(N_LAYERS), np.arange(MODULES_PER_LAYER), indexing="ij")
    triples = np.stack([np.full(layers.size, 8), 2 * (layers.ravel() + 1), modules.ravel() + 1], 1)
    vocab = ModuleVocab(triples)
    vocab.save(root / "vocab.json")
    pd.DataFrame(
        {
            "token": np.arange(vocab.num_special, len(vocab), dtype=np.int32),
            "volume_id": triples[:, 0].astype(np.int32),
            "layer_id": triples[:, 1].astype(np.int32),
            "module_id": triples[:, 2].astype(np.int32),
            "cx": np.zeros(len(triples)),
            "cy": np.zeros(len(triples)),
            "cz": np.zeros(len(triples)),
        }
    ).to_parquet(root / "modules.parquet")
    sizes = {"train": n_train, "val": 2 * TRACKS_PER_EVENT, "test": 2 * TRACKS_PER_EVENT}
    first = 0
    events: dict[str, list[int]] = {}
    for name, size in sizes.items():
        with SplitWriter(root / name, MAX_HITS) as writer:
            for start in range(0, size, CHUNK_TRACKS):
                count = min(CHUNK_TRACKS, size - start)
                writer.append(_random_tracks(vocab, count, first + start, rng))
        ids = np.arange(first, first + size) // TRACKS_PER_EVENT
        events[name] = [int(e) for e in np.unique(ids)]
        # next split starts on a fresh event
        first = (int(ids[-1]) + 1) * TRACKS_PER_EVENT
    write_manifest(
        root,
        "prepare",
        n_tracks=sizes,
        events=events,
        selection="random",
        order="none",
        vocab_sha256=vocab.sha256,
        inputs={"synthetic": {"n_train": n_train, "seed": seed}},
        config={},
    )
    return root


def peak_rss(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Peak RSS (MiB) and wall seconds of ``command`` run as the only child of a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _directory_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def benchmark_memory(
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000),
    steps: int = 20,
    batch_size: int = 64,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Peak RSS of a short training run for datasets of ``sizes`` training tracks.

    Parameters
    ----------
    sizes : training tracks of each dataset.
    steps : optimiser steps of each run (tiny preset, one thread, no DataLoader workers).
    batch_size : pairs per step.
    workdir : where the datasets are written (a temporary directory if None; removed after).

    Returns
    -------
    Per size: dataset MiB on disk, peak RSS MiB and seconds; the import-only peak RSS; the ratio
    of the largest run's peak RSS to the smallest's.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        baseline = peak_rss([sys.executable, "-c", _IMPORT_ONLY], env)
        runs = []
        for n in sizes:
            started = time.perf_counter()
            data = write_random_dataset(root / f"data_{n}", n)
            write_seconds = time.perf_counter() - started
            measured = peak_rss(
                [sys.executable, "-c", _TRAIN, str(data), str(root / f"run_{n}"), str(steps),
                 str(batch_size)],
                env,
            )  # fmt: skip
            runs.append(
                {
                    "train_tracks": n,
                    "dataset_mib": _directory_mib(data),
                    "write_seconds": write_seconds,
                    "peak_rss_mib": measured["peak_rss_mib"],
                    "run_seconds": measured["seconds"],
                }
            )
    return {
        "steps": steps,
        "batch_size": batch_size,
        "import_only_peak_rss_mib": baseline["peak_rss_mib"],
        "runs": runs,
        "rss_ratio_largest_to_smallest": runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"],
        "dataset_ratio_largest_to_smallest": runs[-1]["dataset_mib"] / runs[0]["dataset_mib"],
        "rss_growth_mib_per_million_tracks": (
            (runs[-1]["peak_rss_mib"] - runs[0]["peak_rss_mib"])
            / max(runs[-1]["train_tracks"] - runs[0]["train_tracks"], 1)
            * 1e6
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workdir", default=None, help="where to write the datasets (default: temp)"
    )
    args = parser.parse_args()
    result = benchmark_memory(tuple(args.sizes), args.steps, args.batch_size, args.workdir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
