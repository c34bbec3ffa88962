"""A small classifier that tries to tell generated tracks from simulated ones (CaloChallenge's
test): its ROC AUC on held-out tracks is 0.5 when the two samples are indistinguishable.

Features per track (``track_features``): the physics observables of
``tracklm.generate.judge.track_observables`` (log pT), the number of layers with two or more
modules, the largest helix pulls and the largest backward step of ``fit_tracks``; and for every
hit slot (in order) whether it is present, its layer (one-hot), r, z and its azimuth relative to
the first hit (the first hit's azimuth as cos and sin).

Classifier: a two-layer perceptron (torch) trained with two-fold cross-fitting: trained on one
half of both samples, it scores the other half, and the other way round; the AUC is over all
held-out scores, so every track is scored once by a model that never saw it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tracklm.evaluate.metrics import roc_auc
from tracklm.generate.judge import TrackFits, fit_tracks, track_observables
from tracklm.tasks.common import TaskContext

__all__ = ["classifier_auc", "track_features"]

_PER_TRACK = (
    "hits_per_track",
    "holes_per_track",
    "first_r_mm",
    "first_z_mm",
    "last_r_mm",
    "last_z_mm",
    "eta",
    "d0_mm",
    "z0_mm",
)


def _overlap_layers(fits: TrackFits, n_layers: int) -> np.ndarray:
    """(N,) number of layers on which a track has two or more hits."""
    onehot = fits.layers[..., None] == np.arange(n_layers)  # (N, L, Y)
    counts: np.ndarray = (onehot.sum(axis=1) >= 2).sum(axis=1)
    return counts


def track_features(
    tokens: np.ndarray,
    lengths: np.ndarray,
    context: TaskContext,
    positions_mm: np.ndarray | None = None,
) -> np.ndarray:
    """(N, F) float32 features of N tracks for the classifier (module docstring).

    Parameters
    ----------
    tokens : (N, L) int module token ids, ``[PAD]`` after each track's end.
    lengths : (N,) int number of hits.
    context : the dataset's ``TaskContext``.
    positions_mm : optional (N, L, 3) hit positions in mm (else module centres).
    """
    fits = fit_tracks(tokens, lengths, context, positions_mm)
    observables = track_observables(tokens, lengths, context, fits=fits)
    n_layers = len(context.surfaces)
    s = np.nan_to_num(fits.helix.s_mm)
    steps = np.where(fits.used[:, 1:], s[:, 1:] - s[:, :-1], 0.0)
    scalars = [observables[name] for name in _PER_TRACK]
    scalars += [
        np.log(np.clip(observables["pt_gev"], 1e-3, 1e3)),
        _overlap_layers(fits, n_layers),
        np.log1p(np.abs(fits.transverse_pull).max(axis=1, initial=0.0)),
        np.log1p(np.abs(fits.z_pull).max(axis=1, initial=0.0)),
        np.clip(steps.min(axis=1, initial=0.0), -500.0, 0.0),
    ]
    points, used = fits.points_mm, fits.used
    phi = np.arctan2(points[..., 1], points[..., 0])
    relative_phi = np.where(used, np.pi - np.mod(np.pi - (phi - phi[:, :1]), 2.0 * np.pi), 0.0)
    per_hit = [
        used.astype(np.float64),
        np.hypot(points[..., 0], points[..., 1]),
        points[..., 2],
        relative_phi,
    ]
    layer_onehot = (fits.layers[..., None] == np.arange(n_layers)).reshape(len(fits), -1)
    columns = np.concatenate(
        [
            np.stack(scalars, axis=1),
            np.cos(phi[:, :1]),
            np.sin(phi[:, :1]),
            np.concatenate(per_hit, axis=1),
            layer_onehot,
        ],
        axis=1,
    )
    return np.nan_to_num(columns, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _train_and_score(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    epochs: int,
    hidden: int,
    generator: torch.Generator,
) -> np.ndarray:
    """Scores (logits) of ``x_test`` from a perceptron trained on ``(x_train, y_train)``."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    xt = torch.from_numpy(np.clip((x_train - mean) / std, -10, 10).astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.float32))
    model = nn.Sequential(
        nn.Linear(xt.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
    )
    model.append(nn.Linear(hidden, 1))
    with torch.no_grad():
        for parameter in model.parameters():  # seeded initialisation, global RNG untouched
            bound = 1.0 / np.sqrt(parameter.shape[-1])
            parameter.uniform_(-bound, bound, generator=generator)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    batch = 256
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch):
            index = order[start : start + batch]
            optimiser.zero_grad()
            loss_fn(model(xt[index]).squeeze(1), yt[index]).backward()
            optimiser.step()
    with torch.no_grad():
        xs = torch.from_numpy(np.clip((x_test - mean) / std, -10, 10).astype(np.float32))
        scores: np.ndarray = model(xs).squeeze(1).numpy()
    return scores


def classifier_auc(
    generated: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    context: TaskContext,
    *,
    seed: int = 0,
    generated_positions_mm: np.ndarray | None = None,
    reference_positions_mm: np.ndarray | None = None,
    epochs: int = 20,
    hidden: int = 64,
) -> float:
    """Held-out ROC AUC of a classifier telling generated from simulated tracks.

    Parameters
    ----------
    generated, reference : (tokens (N, L), lengths (N,)) of the two samples (the lengths L may
        differ; sizes may differ, the AUC does not depend on the balance).
    context : the dataset's ``TaskContext``.
    seed : seeds the split, the initialisation and the batches.
    generated_positions_mm, reference_positions_mm : optional (N, L, 3) hit positions.
    epochs, hidden : training epochs and hidden width of the perceptron.

    Returns
    -------
    AUC in [0, 1] with "generated" as the positive class: 0.5 means indistinguishable; values
    below 0.5 are sampling noise (or a classifier that learnt the wrong way round).
    """
    width = max(generated[0].shape[1], reference[0].shape[1])

    def padded(
        tokens: np.ndarray, positions: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        extra = width - tokens.shape[1]
        tokens = np.pad(np.asarray(tokens, dtype=np.int64), ((0, 0), (0, extra)))
        if positions is None:
            return tokens, None
        return tokens, np.pad(np.asarray(positions), ((0, 0), (0, extra), (0, 0)))

    gen_tokens, gen_positions = padded(generated[0], generated_positions_mm)
    ref_tokens, ref_positions = padded(reference[0], reference_positions_mm)
    x = np.concatenate(
        [
            track_features(gen_tokens, generated[1], context, gen_positions),
            track_features(ref_tokens, reference[1], context, ref_positions),
        ]
    )
    y = np.r_[np.ones(len(gen_tokens)), np.zeros(len(ref_tokens))]
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % 2
    generator = torch.Generator().manual_seed(seed)
    scores = np.zeros(len(y))
    for k in (0, 1):
        train, test = fold != k, fold == k
        scores[test] = _train_and_score(x[train], y[train], x[test], epochs, hidden, generator)
    return roc_auc(scores, y)
