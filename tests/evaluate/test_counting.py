"""The baselines never count on the tracks they are scored on (``tracklm.evaluate.counting``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tracklm.data.prepare import run_prepare
from tracklm.errors import InputError
from tracklm.evaluate.counting import counting_split, event_fingerprints
from tracklm.evaluate.report import run_evaluate
from tracklm.io.dataset import open_dataset


@pytest.fixture(scope="module")
def all_test(toy_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every toy event in the test split (``--test-fraction 1``): the real-dataset use case."""
    out = tmp_path_factory.mktemp("counting") / "all-test"
    run_prepare(toy_events, out, val_fraction=0.0, test_fraction=1.0)
    return out


@pytest.fixture(scope="module")
def all_train(toy_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every toy event in the train split: the old workaround for evaluating a whole dataset."""
    out = tmp_path_factory.mktemp("counting") / "all-train"
    run_prepare(toy_events, out, val_fraction=0.0, test_fraction=0.0)
    return out


def model_in_run(tiny_model: Path, root: Path, trained_on: Path | None) -> Path:
    """A copy of ``tiny_model`` as ``root/model``, with a pretrain manifest naming ``trained_on``."""
    shutil.copytree(tiny_model, root / "model")
    if trained_on is not None:
        record = {"stage": "pretrain", "inputs": {"data": str(trained_on)}}
        (root / "manifest.json").write_text(json.dumps(record))
    return root / "model"


def test_test_fraction_one_puts_every_event_in_test(all_test: Path, toy_data: Path) -> None:
    dataset = open_dataset(all_test)
    assert len(dataset.split("train")) == 0 and len(dataset.split("val")) == 0
    toy = open_dataset(toy_data)
    assert len(dataset.split("test")) == sum(
        len(toy.split(name)) for name in ("train", "val", "test")
    )


def test_counts_come_from_the_model_training_data_first(tmp_path, tiny_model, toy_data, all_test):
    model = model_in_run(tiny_model, tmp_path, trained_on=toy_data)
    # toy_data's train events are among all_test's test events: not usable, and the
    # evaluated dataset has no train split either, so the baselines are left out.
    chosen = counting_split(open_dataset(all_test), "test", model)
    assert (
        chosen.tracks is None and "holds" in chosen.reason and "no training tracks" in chosen.reason
    )
    # On toy_data's own test split, the model's training data qualifies and is preferred.
    chosen = counting_split(open_dataset(toy_data), "test", model)
    assert chosen.source == "model training data" and chosen.data == str(toy_data)
    assert len(chosen.tracks) == len(open_dataset(toy_data).split("train"))


def test_a_model_without_a_run_counts_on_the_evaluated_train_split(tiny_model, toy_data):
    chosen = counting_split(open_dataset(toy_data), "test", tiny_model)
    assert chosen.source == "evaluated dataset"
    # ... but never when the train split itself is evaluated.
    chosen = counting_split(open_dataset(toy_data), "train", tiny_model)
    assert chosen.tracks is None and "holds" in chosen.reason


def test_the_same_events_prepared_twice_are_recognised(toy_data, all_train, all_test):
    """Events are compared by their hits file's hash, not by the dataset they sit in."""
    train_prints = event_fingerprints(open_dataset(all_train), "train")
    assert train_prints == event_fingerprints(open_dataset(all_test), "test")
    assert event_fingerprints(open_dataset(toy_data), "test") < train_prints
    expected = f"--baseline-data: .*all-train/train: holds {len(train_prints)} of the evaluated"
    with pytest.raises(InputError, match=expected):
        counting_split(open_dataset(all_test), "test", "no-model", baseline_data=all_train)


def test_baseline_data_option_is_checked(tmp_path, toy_data, all_test):
    with pytest.raises(InputError, match=r"--baseline-data: .*all-test/train: no training tracks"):
        counting_split(open_dataset(toy_data), "test", "no-model", baseline_data=all_test)
    chosen = counting_split(open_dataset(toy_data), "test", "no-model", baseline_data=toy_data)
    assert chosen.source == "--baseline-data"


def test_evaluate_leaves_the_baselines_out_and_says_why(tmp_path, tiny_model, all_test, toy_data):
    metrics = run_evaluate(tiny_model, all_test, tmp_path / "alone", max_tracks=60)
    assert metrics["baselines"] == {} and metrics["baselines_counted_on"]["left_out"]
    report = (tmp_path / "alone" / "report.md").read_text()
    assert "The baselines are left out" in report
    # Given a train split without the evaluated events, they are back, and say where they counted.
    toy = open_dataset(toy_data)
    metrics = run_evaluate(
        tiny_model, toy_data, tmp_path / "with", max_tracks=60, baseline_data=toy_data
    )
    assert set(metrics["baselines"]) == {
        "frequency",
        "sequence",
        "helix",
        "helix+frequency",
        "helix_hits",
    }
    counted = metrics["baselines_counted_on"]
    assert counted["source"] == "--baseline-data" and counted["n_tracks"] == len(toy.split("train"))
