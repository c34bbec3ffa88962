"""Tests of ``benchmarks/``: the pieces of ``run.py`` import and tiny runs give well-formed results.

No speed is asserted (it depends on the machine), but every figure must be what its name says:
rates positive and finite, ratios equal to the quotient they name, memory in a range a Python
process with torch can have, curves in time order with accuracies in [0, 1].
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert, TrackingBertConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    """Import ``benchmarks/NAME.py`` by path as ``benchmarks_NAME`` (the scripts are no package)."""
    module_name = f"benchmarks_{name}"  # not a bare "run" that could shadow another module
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bench_inference = _load("bench_inference")
bench_memory = _load("bench_memory")
bench_time_to_accuracy = _load("bench_time_to_accuracy")
information_limit = _load("information_limit")
scaling_study = _load("scaling_study")
run = _load("run")


def _is_rate(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


# Lightning 2.6 + torch 2.13: Lightning builds a torch pytree LeafSpec, which torch now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One thread per process in this module (the conftest fixture)."""


@pytest.fixture(scope="module")
def random_data(tmp_path_factory) -> Path:
    return bench_memory.write_random_dataset(tmp_path_factory.mktemp("bench") / "data", 2000)


def test_run_has_every_section_and_formats_a_table():
    assert set(run.RUNNERS) == set(run.SECTIONS)
    quick, full = run.Settings.for_run(True, 2), run.Settings.for_run(False, 2)
    assert quick.events < full.events and quick.t2a_minutes < full.t2a_minutes
    table = run.format_table([run.Row("x", "1", "2", "0.50x", ">= 2x", "NO")])
    lines = table.splitlines()
    assert len(lines) == 3 and "met?" in lines[0] and "0.50x" in lines[2]
    assert len({len(line) for line in lines}) == 1


def test_time_to_accuracy_reads_the_validation_rows_of_a_run(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,time/train_seconds,train/loss,val/loss,val/masked_accuracy,val/pair_accuracy\n"
        "0,9,,4.0,,,\n"
        "0,9,5.0,,3.0,0.2,0.5\n"
        "0,19,11.0,,2.5,0.45,\n"
        "0,19,,3.1,,,\n"
        "1,19,12.0,,2.5,0.45,\n"  # the final validation after training repeats the last model
    )
    curve = bench_time_to_accuracy.read_run_curve(csv)
    assert curve == [
        {"step": 9, "seconds": 5.0, "masked_accuracy": 0.2, "loss": 3.0, "pair_accuracy": 0.5},
        {"step": 19, "seconds": 11.0, "masked_accuracy": 0.45, "loss": 2.5},
    ]
    assert bench_time_to_accuracy.time_to_reach(curve, 0.3) == 11.0
    assert bench_time_to_accuracy.time_to_reach(curve, 0.9) is None


def test_inference_benchmark_returns_its_keys(random_data, tmp_path):
    from tracklm.io.dataset import open_dataset
    from tracklm.models import TrackingBert, TrackingBertConfig

    vocab = open_dataset(random_data).vocab
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), max_length=19)
    TrackingBert(config).save_pretrained(tmp_path / "model", vocab)
    result = bench_inference.benchmark_inference(
        tmp_path / "model", random_data, max_tracks=256, batch_size=128, threads=1, repeats=1
    )
    assert (result["tracks"], result["split"], result["batch_size"], result["threads"]) == (
        256, "test", 128, 1,
    )  # fmt: skip
    assert result["model"] == config.to_dict()
    rates = result["tracks_per_s"]
    assert set(rates) == {
        "eager",
        "eager_full_logits",
        "onnx_tuned",
        "onnx_default",
        "onnx_full_logits",
    }
    assert all(_is_rate(value) for value in rates.values()), rates
    assert 0.99 <= result["top1_agreement"] <= 1.0
    # each speed-up is the ratio of the two rates its name says
    for key, (top, bottom) in {
        "speedup_onnx_vs_eager": ("onnx_tuned", "eager"),
        "speedup_onnx_default_vs_eager": ("onnx_default", "eager"),
        "speedup_onnx_full_vs_eager_full_logits": ("onnx_full_logits", "eager_full_logits"),
        "speedup_onnx_full_vs_eager": ("onnx_full_logits", "eager"),
    }.items():
        assert result[key] == pytest.approx(rates[top] / rates[bottom], rel=1e-12), key


@pytest.mark.slow
def test_time_to_accuracy_benchmark_writes_its_curve(random_data, tmp_path):
    result = bench_time_to_accuracy.benchmark_time_to_accuracy(
        random_data, tmp_path / "run", preset="tiny", minutes=0.15, val_every=5, batch_size=32,
        threads=1,
    )  # fmt: skip
    curve = result["curve"]
    assert curve and (tmp_path / "run" / "time_to_accuracy.png").is_file()
    # the budget is a schedule: fitted to the pace measured before training, re-fitted on the way
    fitted = result["schedule_fitted"]
    assert fitted["to"] == "max_time"
    assert result["max_steps"] == (fitted.get("refits") or [fitted])[-1]["max_steps"]
    steps, seconds = [p["step"] for p in curve], [p["seconds"] for p in curve]
    assert steps == sorted(set(steps)) and steps[0] > 0 and seconds == sorted(seconds)
    assert all(0.0 <= p["masked_accuracy"] <= 1.0 for p in curve)
    assert result["final_step"] == steps[-1]
    assert result["final_masked_accuracy"] == curve[-1]["masked_accuracy"]
    # re-validating the final model on the run's own batches gives the run's own final figure
    # (validation hides every asked module); BERT's masks are measured beside it
    final = result["final_validation"]
    logged = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["hidden"] == pytest.approx(logged["val"]["masked_accuracy"], abs=1e-6)
    assert 0.0 <= final["bert_masks"] <= 1.0
    assert 0.0 <= result["frequency_baseline_accuracy"] <= 1.0
    assert result["accuracy_over_baseline"] == pytest.approx(
        result["final_masked_accuracy"] / result["frequency_baseline_accuracy"]
    )
    assert set(result["seconds_to_accuracy"]) == {
        f"{t:.2f}" for t in bench_time_to_accuracy.DEFAULT_THRESHOLDS
    }
    for threshold, reached in result["seconds_to_accuracy"].items():
        # None when never reached; else the wall clock of the first point at the threshold
        hits = [p["seconds"] for p in curve if p["masked_accuracy"] >= float(threshold)]
        assert reached == (hits[0] if hits else None), threshold


def test_scaling_study_steal_fraction_is_the_stolen_share_of_cpu_time():
    # (all ticks, stolen ticks) since boot: 40 of the 200 ticks in between were stolen
    assert scaling_study.steal_fraction((1000, 50), (1200, 90)) == 0.2
    assert scaling_study.steal_fraction((1000, 50), (1000, 50)) is None  # no time passed
    assert scaling_study.steal_fraction(None, (1200, 90)) is None  # not Linux
    reading = scaling_study.cpu_times()
    if reading is not None:  # Linux: the clock only moves forward, steal is part of the total
        total, stolen = reading
        assert 0 <= stolen <= total
        later = scaling_study.cpu_times()
        assert later is not None and later[0] >= total and later[1] >= stolen


@pytest.mark.slow
def test_scaling_study_writes_a_record_per_run(toy_data, tmp_path):
    import json

    from tracklm.io.dataset import open_dataset

    out = tmp_path / "scaling"
    records = scaling_study.study(
        toy_data, out, events=[2, 6], presets=["tiny"], recipe="small", minutes=0.05,
        max_tracks=100,
    )  # fmt: skip
    assert json.loads((out / "scaling.json").read_text()) == records
    assert (out / "scaling.png").stat().st_size > 0
    assert (out / "scaling.md").read_text().count("| tiny |") == 2
    full = open_dataset(toy_data).split("train")
    for record, events in zip(records, (2, 6)):
        cut = open_dataset(out / f"data-{events}").split("train")
        assert len(set(cut.event_id.tolist())) == events
        assert record["train_tracks"] == len(cut)
        run = out / "runs" / f"tiny-{events}"
        assert (run / "model" / "model.safetensors").is_file()
        assert (run / "report" / "metrics.json").is_file()
        assert record["preset"] == "tiny" and record["parameters"] > 0
        assert 0.0 <= record["test_accuracy"] <= 1.0 and math.isfinite(record["val_loss"])
        assert set(record["baselines"]) == {"frequency", "sequence", "helix+frequency"}
        assert record["cpu_steal"] is None or 0.0 <= record["cpu_steal"] <= 1.0
    assert records[1]["train_tracks"] == len(full)  # all six training events
    assert records[0]["train_tracks"] < records[1]["train_tracks"]
    with pytest.raises(SystemExit, match="--events"):
        scaling_study.cut_dataset(toy_data, tmp_path / "too-many", 7)


@pytest.mark.slow
def test_memory_benchmark_measures_each_size(tmp_path):
    result = bench_memory.benchmark_memory((1000, 3000), steps=2, batch_size=16, workdir=tmp_path)
    runs = result["runs"]
    assert [r["train_tracks"] for r in runs] == [1000, 3000]
    assert (result["steps"], result["batch_size"]) == (2, 16)
    # in MiB: a process that imports torch holds well over 50 MiB, and nothing here needs 8 GiB
    baseline = result["import_only_peak_rss_mib"]
    assert 50.0 < baseline < 8192.0
    for r in runs:
        # training imports what the import-only process imports, and more
        assert baseline < r["peak_rss_mib"] < 8192.0
        assert r["dataset_mib"] > 0 and r["run_seconds"] > 0 and r["write_seconds"] > 0
    assert runs[1]["dataset_mib"] > runs[0]["dataset_mib"]
    assert result["rss_ratio_largest_to_smallest"] == pytest.approx(
        runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    )
    assert result["dataset_ratio_largest_to_smallest"] == pytest.approx(
        runs[1]["dataset_mib"] / runs[0]["dataset_mib"]
    )


def test_generate_benchmark_completes_the_same_tracks_both_ways(random_data):
    bench_generate = _load("bench_generate")
    result = bench_generate.benchmark_generate(
        random_data, None, "tiny", tracks=64, rounds=1, threads=1
    )
    assert result["same_tracks"] == 1.0
    assert all(_is_rate(v) for v in result["tracks_per_second"].values())
    assert result["tracks"] == 64 and result["cache_over_no_cache"] > 0


def test_information_limit_counts_the_twins_of_each_hidden_hit():
    train = np.array([[10, 11, 12, 13]] * 3 + [[10, 14, 12, 13], [10, 11, 16, 17], [10, 18, 12, 0]])
    lengths = np.array([4, 4, 4, 4, 4, 3])
    tokens = np.array([[10, 99, 12, 13], [10, 11, 12, 13], [10, 99, 12, 0], [99, 98, 97, 96]])
    stats = information_limit.hidden_hit_stats(
        train, lengths, tokens, np.array([4, 4, 3, 4]), np.array([1, 3, 1, 0])
    )
    assert stats["n"].tolist() == [4, 3, 1, 0]
    assert stats["top"].tolist() == [11, 13, 18, -1]
    assert stats["top_share"].tolist()[:3] == [0.75, 1.0, 1.0]
    assert np.isnan(stats["top_share"].iloc[3])


def test_information_limit_scores_a_report_on_the_same_hits_and_pairs(toy_data, tmp_path):
    from tracklm.evaluate.report import run_evaluate

    vocab = open_dataset(toy_data).vocab
    torch.manual_seed(0)
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab)))
    model.save_pretrained(tmp_path / "model", vocab)
    metrics = run_evaluate(tmp_path / "model", toy_data, tmp_path / "report", seed=0)
    out = tmp_path / "limit"
    code = information_limit.main(
        ["--train", str(toy_data), "--test", str(toy_data), "--out", str(out), "--fractions", "1",
         "--min-matches", "1", "--report", str(tmp_path / "report"), "--model", str(tmp_path / "model")]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "information_limit.json").read_text())
    joined = result["model"]
    # the same hidden hits and pairs as the report, so the same accuracies
    assert joined["all"]["model"] == pytest.approx(metrics["masked_module"]["accuracy"])
    assert joined["all"]["sequence_baseline"] == pytest.approx(
        metrics["baselines"]["sequence"]["accuracy"]
    )
    assert result["pairs"]["all"]["model"] == pytest.approx(metrics["pair_pt"]["accuracy"])
    for name in information_limit.POSITIONS:
        want = metrics["masked_module"]["by_position"][name]
        assert joined["by_position"][name]["model"] == pytest.approx(want)
    # with one match enough, every matched hit is in the group, and the plug-in is a share
    assert joined["1_matches"]["share"] == pytest.approx(joined["matched"]["share"])
    assert 0.0 <= joined["1_matches"]["plug_in"] <= 1.0
    assert "needed elsewhere" in (out / "information_limit.md").read_text()


def test_information_limit_needs_more_elsewhere_where_the_limit_is_low():
    # 60% of the hits at best 70% right: 80% overall needs 95% of the rest, 90% is out of reach
    assert information_limit.needed_elsewhere(0.8, 0.6, 0.7) == pytest.approx(0.95)
    assert information_limit.needed_elsewhere(0.9, 0.6, 0.7) > 1.0


def test_information_limit_writes_its_tables(toy_data, tmp_path):
    out = tmp_path / "limit"
    code = information_limit.main(
        ["--train", str(toy_data), "--test", str(toy_data), "--out", str(out),
         "--fractions", "0.5", "1", "--min-matches", "2"]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "information_limit.json").read_text())
    small, full = result["masked"]
    assert small["train_tracks"] < full["train_tracks"]
    assert small["coverage"] <= full["coverage"] <= 1.0  # the half is a subset of the whole
    assert full["hidden_hits"] == 3 * result["test_tracks"]
    pairs = result["pairs"]
    assert set(pairs["all"]) == {"lookup", "exact"}
    assert 0.0 <= pairs["all"]["exact"] <= 1.0
    assert "| training events |" in (out / "information_limit.md").read_text()
    assert (
        information_limit.main(
            ["--train", str(toy_data), "--test", str(tmp_path / "missing"), "--out", str(out)]
        )
        == 2
    )
