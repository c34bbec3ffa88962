"""Smoke tests of ``benchmarks/``: the pieces of ``run.py`` import and tiny runs give their keys.

No timing is asserted: benchmarks report ratios, tests only check that they run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_memory  # noqa: E402
import bench_time_to_accuracy  # noqa: E402
import run  # noqa: E402

# Lightning 2.6 + torch 2.13: Lightning builds a torch pytree LeafSpec, which torch now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_time_to_accuracy_joins_validation_rows_with_wall_clock_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,time/wall_seconds,train/loss,val/masked_accuracy\n"
        "0,9,,4.0,\n"
        "0,9,,,0.2\n"
        ",10,5.0,,\n"
        "0,19,,,0.45\n"
        ",20,11.0,,\n"
        "1,20,,,0.45\n"  # the final validation after training repeats the last model
        ",20,12.0,,\n"
    )
    curve = bench_time_to_accuracy.read_curve(csv)
    assert curve == [
        {"step": 10, "seconds": 5.0, "masked_accuracy": 0.2},
        {"step": 20, "seconds": 11.0, "masked_accuracy": 0.45},
    ]
    assert bench_time_to_accuracy.time_to_reach(curve, 0.3) == 11.0
    assert bench_time_to_accuracy.time_to_reach(curve, 0.9) is None


def test_inference_benchmark_returns_its_keys(random_data, tmp_path):
    from bench_inference import benchmark_inference
    from tracklm.io.dataset import open_dataset
    from tracklm.models import TrackingBert, TrackingBertConfig

    vocab = open_dataset(random_data).vocab
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), max_length=19)
    TrackingBert(config).save_pretrained(tmp_path / "model", vocab)
    result = benchmark_inference(
        tmp_path / "model", random_data, max_tracks=256, batch_size=128, threads=1, repeats=1
    )
    assert result["tracks"] == 256
    assert set(result["tracks_per_s"]) == {
        "eager",
        "eager_full_logits",
        "onnx_tuned",
        "onnx_default",
        "onnx_full_logits",
    }
    assert result["top1_agreement"] >= 0.99
    assert result["speedup_onnx_vs_eager"] > 0


@pytest.mark.slow
def test_time_to_accuracy_benchmark_writes_its_curve(random_data, tmp_path):
    result = bench_time_to_accuracy.benchmark_time_to_accuracy(
        random_data, tmp_path / "run", preset="tiny", minutes=0.15, val_every=5, batch_size=32,
        threads=1,
    )  # fmt: skip
    assert result["curve"] and (tmp_path / "run" / "time_to_accuracy.png").is_file()
    assert 0.0 <= result["frequency_baseline_accuracy"] <= 1.0
    assert set(result["seconds_to_accuracy"]) == {
        f"{t:.2f}" for t in bench_time_to_accuracy.DEFAULT_THRESHOLDS
    }


@pytest.mark.slow
def test_memory_benchmark_measures_each_size(tmp_path):
    result = bench_memory.benchmark_memory((1000, 3000), steps=2, batch_size=16, workdir=tmp_path)
    assert [r["train_tracks"] for r in result["runs"]] == [1000, 3000]
    assert all(r["peak_rss_mib"] > 0 for r in result["runs"])
    assert result["import_only_peak_rss_mib"] > 0
