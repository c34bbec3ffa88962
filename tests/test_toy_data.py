"""The shared ``toy_data`` fixture is what the tests built on it assume."""

from __future__ import annotations

import json

import numpy as np

from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert


def test_toy_data_is_a_prepared_dataset_of_the_simulated_events(toy_events, toy_data):
    manifest = json.loads((toy_data / "manifest.json").read_text())
    dataset = open_dataset(toy_data)
    assert manifest["stage"] == "prepare" and manifest["vocab_sha256"] == dataset.vocab.sha256
    events = {}
    for split in ("train", "val", "test"):
        tracks = dataset.split(split)
        assert len(tracks) == manifest["n_tracks"][split] > 0
        # the default selection: 4 to 8 pixel hits
        assert tracks.lengths.min() >= 4 and tracks.lengths.max() <= 8
        ids, counts = np.unique(tracks.event_id, return_counts=True)
        assert counts.min() >= 2  # every event can pair its tracks (tests of pairing rely on it)
        events[split] = set(ids.tolist())
    assert not (events["train"] & events["val"] or events["train"] & events["test"])
    assert not events["val"] & events["test"]
    simulated = json.loads((toy_events / "manifest.json").read_text())
    assert simulated["stage"] == "simulate"
    assert set().union(*events.values()) <= set(range(1, simulated["config"]["events"] + 1))


def test_tiny_model_matches_the_toy_vocabulary(toy_data, tiny_model):
    model = TrackingBert.from_pretrained(tiny_model)
    model.check_vocab(open_dataset(toy_data).vocab)
    assert model.config.max_length == 2 * 8 + 3
