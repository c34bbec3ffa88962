"""Every tracklm benchmark in one run: a table of ratios against peers measured in the same run.

Sections (each a function of ``benchmarks/bench_*.py``):

* ``train_step``: TrackingBert training step vs ``transformers.BertForPreTraining`` (paper, small).
* ``simulate``: seconds per PU200 event of the built-in simulator.
* ``prepare``: vectorized track extraction vs a per-particle pandas loop, on simulated events.
* ``time_to_accuracy``: pre-training wall time (demo recipe) to validation masked accuracies
  (curve PNG + JSON), against the evaluation's baselines (frequency, helix, helix+frequency).
* ``inference``: masked-module prediction, ONNX Runtime (the graph ``tracklm export`` writes) vs
  eager PyTorch.
* ``memory``: peak RSS of training for growing memory-mapped datasets.
* ``generate``: completing tracks from 3 seed hits with a causal model, with the key/value cache
  vs encoding the whole track again at each step.

Usage::

    .venv/bin/python benchmarks/run.py --quick [--out results.json] [--only train_step prepare]

``--quick`` takes about 5 minutes on 2 CPU cores (smaller batches, 8 simulated events, 2.5 minutes
of training, a two-size memory scan); without it the sizes follow the paper and the demo more closely.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

SECTIONS = (
    "train_step",
    "simulate",
    "prepare",
    "time_to_accuracy",
    "inference",
    "memory",
    "generate",
)


@dataclass
class Settings:
    """Sizes of one benchmark run."""

    quick: bool
    threads: int = 2
    train_batch: int = 1024
    train_steps: int = 10
    simulate_events: int = 5
    events: int = 24  # simulated PU200 events for prepare, training and inference (the demo's)
    prepare_events: int = 10
    t2a_preset: str = "small"
    t2a_batch: int | None = None  # None: the demo recipe's (128)
    t2a_minutes: float = 10.0
    t2a_val_every: int = 100
    inference_tracks: int = 20_000
    memory_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    memory_steps: int = 20

    @classmethod
    def for_run(cls, quick: bool, threads: int) -> Settings:
        if not quick:
            return cls(quick=False, threads=threads)
        return cls(
            quick=True, threads=threads, train_batch=128, train_steps=8, simulate_events=2,
            events=8, prepare_events=3, t2a_minutes=2.5, t2a_val_every=50,
            inference_tracks=4000, memory_sizes=(10_000, 100_000), memory_steps=5,
        )  # fmt: skip


@dataclass
class Row:
    """One line of the table."""

    name: str
    ours: str
    peer: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "-"


@dataclass
class Context:
    """What sections share: sizes, a scratch directory, simulated events and a prepared dataset."""

    settings: Settings
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    _events: Path | None = None
    _data: Path | None = None

    def events(self) -> Path:
        """Simulated PU200 events (built once)."""
        if self._events is None:
            from tracklm.simulate.event import run_simulate

            path = self.workdir / "events"
            started = time.perf_counter()
            run_simulate(out=path, detector="trackml", events=self.settings.events, pileup=200.0,
                         seed=0, workers=self.settings.threads)  # fmt: skip
            self.results["setup"] = {"simulate_events_seconds": time.perf_counter() - started}
            self._events = path
        return self._events

    def data(self) -> Path:
        """The simulated events prepared (pixel-4to8, by distance), one event each for val and test."""
        if self._data is None:
            from tracklm.data.prepare import run_prepare

            fraction = 1.0 / self.settings.events
            path = self.workdir / "data"
            started = time.perf_counter()
            run_prepare(events=self.events(), out=path, detector=None, selection="pixel-4to8",
                        order="distance", val_fraction=fraction, test_fraction=fraction, seed=0,
                        workers=self.settings.threads, tolerant=False)  # fmt: skip
            self.results.setdefault("setup", {})["prepare_seconds"] = time.perf_counter() - started
            self._data = path
        return self._data


def _num(value: float, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _met(condition: bool) -> str:
    return "yes" if condition else "NO"


# ----------------------------------------------------------------------------- sections
def section_train_step(ctx: Context) -> list[Row]:
    from bench_train_step import benchmark_train_step

    s = ctx.settings
    rows = []
    for preset in ("paper", "small"):
        r = benchmark_train_step(preset, s.train_batch, s.train_steps, s.threads)
        ctx.results[f"train_step_{preset}"] = r
        pairs = r["pairs_per_s"]
        ratio = r["speedup_vs_hf_fp32"]
        goal = ">= 2x" if preset == "paper" else "-"
        rows.append(Row(f"train step {preset} fp32 vs HF BertForPreTraining (pairs/s, batch {s.train_batch})",
                        _num(pairs["ours"]), _num(pairs["hf"]), f"{ratio:.2f}x", goal,
                        _met(ratio >= 2.0) if preset == "paper" else "-"))  # fmt: skip
        if "ours_bf16" in pairs:
            rows.append(Row(f"train step {preset} bf16 autocast (pairs/s)", _num(pairs["ours_bf16"]),
                            _num(pairs["hf_bf16"]), f"{r['speedup_bf16_vs_hf_bf16']:.2f}x"))  # fmt: skip
        rows.append(Row(f"train step {preset}: GFLOP/s vs fp32 matmul rate", _num(r["ours_gflops_fp32"]),
                        _num(r["matmul_gflops_fp32"]), f"{r['ours_fraction_of_matmul_rate']:.2f}"))  # fmt: skip
    return rows


def section_simulate(ctx: Context) -> list[Row]:
    from bench_simulate import benchmark_simulate

    r = benchmark_simulate(ctx.settings.simulate_events, 200)
    ctx.results["simulate"] = r
    seconds = r["simulate_s_per_event"]
    return [
        Row("simulate PU200 (CPU s/event, no peer)", _num(seconds, "s"), "-", "-", "<= 1 s",
            _met(seconds <= 1.0)),
        Row("  + writing the 3 gzip CSVs (CPU s/event)", _num(r["write_s_per_event"], "s")),
    ]  # fmt: skip


def section_prepare(ctx: Context) -> list[Row]:
    from bench_prepare import benchmark_prepare

    r = benchmark_prepare(ctx.events(), ctx.settings.prepare_events)
    ctx.results["prepare"] = r
    return [
        Row("prepare: track extraction (events/s)", _num(r["tracklm_events_per_s"]),
            _num(r["reference_events_per_s"]), f"{r['speedup']:.1f}x", ">= 20x",
            _met(r["speedup"] >= 20)),
    ]  # fmt: skip


def section_time_to_accuracy(ctx: Context) -> list[Row]:
    from bench_time_to_accuracy import benchmark_time_to_accuracy

    s = ctx.settings
    run = ctx.workdir / "t2a_run"
    r = benchmark_time_to_accuracy(ctx.data(), run, preset=s.t2a_preset, minutes=s.t2a_minutes,
                                   val_every=s.t2a_val_every, batch_size=s.t2a_batch, threads=s.threads)  # fmt: skip
    ctx.results["time_to_accuracy"] = r
    ctx.results["_model"] = str(run / "model")
    reached = {k: v for k, v in r["seconds_to_accuracy"].items() if v is not None}
    best = max(reached, default=None)
    rows = [
        Row(f"time to accuracy: val masked acc after {s.t2a_minutes:g} min ({s.t2a_preset}, demo recipe)",
            f"{r['final_masked_accuracy']:.3f}", f"{r['frequency_baseline_accuracy']:.3f} (freq.)",
            f"{r['accuracy_over_baseline']:.2f}x", "> baseline",
            _met(r["final_masked_accuracy"] > r["frequency_baseline_accuracy"])),
    ]  # fmt: skip
    for name, accuracy in r["baseline_accuracies"].items():
        seconds = r["seconds_to_beat"][name]
        rows.append(Row(f"  seconds of training to beat {name} ({accuracy:.3f})",
                        _num(seconds, "s") if seconds is not None else "not reached"))  # fmt: skip
    if best is not None:
        rows.append(
            Row(f"  seconds of training to reach {best} accuracy", _num(reached[best], "s"))
        )
    return rows


def section_inference(ctx: Context) -> list[Row]:
    from bench_inference import benchmark_inference

    s = ctx.settings
    model = ctx.results.get("_model")
    if model is None or not (Path(model) / "model.safetensors").is_file():
        model = _untrained_model(ctx, s.t2a_preset)
    r = benchmark_inference(model, ctx.data(), "test", s.inference_tracks, threads=s.threads)
    ctx.results["inference"] = r
    t = r["tracks_per_s"]
    rows = [
        Row(f"inference: masked module, ONNX Runtime vs eager (tracks/s, {s.t2a_preset}, {s.threads} threads)",
            _num(t["onnx_tuned"]), _num(t["eager"]), f"{r['speedup_onnx_vs_eager']:.2f}x", "> 1x",
            _met(r["speedup_onnx_vs_eager"] > 1.0)),
        Row("  ONNX Runtime default options vs eager", _num(t["onnx_default"]), _num(t["eager"]),
            f"{r['speedup_onnx_default_vs_eager']:.2f}x"),
        Row("  full-logits graph (head='full') vs eager full logits", _num(t["onnx_full_logits"]),
            _num(t["eager_full_logits"]), f"{r['speedup_onnx_full_vs_eager_full_logits']:.2f}x"),
    ]  # fmt: skip
    # One thread: how tracking frameworks run a model (one inference per event-processing
    # thread); and the paper-size model (untrained: speed does not depend on the weights once
    # subnormals are flushed).
    paper_model = None
    for preset, threads in ((s.t2a_preset, 1), ("paper", s.threads), ("paper", 1)):
        if (preset, threads) == (s.t2a_preset, s.threads):
            continue  # the first row's case
        if preset == "paper":
            paper_model = paper_model or _untrained_model(ctx, "paper")
        directory = paper_model if preset == "paper" else model
        tracks = s.inference_tracks if preset != "paper" else max(1024, s.inference_tracks // 2)
        r = benchmark_inference(
            directory, ctx.data(), "test", tracks, threads=threads, variants="main"
        )
        ctx.results[f"inference_{preset}_{threads}_threads"] = r
        t = r["tracks_per_s"]
        rows.append(Row(f"  {preset}, {threads} thread{'s' * (threads > 1)}: ONNX Runtime vs eager",
                        _num(t["onnx_tuned"]), _num(t["eager"]), f"{r['speedup_onnx_vs_eager']:.2f}x",
                        "> 1x", _met(r["speedup_onnx_vs_eager"] > 1.0)))  # fmt: skip
    torch.set_num_threads(s.threads)
    return rows


def _untrained_model(ctx: Context, preset: str) -> str:
    """A freshly initialised model of ``preset`` for the dataset (seeded)."""
    from tracklm.io.dataset import open_dataset
    from tracklm.models import TrackingBert, TrackingBertConfig

    dataset = open_dataset(ctx.data())
    width = 2 * dataset.split("test").max_length + 3
    config = TrackingBertConfig.preset(preset, vocab_size=len(dataset.vocab), max_length=width)
    path = ctx.workdir / f"untrained_{preset}_model"
    torch.manual_seed(0)
    TrackingBert(config).save_pretrained(path, dataset.vocab)
    return str(path)


def section_generate(ctx: Context) -> list[Row]:
    from bench_generate import benchmark_generate

    s = ctx.settings
    tracks = 4096 if s.quick else 16384
    r = benchmark_generate(
        ctx.data(), None, s.t2a_preset, tracks=tracks, rounds=3, threads=s.threads
    )
    ctx.results["generate"] = r
    t = r["tracks_per_second"]
    torch.set_num_threads(s.threads)
    return [
        Row(f"generate: completions from 3 seeds, key/value cache vs re-encoding (tracks/s, "
            f"{s.t2a_preset} untrained, {r['mean_length']:.1f} hits, {s.threads} threads)",
            _num(t["cache"]), _num(t["no_cache"]), f"{r['cache_over_no_cache']:.2f}x", "> 1x",
            _met(r["cache_over_no_cache"] > 1.0 and r["same_tracks"] == 1.0)),
    ]  # fmt: skip


def section_memory(ctx: Context) -> list[Row]:
    from bench_memory import benchmark_memory

    s = ctx.settings
    r = benchmark_memory(s.memory_sizes, s.memory_steps, workdir=ctx.workdir)
    ctx.results["memory"] = r
    first, last = r["runs"][0], r["runs"][-1]
    rows = [
        Row(f"memory: peak RSS {last['train_tracks']:,} vs {first['train_tracks']:,} tracks (MiB)",
            _num(last["peak_rss_mib"]), _num(first["peak_rss_mib"]),
            f"{r['rss_ratio_largest_to_smallest']:.2f}x", "<= 1.25x",
            _met(r["rss_ratio_largest_to_smallest"] <= 1.25)),
    ]  # fmt: skip
    for run in r["runs"]:
        rows.append(Row(f"  {run['train_tracks']:,} tracks: dataset {run['dataset_mib']:.0f} MiB on disk",
                        f"{run['peak_rss_mib']:.0f} MiB peak"))  # fmt: skip
    rows.append(Row("  import-only process (torch + lightning)",
                    f"{r['import_only_peak_rss_mib']:.0f} MiB peak"))  # fmt: skip
    return rows


RUNNERS: dict[str, Callable[[Context], list[Row]]] = {
    "train_step": section_train_step,
    "simulate": section_simulate,
    "prepare": section_prepare,
    "time_to_accuracy": section_time_to_accuracy,
    "inference": section_inference,
    "memory": section_memory,
    "generate": section_generate,
}


# ----------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """CPU model, cores, load, library versions and torch threads of this run."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    for name in ("transformers", "onnxruntime", "lightning", "numpy", "pandas"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def format_table(rows: list[Row]) -> str:
    """Rows as a Markdown table (readable in a terminal and pasteable into docs)."""
    header = Row("benchmark", "ours", "peer", "ratio", "goal", "met?")
    cells = [[r.name, r.ours, r.peer, r.ratio, r.goal, r.met] for r in [header, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(6)) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def run_benchmarks(
    quick: bool, out: Path, sections: tuple[str, ...] = SECTIONS, threads: int = 2,
    workdir: str | None = None, settings: Settings | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run ``sections`` and write the JSON report ``out``; returns it (table included).

    ``settings`` replaces the sizes that ``quick`` chooses (for tests and experiments).
    """
    from tracklm.runtime import configure_torch

    configure_torch()  # flush subnormals, process-wide: ours and every peer alike
    torch.set_num_threads(threads)
    settings = settings or Settings.for_run(quick, threads)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": quick,
        "machine": machine(),
        "settings": settings.__dict__,
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tracklm-bench-", dir=workdir) as tmp:
        ctx = Context(settings, Path(tmp))
        section_seconds = {}
        for name in sections:
            section_start = time.perf_counter()
            try:
                rows += RUNNERS[name](ctx)
            except Exception as exc:
                ctx.results[name] = {"error": traceback.format_exc()}
                message = " ".join(str(exc).split())[:100]
                rows.append(Row(name, f"ERROR {type(exc).__name__}: {message}"))
            section_seconds[name] = time.perf_counter() - section_start
            print(f"[{name}: {section_seconds[name]:.0f} s]", file=sys.stderr, flush=True)
        curve_png = ctx.workdir / "t2a_run" / "time_to_accuracy.png"
        if curve_png.is_file():  # keep the curve next to the JSON report
            target = out.with_name(out.stem + "_time_to_accuracy.png")
            target.write_bytes(curve_png.read_bytes())
            ctx.results["time_to_accuracy"]["png"] = str(target)
    ctx.results.pop("_model", None)
    report["results"] = ctx.results
    report["section_seconds"] = section_seconds
    report["total_seconds"] = time.perf_counter() - started
    report["load_average_end"] = os.getloadavg()
    report["table"] = format_table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes on 2 cores")
    parser.add_argument("--out", default="benchmarks/results.json", help="JSON report to write")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: system temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = run_benchmarks(
        args.quick, Path(args.out), tuple(args.only), args.threads, args.workdir
    )
    load = report["machine"]["load_average"]
    print(f"\n{report['machine']['cpu']}, {report['machine']['cores']} cores, torch "
          f"{report['machine']['torch']} ({args.threads} threads); load average at start "
          f"{load[0]:.1f}, at end {report['load_average_end'][0]:.1f}; "
          f"{report['total_seconds'] / 60:.1f} min")  # fmt: skip
    print(report["table"])
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
