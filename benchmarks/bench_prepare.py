"""Track extraction speed: tracklm's vectorized extraction against a per-particle pandas loop.

The reference is written the way research code usually does it (group the truth-matched hits by
particle, sort each group, look tokens up in a dict); both must give the same tracks, which is
asserted before any timing is reported. Optionally also times ``tracklm prepare`` end to end on a
directory of (simulated) events: tracks per second and peak memory.

Usage::

    .venv/bin/python benchmarks/bench_prepare.py --events ../shared/data/trackml/events \\
        --detector ../shared/data/trackml/detectors.csv --n-events 20 [--prepare /tmp/sim100]
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

from tracklm.data.prepare import resolve_detector
from tracklm.data.tracks import SELECTIONS, Selection, extract_tracks
from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import TrackArrays
from tracklm.io.trackml import list_events, read_event


def reference_tracks(
    hits: pd.DataFrame,
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    vocab: ModuleVocab,
    selection: Selection,
    event_id: int,
) -> TrackArrays:
    """Tracks the straightforward way: a Python loop over ``groupby("particle_id")``."""
    merged = truth[["hit_id", "particle_id"]].merge(hits, on="hit_id")
    merged = merged[merged["particle_id"] != 0]
    if selection.volumes is not None:
        merged = merged[merged["volume_id"].isin(selection.volumes)]
    token_of = {tuple(m): i + vocab.num_special for i, m in enumerate(vocab.modules.tolist())}
    by_particle = particles.set_index("particle_id")
    width = selection.max_hits
    out: dict[str, list[Any]] = {name: [] for name in TrackArrays.DTYPES}
    for particle_id, group in merged.groupby("particle_id"):
        if len(group) < selection.min_hits or (len(group) > width and not selection.truncate_long):
            continue
        xyz = group[["x", "y", "z"]].to_numpy(np.float64)
        group = group.assign(distance=np.sqrt((xyz**2).sum(axis=1)))
        group = group.sort_values(["distance", "hit_id"]).head(width)
        tokens = [
            token_of[(v, layer, m)]
            for v, layer, m in zip(group.volume_id, group.layer_id, group.module_id)
        ]
        padded = np.zeros(width, np.int32)
        padded[: len(tokens)] = tokens
        positions = np.zeros((width, 3), np.float32)
        positions[: len(tokens)] = group[["x", "y", "z"]].to_numpy()
        p = by_particle.loc[particle_id]
        pt = float(np.hypot(np.float64(p.px), np.float64(p.py)))
        out["tokens"].append(padded)
        out["lengths"].append(len(tokens))
        out["hits"].append(positions)
        out["pt"].append(pt)
        out["eta"].append(np.arcsinh(np.float64(p.pz) / pt))
        out["phi"].append(np.arctan2(np.float64(p.py), np.float64(p.px)))
        out["charge"].append(p.q)
        out["vertex"].append([p.vx, p.vy, p.vz])
        out["event_id"].append(event_id)
        out["particle_id"].append(particle_id)
    if not out["lengths"]:
        return TrackArrays.empty(width)
    return TrackArrays(
        **{
            name: np.asarray(values, dtype=dtype)
            for (name, values), dtype in zip(out.items(), TrackArrays.DTYPES.values())
        }
    )


def _time(function, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def benchmark_prepare(
    events_dir: str | os.PathLike[str],
    n_events: int,
    detector: str | None = None,
    selection: str = "pixel-4to8",
) -> dict[str, Any]:
    """Events per second of tracklm's extraction and of the reference loop, on in-memory events.

    The first ``n_events`` events of ``events_dir`` are used (cycled if there are fewer); reading
    is excluded from both timings and reported separately. Raises if the tracks differ.
    """
    events_dir = Path(events_dir)
    ids = list_events(events_dir)
    chosen = SELECTIONS[selection]
    geometry = resolve_detector(events_dir, detector)
    vocab = chosen.vocab(geometry)
    start = time.perf_counter()
    loaded = {event_id: read_event(events_dir, event_id) for event_id in ids[:n_events]}
    read_seconds = (time.perf_counter() - start) / len(loaded)
    events = [loaded[ids[i % len(ids)]] for i in range(n_events)]

    def ours() -> list[TrackArrays]:
        return [
            extract_tracks(e.hits, e.truth, e.particles, vocab, chosen, event_id=e.event_id)
            for e in events
        ]

    def reference() -> list[TrackArrays]:
        return [
            reference_tracks(e.hits, e.truth, e.particles, vocab, chosen, e.event_id)
            for e in events
        ]

    for a, b in zip(ours(), reference()):
        for name in TrackArrays.DTYPES:
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, err_msg=name)
    ours_s = _time(ours, repeat=3)
    reference_s = _time(reference, repeat=1)
    n_tracks = sum(len(t) for t in ours())
    return {
        "events": n_events,
        "hits_per_event": float(np.mean([len(e.hits) for e in events])),
        "tracks": n_tracks,
        "selection": selection,
        "tracklm_events_per_s": n_events / ours_s,
        "reference_events_per_s": n_events / reference_s,
        "speedup": reference_s / ours_s,
        "read_seconds_per_event": read_seconds,
    }


_PREPARE_SCRIPT = """
import json, resource, sys, time
from tracklm.data.prepare import run_prepare
start = time.perf_counter()
manifest = run_prepare(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tracks": sum(manifest["n_tracks"].values()),
                  "peak_rss_mib_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_rss_mib_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def benchmark_prepare_command(
    events_dir: str | os.PathLike[str], workers: int = 1
) -> dict[str, Any]:
    """``run_prepare`` end to end in a fresh process: tracks/s and peak resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _PREPARE_SCRIPT,
                str(events_dir),
                str(Path(tmp) / "data"),
                str(workers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["events"] = len(list_events(events_dir))
    measured["workers"] = workers
    measured["tracks_per_s"] = measured["tracks"] / measured["seconds"]
    measured["events_per_s"] = measured["events"] / measured["seconds"]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", default=str(Path(__file__).resolve().parents[2] / "shared/data/trackml/events")
    )
    parser.add_argument(
        "--detector", default=None, help="'trackml' or detectors.csv (default as in prepare)"
    )
    parser.add_argument("--n-events", type=int, default=20)
    parser.add_argument("--selection", default="pixel-4to8", choices=list(SELECTIONS))
    parser.add_argument(
        "--prepare", default=None, help="also time `tracklm prepare` on this event directory"
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    result = benchmark_prepare(args.events, args.n_events, args.detector, args.selection)
    print(json.dumps(result, indent=2))
    print(f"extraction: tracklm {result['speedup']:.0f}x the per-particle pandas loop")
    if args.prepare:
        print(json.dumps(benchmark_prepare_command(args.prepare, args.workers), indent=2))


if __name__ == "__main__":
    main()
