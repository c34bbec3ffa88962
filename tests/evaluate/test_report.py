"""End-to-end ``run_evaluate`` on a tiny toy dataset with a tiny random model, and its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracklm.data.masking import IGNORE_INDEX
from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.evaluate.markdown import headline_table, report_markdown
from tracklm.evaluate.masked import (
    mask_inputs,
    masked_module_logits,
    pair_partners,
    predict_masked_modules,
    predict_pair_logits,
)
from tracklm.evaluate.report import run_evaluate
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
    untouched = labels == IGNORE_INDEX
    assert untouched.sum() == labels.size - 4
    np.testing.assert_array_equal(input_ids[untouched], encoded.input_ids[untouched])


@pytest.fixture(scope="module")
def masked_report(toy_run):
    """One masked-protocol evaluation of the toy run: (report directory, returned metrics)."""
    root, data, model = toy_run
    out = root / "report"
    metrics = run_evaluate(model, data, out, split="test", protocol="masked", seed=0)
    return out, metrics


def test_metrics_json_is_what_run_evaluate_returns(masked_report):
    out, metrics = masked_report
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_metrics_json_follows_the_schema(masked_report, toy_data):
    _, metrics = masked_report
    n_test = len(open_dataset(toy_data).split("test"))
    assert (
        metrics["protocol"] == "masked"
        and metrics["split"] == "test"
        and metrics["n_tracks"] == n_test
    )
    mm = metrics["masked_module"]
    for key in ("accuracy", "top5_accuracy", "within_20mm", "within_100mm", "median_distance_mm"):
        assert isinstance(mm[key], float)
    assert isinstance(mm["mean_distance_mm"], float) and isinstance(mm["q90_distance_mm"], float)
    assert set(mm["by_position"]) == {"first", "middle", "last"}
    assert set(mm["by_length"]) == {"4", "5", "6", "7", "8"}
    assert set(mm["by_track"]) == {"A", "B"}
    assert mm["n_predictions"] == n_test * 6
    assert set(metrics["pair_pt"]) >= {"accuracy", "auc"}
    assert set(metrics["baselines"]) == {
        "frequency",
        "sequence",
        "helix",
        "helix+frequency",
        "helix_hits",
    }
    for block in metrics["baselines"].values():
        assert set(block) >= {"accuracy", "within_20mm", "by_position", "description"}
    assert set(metrics["multi_mask"]) == {"2", "3"}
    position = metrics["baselines"]["helix_hits"]["position_mm"]
    assert set(position) == {"median", "q68", "q95"}
    assert 0 <= position["median"] <= position["q68"] <= position["q95"]


def test_metric_values_are_consistent(masked_report):
    _, metrics = masked_report
    mm = metrics["masked_module"]
    assert 0 <= mm["accuracy"] <= mm["top5_accuracy"] <= 1
    assert mm["within_20mm"] <= mm["within_100mm"]


def test_baselines_find_the_toy_modules_and_a_random_model_does_not(masked_report):
    _, metrics = masked_report
    # helix_hits uses what the model never sees, and says so
    assert "REFERENCE" in metrics["baselines"]["helix_hits"]["description"]
    assert (
        "BASELINE that models seeing hit positions must beat"
        in (metrics["baselines"]["helix_hits"]["description"])
    )
    assert "CENTRES" in metrics["baselines"]["helix"]["description"]
    # the helix finds most hidden modules of the toy tracks, from centres too; a random model does not
    assert (
        metrics["baselines"]["helix_hits"]["accuracy"] > 0.6 > metrics["masked_module"]["accuracy"]
    )
    assert metrics["baselines"]["helix"]["accuracy"] > 0.5


def test_report_md_shows_the_headline_and_never_beats_a_reference(masked_report):
    out, metrics = masked_report
    report = (out / "report.md").read_text()
    assert "`helix_hits` is a reference for this model, not a baseline" in report
    assert "Position: `helix_hits` puts the hidden hit" in report
    assert "best baseline (`helix_hits`)" not in report
    assert "Protocol: masked" in report and headline_table(metrics) in report


def test_headline_table_has_the_model_and_every_baseline(masked_report):
    _, metrics = masked_report
    table = headline_table(metrics)
    assert table.count("\n| ") == 7  # header, model and five baselines
    assert "| helix_hits (reference: measured hits) |" in table
    assert "| mean distance [mm] | 90% quantile [mm] |" in table
    assert metrics["model_inputs"] == "tokens"
    # for a model that reads the hit positions, helix_hits is a baseline like the others
    hits = {**metrics, "model_inputs": "hits"}
    assert "| helix_hits |" in headline_table(hits)
    assert "`helix_hits` is the baseline this model must beat" in report_markdown(hits, {})


def test_plots_and_manifest_are_written(masked_report):
    out, _ = masked_report
    for name in PNGS:
        assert (out / name).stat().st_size > 1000, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and "metrics.json" in manifest["files"]


def test_an_existing_report_is_not_overwritten(toy_run, masked_report):
    _, data, model = toy_run
    out, _ = masked_report
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


# ----------------------------------------------------------------------------- masked inference
@pytest.fixture(scope="module")
def special_loving_model(toy_run):
    """The toy model with its masked-module head pushed hard towards the special tokens."""
    _, data, model_dir = toy_run
    model = TrackingBert.from_pretrained(model_dir)
    with torch.no_grad():
        model.mlm_head.bias[: model.vocab.num_special] += 1e4
    encoded = _toy_pairs(open_dataset(data))
    return model, encoded


def _toy_pairs(dataset):
    tracks = dataset.split("test").take(slice(None))
    tokens, lengths = tracks.tokens.astype(np.int64), tracks.lengths.astype(np.int64)
    partner = pair_partners(tracks.event_id, 0)
    width = 2 * tracks.max_length + 3
    return encode_pairs(tokens, lengths, tokens[partner], lengths[partner], dataset.vocab, width)


def _masked_middle(model, encoded):
    hit = (encoded.offset_b - encoded.offset_a - 2)[:, None] // 2  # middle hit of track A
    rows = np.arange(len(hit))[:, None]
    true = encoded.input_ids[rows, encoded.offset_a[:, None] + hit]
    return mask_inputs(encoded, "A", hit, true, model.vocab.mask_id, "masked")


def test_masked_predictions_are_modules_even_when_special_tokens_score_highest(
    special_loving_model,
):
    model, encoded = special_loving_model
    num_special = model.vocab.num_special
    input_ids, labels = _masked_middle(model, encoded)
    ranked = predict_masked_modules(
        model, input_ids, encoded.token_type_ids, encoded.attention_mask, labels, num_special,
        k=5, batch_size=7,
    )  # fmt: skip
    assert ranked.shape == (int((labels != IGNORE_INDEX).sum()), 5)
    assert ranked.min() >= num_special
    # the same ranking as scoring the module columns only (the former way)
    with torch.no_grad():
        out = model(
            torch.as_tensor(input_ids),
            torch.as_tensor(encoded.token_type_ids),
            torch.as_tensor(encoded.attention_mask),
            labels=torch.as_tensor(labels),
        )
    sliced = out.mlm_logits[:, num_special:].topk(5, dim=1).indices.numpy() + num_special
    np.testing.assert_array_equal(ranked, sliced)


def test_masked_module_logits_batches_like_one_pass_and_excludes_specials(special_loving_model):
    model, encoded = special_loving_model
    num_special = model.vocab.num_special
    input_ids, labels = _masked_middle(model, encoded)
    positions = np.argwhere(labels != IGNORE_INDEX)

    def log_probabilities(logits, _):
        return logits.log_softmax(dim=-1)

    args = (input_ids, encoded.token_type_ids, encoded.attention_mask, positions, num_special)
    batched = masked_module_logits(model, *args, log_probabilities, batch_size=5)
    whole = masked_module_logits(model, *args, log_probabilities, batch_size=len(input_ids))
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(batched[:, :num_special]))  # special tokens get no probability
    np.testing.assert_allclose(np.exp(batched).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="sorted"):
        masked_module_logits(
            model, *args[:3], positions[::-1], num_special, log_probabilities, batch_size=5
        )


def test_pair_logits_are_the_pair_head_on_clean_pairs(special_loving_model):
    model, encoded = special_loving_model
    logits = predict_pair_logits(
        model, encoded.input_ids, encoded.token_type_ids, encoded.attention_mask, batch_size=4
    )
    with torch.no_grad():
        expected = model(
            torch.as_tensor(encoded.input_ids),
            torch.as_tensor(encoded.token_type_ids),
            torch.as_tensor(encoded.attention_mask),
        ).pair_logits.numpy()
    assert logits.shape == (len(encoded.input_ids),)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_every_report_scores_the_pair_baselines(masked_report):
    out, metrics = masked_report
    baselines = metrics["pair_pt"]["baselines"]
    assert list(baselines) == ["lookup", "regression", "circle", "circle_hits"]
    for block in baselines.values():
        assert 0.0 <= block["accuracy"] <= 1.0 and 0.0 <= block["auc"] <= 1.0
    # the measured hits order pT well (the toy events are simulated helices in 2 T)
    assert baselines["circle_hits"]["accuracy"] > 0.8
    assert baselines["circle_hits"]["auc"] > baselines["circle"]["auc"]
    assert "| circle_hits: circle through the beam line" in (out / "report.md").read_text()
