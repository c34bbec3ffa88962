"""Full-event track finding: ``tracklm find --method helix`` against ``--method model``.

Simulates N pile-up 200 events with a seed the demo model never saw (or takes ``--input``), runs
both methods on the same events and seeds, scores them with ``tracklm score`` (pixel TrackML
score) and writes ``OUT/results.json`` and ``OUT/results.md``. Also, when the files are there,
the real (subsampled) TrackML event of ``../shared/data``, and the peak memory of ``tracklm
find`` over 1 and ``--memory-events`` copies of one low pile-up event (each in a fresh child
process: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``).

Usage (CPU heavy: about 10 to 20 minutes for 10 events on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/find_tracks.py --events 10 --seed 11 --out DIR \\
        [--model demo/run/model ...] [--input EVENTS] [--memory-events 100] [--short-veto 0.35] \\
        [--scorer SCORER/model ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REAL_EVENTS = REPO.parent / "shared" / "data" / "trackml" / "events"
DEMO_MODEL = REPO / "demo" / "run" / "model"

# Runs in a fresh process: the measured command as its only child, then its peak RSS.
_MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode != 0:
    sys.stderr.write(done.stderr[-4000:])
    sys.exit(done.returncode)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

SCORE_KEYS = (
    "pixel_trackml_score",
    "efficiency",
    "efficiency_pt1",
    "fake_rate",
    "duplicate_rate",
    "seconds_per_event",
)


def simulate(out: Path, events: int, seed: int, pileup: float) -> Path:
    """``tracklm simulate`` into ``out`` unless it already holds ``events`` events."""
    from tracklm.io.trackml import list_events
    from tracklm.simulate.event import run_simulate

    if out.is_dir() and len(list_events(out)) == events:
        return out
    shutil.rmtree(out, ignore_errors=True)
    return Path(run_simulate(out, events=events, pileup=pileup, seed=seed))


def model_tag(model: Path) -> str:
    """A short name for a model's output directories: RUN of ``RUN/model``, else the directory's
    own name (a shipped model, ``trackml-pixel-small``)."""
    return model.parent.name if model.name == "model" and model.parent.name else model.name


def find_and_score(
    events: Path,
    out: Path,
    method: str,
    model: Path | None = None,
    short_veto: float = 0.0,
    scorer: Path | None = None,
) -> dict[str, Any]:
    """Run ``run_find`` and ``run_score``; the score's headline figures and the finder's stages."""
    from tracklm.find.run import run_find
    from tracklm.score.run import run_score

    for path in (out, out.with_name(out.name + "-score")):
        shutil.rmtree(path, ignore_errors=True)
    manifest = run_find(
        events, out, method=method, model=model, short_veto=short_veto, scorer=scorer
    )
    score = run_score(events, out, out.with_name(out.name + "-score"))
    result = {key: score.get(key) for key in SCORE_KEYS}
    result["seconds_per_stage"] = manifest["seconds_per_stage"]
    result["per_event_score"] = [e["pixel_trackml_score"] for e in score["per_event"].values()]
    return result


def peak_memory(events: Path, out: Path) -> float:
    """Peak RSS (MiB) of ``tracklm find`` on ``events``, in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "tracklm", "find", "--events", str(events), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True
    )
    return float(json.loads(done.stdout)["peak_rss_mib"])


def memory_scan(root: Path, copies: int) -> dict[str, Any]:
    """Peak memory of ``tracklm find`` over 1 and ``copies`` copies of one pile-up 20 event."""
    from tracklm.io.trackml import event_path

    one = simulate(root / "memory-source", 1, 5, 20.0)
    result: dict[str, Any] = {"pileup": 20.0}
    for n in (1, copies):
        events = root / f"memory-{n}"
        shutil.rmtree(events, ignore_errors=True)
        events.mkdir(parents=True)
        for name in ("detectors.csv", "manifest.json"):
            shutil.copy(one / name, events / name)
        for k in range(1, n + 1):
            source = event_path(one, 1, "hits")
            os.link(source, events / source.name.replace("000000001", f"{k:09d}"))
        start = time.perf_counter()
        result[f"peak_rss_mib_{n}_events"] = peak_memory(events, root / f"memory-{n}-tracks")
        result[f"seconds_{n}_events"] = time.perf_counter() - start
        shutil.rmtree(root / f"memory-{n}-tracks", ignore_errors=True)
    return result


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (one row per method and event set)."""
    source = results.get("input") or (
        f"{results['events']} simulated PU200 events (`tracklm simulate --seed {results['seed']}`)"
    )
    lines = [
        f"Pixel TrackML score (volumes 7, 8, 9), {source}, one core.",
        "",
        "| events | method | score | efficiency | eff. pT > 1 GeV | fake rate | duplicates "
        "| s / event | time vs helix |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in results["runs"].items():
        helix_time = runs["helix"]["seconds_per_event"]
        for name, run in runs.items():
            ratio = run["seconds_per_event"] / helix_time if helix_time else None
            lines.append(
                f"| {label} | {name} | {_fmt(run['pixel_trackml_score'], 4)} | "
                f"{_fmt(run['efficiency'])} | {_fmt(run['efficiency_pt1'])} | "
                f"{_fmt(run['fake_rate'])} | {_fmt(run['duplicate_rate'])} | "
                f"{_fmt(run['seconds_per_event'], 1)} | {_fmt(ratio, 2)} |"
            )
    memory = results.get("memory")
    if memory:
        lines += [
            "",
            f"Peak memory of `tracklm find` (pile-up {memory['pileup']:g} events): "
            + ", ".join(
                f"{key.split('_')[3]} events {value:.0f} MiB"
                for key, value in memory.items()
                if key.startswith("peak_rss")
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10, help="simulated events (default 10)")
    parser.add_argument("--seed", type=int, default=11, help="simulation seed (default 11)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--input", type=Path, default=None, help="use these events instead")
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=None,
        help=f"model directory or shipped name for --method model (repeatable; default {DEMO_MODEL})",
    )
    parser.add_argument("--pileup", type=float, default=200.0, help="pile-up (default 200)")
    parser.add_argument(
        "--short-veto",
        type=float,
        default=0.0,
        help="also run each model with 'tracklm find --short-veto Q' (default 0: not run)",
    )
    parser.add_argument(
        "--scorer",
        type=Path,
        action="append",
        default=None,
        help="a candidate scorer ('tracklm finetune --task candidates'): also run each --model "
        "with 'tracklm find --scorer S' (repeatable)",
    )
    parser.add_argument(
        "--memory-events", type=int, default=100, help="memory scan size (0: skip; default 100)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tracklm.runtime import configure_torch

    configure_torch()
    args.out.mkdir(parents=True, exist_ok=True)
    from tracklm.pretrained import resolve_model

    models = [resolve_model(model) for model in args.model or [DEMO_MODEL]]
    events = args.input or simulate(args.out / "events", args.events, args.seed, args.pileup)
    sets = {f"simulated (seed {args.seed})" if args.input is None else str(events): events}
    if REAL_EVENTS.is_dir():
        sets["real TrackML event 1 (4% of particles)"] = REAL_EVENTS
    results: dict[str, Any] = {
        "events": args.events,
        "seed": args.seed,
        "input": str(args.input) if args.input else None,
        "runs": {},
    }
    for label, directory in sets.items():
        tag = "real" if directory == REAL_EVENTS else "sim"
        runs = {"helix": find_and_score(directory, args.out / f"{tag}-helix", "helix")}
        for model in models:
            name = "model" if len(models) == 1 else f"model ({model_tag(model)})"
            runs[name] = find_and_score(
                directory, args.out / f"{tag}-model-{model_tag(model)}", "model", model
            )
            if args.short_veto > 0:
                runs[f"{name} --short-veto {args.short_veto:g}"] = find_and_score(
                    directory,
                    args.out / f"{tag}-model-{model_tag(model)}-veto",
                    "model",
                    model,
                    args.short_veto,
                )
            for scorer in args.scorer or []:
                runs[f"{name} --scorer {model_tag(scorer)}"] = find_and_score(
                    directory,
                    args.out / f"{tag}-model-{model_tag(model)}-scorer-{model_tag(scorer)}",
                    "model",
                    model,
                    scorer=scorer,
                )
        results["runs"][label] = runs
    if args.memory_events > 0:
        results["memory"] = memory_scan(args.out, args.memory_events)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
