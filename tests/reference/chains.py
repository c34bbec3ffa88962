"""A prepared dataset of module chains a tiny model can learn in a few hundred steps.

The reference for "pre-training learns": simulated events (the ``toy_data`` fixture) have too
many modules for a tiny model to learn in a test's budget, these chains have 64.

The detector is 8 barrel layers of ``MODULES_PER_LAYER`` modules each (volume 8, layers 2..16).
A track starts on layer 1 at a random module ``m0`` and crosses module ``m0 + c * l`` (modulo the
layer size) on layer ``l`` with a "curvature" ``c`` in {-1, 0, +1}; it has 4 to 8 hits. So a
masked hit is determined by two other hits of its track. pT grows with the number of hits (as
soft tracks curl up before the outer layers): pT = 0.4 GeV x hits x a random factor in [0.95, 1.05],
so the pair label pT(B) > pT(A) follows the lengths of A and B except where they are equal.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import SplitWriter, TrackArrays
from tracklm.manifest import write_manifest

N_LAYERS = 8
MODULES_PER_LAYER = 8
MAX_HITS = 8
VOLUME = 8


def synthetic_vocab(modules_per_layer: int = MODULES_PER_LAYER) -> ModuleVocab:
    """Vocabulary of the synthetic detector: (8, 2*(l+1), m+1) for l < 8, m < ``modules_per_layer``."""
    layers, modules = np.meshgrid(np.arange(N_LAYERS), np.arange(modules_per_layer), indexing="ij")
    triples = np.stack(
        [np.full(layers.size, VOLUME), 2 * (layers.ravel() + 1), modules.ravel() + 1], axis=1
    )
    return ModuleVocab(triples)


def _module_centres(layer: np.ndarray, module: np.ndarray) -> np.ndarray:
    radius = 32.0 + 24.0 * layer
    phi = 2 * np.pi * (module + 0.5) / MODULES_PER_LAYER
    return np.stack([radius * np.cos(phi), radius * np.sin(phi), 10.0 * layer], axis=-1)


def synthetic_tracks(
    vocab: ModuleVocab, event_ids: np.ndarray, tracks_per_event: int, rng: np.random.Generator
) -> TrackArrays:
    """Tracks of the given events (``tracks_per_event`` each), following the module chains."""
    n = len(event_ids) * tracks_per_event
    start = rng.integers(0, MODULES_PER_LAYER, n)
    curvature = rng.integers(-1, 2, n)
    lengths = rng.integers(4, MAX_HITS + 1, n).astype(np.int32)
    layer = np.arange(MAX_HITS)[None, :].repeat(n, 0)
    module = (start[:, None] + curvature[:, None] * layer) % MODULES_PER_LAYER
    real = layer < lengths[:, None]
    tokens = vocab.encode(np.full(layer.shape, VOLUME), 2 * (layer + 1), module + 1)
    tokens = np.where(real, tokens, vocab.pad_id).astype(np.int32)
    hits = np.where(real[..., None], _module_centres(layer, module), 0.0).astype(np.float32)
    pt = 0.4 * lengths * np.exp(rng.uniform(np.log(0.95), np.log(1.05), n))
    return TrackArrays(
        tokens=tokens,
        lengths=lengths,
        hits=hits,
        pt=pt.astype(np.float32),
        eta=rng.uniform(-2, 2, n).astype(np.float32),
        phi=rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        charge=np.where(curvature < 0, -1, 1).astype(np.int8),
        vertex=np.zeros((n, 3), np.float32),
        event_id=np.repeat(np.asarray(event_ids, dtype=np.int64), tracks_per_event),
        particle_id=np.arange(n, dtype=np.int64) + 1,
    )


def make_synthetic_dataset(
    path: str | os.PathLike[str],
    n_events: int = 40,
    tracks_per_event: int = 50,
    seed: int = 0,
    *,
    extra_modules: int = 0,
) -> Path:
    """Write a prepared dataset directory (as ``tracklm prepare`` would) and return its path.

    Events are split 80/10/10 into train/val/test (at least one event each).

    Parameters
    ----------
    path : output directory (created).
    n_events : total number of events (at least 3).
    tracks_per_event : tracks in every event.
    seed : random seed.
    extra_modules : modules added to every layer that no track crosses (a different vocabulary).
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = synthetic_vocab(MODULES_PER_LAYER + extra_modules)
    vocab.save(root / "vocab.json")
    triples = vocab.modules
    centres = _module_centres(triples[:, 1] // 2 - 1, triples[:, 2] - 1)
    pd.DataFrame(
        {
            "token": np.arange(vocab.num_special, len(vocab), dtype=np.int32),
            "volume_id": triples[:, 0],
            "layer_id": triples[:, 1],
            "module_id": triples[:, 2],
            "cx": centres[:, 0],
            "cy": centres[:, 1],
            "cz": centres[:, 2],
        }
    ).to_parquet(root / "modules.parquet")
    n_val = max(1, n_events // 10)
    events = {
        "train": list(range(1000, 1000 + n_events - 2 * n_val)),
        "val": list(range(1000 + n_events - 2 * n_val, 1000 + n_events - n_val)),
        "test": list(range(1000 + n_events - n_val, 1000 + n_events)),
    }
    n_tracks = {}
    for name, ids in events.items():
        with SplitWriter(root / name, MAX_HITS) as writer:
            for event in ids:
                writer.append(synthetic_tracks(vocab, np.array([event]), tracks_per_event, rng))
            n_tracks[name] = writer.n_tracks
    write_manifest(
        root,
        "prepare",
        n_tracks=n_tracks,
        events=events,
        selection="synthetic-chains",
        order="distance",
        vocab_sha256=vocab.sha256,
        inputs={
            "synthetic": {"n_events": n_events, "tracks_per_event": tracks_per_event, "seed": seed}
        },
        config={},
    )
    return root
