"""End-to-end ``run_evaluate`` on a tiny toy dataset with a tiny random model, and its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.evaluate.masked import mask_inputs, pair_partners
from tracklm.evaluate.report import headline_table, run_evaluate
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert, TrackingBertConfig

PNGS = (
    "accuracy_by_position.png",
    "accuracy_by_length.png",
    "distance.png",
    "module_accuracy_rz.png",
    "pair_roc.png",
    "example_tracks.png",
)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, toy_data):
    root = tmp_path_factory.mktemp("evaluate")
    data = toy_data
    vocab = open_dataset(data).vocab
    torch.manual_seed(0)
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab)))
    model.save_pretrained(root / "model", vocab)
    return root, data, root / "model"


def test_pairs_stay_in_events_and_use_every_track_once_per_side():
    events = np.array([5, 5, 5, 7, 7, 9, 11, 5])
    partner = pair_partners(events, seed=3)
    assert sorted(partner.tolist()) == list(range(8))  # every track is B exactly once
    grouped = events != 9
    grouped &= events != 11
    assert np.all(events[partner][grouped] == events[grouped])
    assert np.all(partner[grouped] != np.arange(8)[grouped])
    assert set(partner[[5, 6]].tolist()) == {5, 6}  # lone tracks are paired with each other
    np.testing.assert_array_equal(partner, pair_partners(events, seed=3))


@pytest.mark.parametrize("protocol", ["masked", "unmasked"])
def test_mask_inputs_hides_exactly_the_evaluated_token(protocol):
    vocab = ModuleVocab(np.array([[8, 2, m] for m in range(1, 21)]))
    tokens = np.array([[6, 7, 8, 9, 0], [10, 11, 12, 13, 14]])
    lengths = np.array([4, 5])
    encoded = encode_pairs(tokens, lengths, tokens[::-1], lengths[::-1], vocab, 13)
    hit = np.array([[1, 4], [0, 3]])
    true = np.take_along_axis(tokens[::-1], hit, axis=1)
    input_ids, labels = mask_inputs(encoded, "B", hit, true, vocab.mask_id, protocol)
    position = encoded.offset_b[:, None] + hit
    rows = np.arange(2)[:, None]
    expected = vocab.mask_id if protocol == "masked" else true
    np.testing.assert_array_equal(input_ids[rows, position], np.broadcast_to(expected, hit.shape))
    np.testing.assert_array_equal(labels[rows, position], true)
    untouched = labels == -100
    assert untouched.sum() == labels.size - 4
    np.testing.assert_array_equal(input_ids[untouched], encoded.input_ids[untouched])


def test_run_evaluate_writes_schema_valid_metrics_report_and_plots(toy_run):
    root, data, model = toy_run
    out = root / "report"
    metrics = run_evaluate(model, data, out, split="test", protocol="masked", seed=0)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    n_test = len(open_dataset(data).split("test"))
    assert (
        on_disk["protocol"] == "masked"
        and on_disk["split"] == "test"
        and on_disk["n_tracks"] == n_test
    )
    mm = on_disk["masked_module"]
    for key in ("accuracy", "top5_accuracy", "within_20mm", "within_100mm", "median_distance_mm"):
        assert isinstance(mm[key], float)
    assert set(mm["by_position"]) == {"first", "middle", "last"}
    assert set(mm["by_length"]) == {"4", "5", "6", "7", "8"}
    assert set(mm["by_track"]) == {"A", "B"}
    assert mm["n_predictions"] == n_test * 6
    assert (
        0 <= mm["accuracy"] <= mm["top5_accuracy"] <= 1 and mm["within_20mm"] <= mm["within_100mm"]
    )
    assert set(on_disk["pair_pt"]) >= {"accuracy", "auc"}
    assert set(on_disk["baselines"]) == {"frequency", "helix", "helix+frequency", "helix_hits"}
    for block in on_disk["baselines"].values():
        assert set(block) >= {"accuracy", "within_20mm", "by_position", "description"}
    # helix_hits uses what the model never sees, and says so
    assert "REFERENCE" in on_disk["baselines"]["helix_hits"]["description"]
    assert "CENTRES" in on_disk["baselines"]["helix"]["description"]
    # the helix finds most hidden modules of the toy tracks, from centres too; a random model does not
    assert on_disk["baselines"]["helix_hits"]["accuracy"] > 0.6 > mm["accuracy"]
    assert on_disk["baselines"]["helix"]["accuracy"] > 0.5
    report = (out / "report.md").read_text()
    assert "`helix_hits` is a reference, not a baseline" in report
    assert "best baseline (`helix_hits`)" not in report
    assert set(on_disk["multi_mask"]) == {"2", "3"}
    for name in PNGS:
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "Protocol: masked" in report and headline_table(metrics) in report
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and "metrics.json" in manifest["files"]
    table = headline_table(metrics)
    assert table.count("\n| ") == 6  # header, model and four baselines
    assert "| helix_hits (reference: measured hits) |" in table

    with pytest.raises(InputError, match="already exists"):
        run_evaluate(model, data, out)


def test_unmasked_protocol_is_labelled_and_inflated(toy_run):
    root, data, model = toy_run
    metrics = run_evaluate(
        model, data, root / "unmasked", protocol="unmasked", max_tracks=10, seed=1
    )
    assert metrics["protocol"] == "unmasked" and metrics["n_tracks"] == 10
    assert "NOT measure" in metrics["protocol_description"]
    assert metrics["baselines"]["copy_input"]["accuracy"] == 1.0
    assert "Protocol: unmasked" in (root / "unmasked" / "report.md").read_text()


def test_vocabulary_mismatch_is_refused(toy_run, tmp_path):
    _, data, _ = toy_run
    vocab = open_dataset(data).vocab
    other = ModuleVocab(vocab.modules[:-1])
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(other)))
    model.save_pretrained(tmp_path / "model", other)
    with pytest.raises(InputError):
        run_evaluate(tmp_path / "model", data, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_bad_protocol_is_an_input_error(toy_run, tmp_path):
    _, data, model = toy_run
    with pytest.raises(InputError, match="--protocol"):
        run_evaluate(model, data, tmp_path / "r", protocol="peek")
