"""Speed of the built-in event generator on the built-in TrackML detector, one core.

Reports CPU seconds per event for the simulation alone (particles, propagation, hits, tables)
and for writing the three gzip CSV files, after one warm-up event that also builds the module
lookup grid (``first_event_s``: grid and event together). Target: a pile-up 200 event simulated
in at most 1 s.

Usage: ``python benchmarks/bench_simulate.py --events 3 --pileup 200``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from tracklm.detector.geometry import Detector
from tracklm.io.trackml import write_event
from tracklm.simulate.config import SimulationConfig
from tracklm.simulate.event import simulate_event


def benchmark_simulate(n_events: int = 3, pileup: float = 200) -> dict:
    """Seconds per event (median CPU time) to simulate and to write ``n_events`` events."""
    detector = Detector.load("trackml")
    config = SimulationConfig(mean_pileup_collisions=float(pileup))
    start = time.process_time()
    simulate_event(detector, 0, seed=0, config=config)  # warm-up: builds the lookup grid
    first_event_s = time.process_time() - start
    simulate_s, write_s, n_hits = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for event_id in range(1, n_events + 1):
            start = time.process_time()
            event = simulate_event(detector, event_id, seed=0, config=config)
            simulate_s.append(time.process_time() - start)
            start = time.process_time()
            write_event(
                directory, event_id, hits=event.hits, particles=event.particles, truth=event.truth
            )
            write_s.append(time.process_time() - start)
            n_hits.append(len(event.hits))
    return {
        "pileup": pileup,
        "events": n_events,
        "first_event_s": round(first_event_s, 3),
        "simulate_s_per_event": round(statistics.median(simulate_s), 3),
        "write_s_per_event": round(statistics.median(write_s), 3),
        "hits_per_event": round(statistics.mean(n_hits)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--pileup", type=float, default=200.0)
    args = parser.parse_args()
    print(json.dumps(benchmark_simulate(args.events, args.pileup), indent=2))
