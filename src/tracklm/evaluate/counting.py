"""Where the baselines count: a train split that holds none of the evaluated tracks.

The ``frequency`` baseline counts module sequences and the helix baselines learn which layer a
hidden hit sits on from training tracks. Counting on the tracks being evaluated would let them
remember the answers (on a real event prepared as all-train, ``frequency`` reached 96%). So the
counts come, in this order of preference, from

1. the train split of the dataset named with ``--baseline-data``;
2. the train split of the dataset the model was trained on (named by the run's
   ``manifest.json``, the directory above ``RUN/model``): the baselines then know what the
   model knows;
3. the evaluated dataset's own train split, when another split is evaluated.

A candidate is used only if its vocabulary is the evaluated dataset's, its train split holds
tracks, and none of its train events is an evaluated event (events are compared by the hash of
their hits file, recorded by ``prepare``, so the same event prepared twice is recognised). When
no candidate qualifies, the baselines are left out and the report says why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tracklm.errors import InputError
from tracklm.io.dataset import PreparedDataset, TrackArrays, open_dataset
from tracklm.io.trackml import event_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CountingSplit:
    """The tracks the baselines count on, or why there are none.

    Attributes
    ----------
    tracks : the train split counted on (loaded in memory), or None when the baselines are left out.
    data : the dataset directory they come from (None when left out).
    source : ``"--baseline-data"``, ``"model training data"`` or ``"evaluated dataset"``.
    reason : why the baselines are left out (None when ``tracks`` is given).
    """

    tracks: TrackArrays | None
    data: str | None
    source: str | None
    reason: str | None

    def record(self) -> dict[str, object]:
        """The ``baselines_counted_on`` block of ``metrics.json``."""
        if self.tracks is None:
            return {"left_out": True, "reason": self.reason}
        return {
            "data": self.data,
            "split": "train",
            "source": self.source,
            "n_tracks": len(self.tracks),
        }


def event_fingerprints(dataset: PreparedDataset, split: str) -> set[str]:
    """One string per event of ``split``: the sha256 of its hits file as ``prepare`` recorded it,
    or (for a manifest without file hashes) the event directory and event number."""
    inputs = dataset.manifest.get("inputs") or {}
    files = inputs.get("files") or {}
    events_dir = str(inputs.get("events", dataset.path))
    prints = set()
    for event_id in (dataset.manifest.get("events") or {}).get(split, []):
        hits = f"{event_prefix(int(event_id))}-hits.csv"
        entry = files.get(hits + ".gz") or files.get(hits)
        prints.add(entry["sha256"] if entry else f"{events_dir}#{int(event_id)}")
    return prints


def model_training_data(model: str | os.PathLike[str]) -> Path | None:
    """The dataset a model was trained on, from ``RUN/manifest.json`` beside ``RUN/model``; None
    when the model directory has no such run around it or the dataset is no longer there."""
    manifest = Path(model).parent / "manifest.json"
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("stage") != "pretrain":
        return None
    inputs = record.get("inputs") or {}
    for key in ("data_absolute", "data"):
        value = inputs.get(key)
        if isinstance(value, str) and (Path(value) / "manifest.json").is_file():
            return Path(value)
    return None


def _unusable(candidate: PreparedDataset, evaluated: PreparedDataset, split: str) -> str | None:
    """Why ``candidate``'s train split cannot be counted on for ``evaluated``'s ``split``."""
    if candidate.vocab.sha256 != evaluated.vocab.sha256:
        return f"{candidate.path}: its vocabulary differs from {evaluated.path}'s"
    if len(candidate.split("train")) == 0:
        return f"{candidate.path / 'train'}: no training tracks"
    shared = event_fingerprints(candidate, "train") & event_fingerprints(evaluated, split)
    if shared:
        return (
            f"{candidate.path / 'train'}: holds {len(shared)} of the evaluated events "
            f"({evaluated.path / split}); counting there would score the baselines on tracks they saw"
        )
    return None


def counting_split(
    dataset: PreparedDataset,
    split: str,
    model: str | os.PathLike[str],
    baseline_data: str | os.PathLike[str] | None = None,
) -> CountingSplit:
    """Choose the train split the baselines count on (see the module docstring).

    Parameters
    ----------
    dataset : the evaluated dataset; ``split`` the evaluated split.
    model : the evaluated model directory (``RUN/model``).
    baseline_data : a dataset directory given by the user; its train split must qualify, or this
        raises ``InputError``.
    """
    if baseline_data is not None:
        candidate = open_dataset(baseline_data)
        why = _unusable(candidate, dataset, split)
        if why is not None:
            raise InputError(f"--baseline-data: {why}")
        return _chosen(candidate, "--baseline-data")
    reasons = []
    trained_on = model_training_data(model)
    if trained_on is None:
        reasons.append(f"{model}: no run manifest naming its training data")
    else:
        try:
            candidate = open_dataset(trained_on)
        except InputError as exc:
            reasons.append(str(exc))
        else:
            why = _unusable(candidate, dataset, split)
            if why is None:
                return _chosen(candidate, "model training data")
            reasons.append(why)
    why = _unusable(dataset, dataset, split)
    if why is None:
        return _chosen(dataset, "evaluated dataset")
    reasons.append(why)
    reason = "no train split without the evaluated events (" + "; ".join(reasons) + ")"
    log.warning("baselines left out: %s", reason)
    return CountingSplit(tracks=None, data=None, source=None, reason=reason)


def _chosen(dataset: PreparedDataset, source: str) -> CountingSplit:
    tracks = dataset.split("train").take(slice(None))
    log.info("baselines count on %s (%s, %d tracks)", dataset.path / "train", source, len(tracks))
    return CountingSplit(tracks=tracks, data=str(dataset.path), source=source, reason=None)
