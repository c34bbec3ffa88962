"""Baselines of the pair task (is pT(B) > pT(A)?), scored on the evaluation's own pairs.

Each baseline estimates every track's pT and answers ``pT(B) > pT(A)``; its score for the ROC AUC
is ``log pT(B) - log pT(A)``:

* ``lookup``: the mean log pT of the training tracks with the same module-sequence key, the
  whole track (most held-out tracks have exact twins among a few hundred events' training
  tracks), backing off to the (first, second, last) module, (first, last), the first module and
  the mean of all training tracks (the information a module-token model has);
* ``regression``: a small network fitted to the training tracks, log pT from all the module
  centres of a track (``tracklm.evaluate.pt_regression``; the same information, and the best
  module-only estimate found so far);
* ``circle``: a circle in x-y through the beam line and the module centres (the same
  information; 82% low at the median, but the order of two tracks is what is scored here);
* ``circle_hits``: the same circle through the measured hit positions (a reference for a
  module-token model, the baseline of a model that reads the hits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tracklm.evaluate import metrics as M
from tracklm.evaluate.contexts import row_keys
from tracklm.evaluate.pt_regression import regression_estimates
from tracklm.io.dataset import TrackArrays
from tracklm.tracking.helix import beam_line_circle

PAIR_BASELINE_TEXT = {
    "lookup": "mean log pT of training tracks with the same modules (the whole track), backing "
    "off to the same (first, second, last) module, (first, last), first, and all",
    "regression": "network fitted to the training tracks: log pT from the module centres' radius, "
    "z and azimuth",
    "circle": "circle through the beam line and the module centres",
    "circle_hits": "circle through the beam line and the measured hits (information a "
    "module-token model does not have)",
}


def _keys(tokens: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """(N,) int64 keys of each track, longest first: (first, second, last), (first, last), first."""
    tokens = np.asarray(tokens, dtype=np.int64)
    rows = np.arange(len(tokens))
    first, second = tokens[:, 0], tokens[:, min(1, tokens.shape[1] - 1)]
    last = tokens[rows, np.maximum(np.asarray(lengths, dtype=np.int64) - 1, 0)]
    base = np.int64(1 << 20)  # token ids are far below a million
    return [(first * base + second) * base + last, first * base + last, first]


def lookup_log_pt(train: TrackArrays, tracks: TrackArrays) -> np.ndarray:
    """(N,) mean log pT of the training tracks sharing each track's longest known key."""
    log_pt = np.log(np.asarray(train.pt, dtype=np.float64))
    return lookup_mean(train.tokens, train.lengths, log_pt, tracks.tokens, tracks.lengths)


def lookup_mean(
    train_tokens: np.ndarray,
    train_lengths: np.ndarray,
    values: np.ndarray,
    tokens: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """(N,) mean of the training tracks' ``values`` over those sharing each track's longest
    known key: the whole track (every module, in order), then the (first, second, last) module,
    (first, last), first, then all."""
    values = np.asarray(values, dtype=np.float64)
    estimate = np.full(len(tokens), float(np.mean(values)) if len(values) else 0.0)
    known = np.zeros(len(tokens), dtype=bool)
    whole = whole_track_keys(train_tokens, train_lengths, tokens, lengths)
    for train_key, key in zip(
        [whole[0], *_keys(train_tokens, train_lengths)],
        [whole[1], *_keys(tokens, lengths)],
        strict=True,
    ):
        means = pd.Series(values).groupby(train_key).mean()
        found = pd.Series(key).map(means).to_numpy(np.float64)
        take = ~known & np.isfinite(found)
        estimate[take] = found[take]
        known |= take
    return estimate


def whole_track_keys(
    train_tokens: np.ndarray, train_lengths: np.ndarray, tokens: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keys equal exactly where two tracks (training, then asked) cross the same modules in the
    same order: (N_train,) and (N,) int64."""
    width = max(np.shape(train_tokens)[1], np.shape(tokens)[1])

    def laid_out(t: np.ndarray, n: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        out = np.zeros((len(t), width), dtype=np.int64)
        out[:, : t.shape[1]] = t
        return np.where(np.arange(width)[None, :] < np.asarray(n)[:, None], out, 0)

    keys = row_keys(
        np.concatenate([laid_out(train_tokens, train_lengths), laid_out(tokens, lengths)])
    )
    return keys[: len(train_tokens)], keys[len(train_tokens) :]


def circle_log_pt(points_mm: np.ndarray, lengths: np.ndarray, b_field_t: float) -> np.ndarray:
    """(N,) log pT of the circle through the beam line and each track's points (N, L, 3) mm."""
    points = np.asarray(points_mm, dtype=np.float64)
    used = np.arange(points.shape[1])[None, :] < np.asarray(lengths)[:, None]
    used &= np.isfinite(points).all(axis=-1)
    pt = beam_line_circle(np.nan_to_num(points), used, b_field_t)["pt_gev"]
    return np.log(np.clip(np.asarray(pt, dtype=np.float64), 1e-6, 1e6))


def pair_baselines(
    tracks: TrackArrays,
    partner: np.ndarray,
    labels: np.ndarray,
    train: TrackArrays | None,
    centres_mm: np.ndarray,
    b_field_t: float,
) -> dict[str, dict[str, Any]]:
    """Accuracy and ROC AUC of every pair baseline on the pairs (track i, track ``partner[i]``).

    Parameters
    ----------
    tracks : the N evaluated tracks (track A of pair i is track i).
    partner : (N,) index of track B of each pair.
    labels : (N,) bool, pT(B) > pT(A).
    train : the tracks the lookup counts on and the regression is fitted to (None: neither).
    centres_mm : (V, 3) module centre of every token id.
    b_field_t : the field the events were made with, tesla.

    Returns
    -------
    name -> {"accuracy", "auc", "description"}.
    """
    tokens = np.asarray(tracks.tokens, dtype=np.int64)
    lengths = np.asarray(tracks.lengths, dtype=np.int64)
    centres = centres_mm[np.clip(tokens, 0, len(centres_mm) - 1)]
    estimates = {
        "circle": circle_log_pt(centres, lengths, b_field_t),
        "circle_hits": circle_log_pt(np.asarray(tracks.hits), lengths, b_field_t),
    }
    if train is not None and len(train):
        fitted, _ = regression_estimates(
            train.tokens, train.lengths, np.log(np.asarray(train.pt, dtype=np.float64)), None,
            tokens, lengths, centres_mm,
        )  # fmt: skip
        estimates = {"lookup": lookup_log_pt(train, tracks), "regression": fitted, **estimates}
    out = {}
    for name, log_pt in estimates.items():
        score = log_pt[partner] - log_pt
        out[name] = {
            "accuracy": M.binary_accuracy(score, labels),
            "auc": M.roc_auc(score, labels),
            "description": PAIR_BASELINE_TEXT[name],
        }
    return out
