"""Outlier detection: has one hit of a track been replaced by a wrong one nearby, and which?

Examples (from truth): tracks with at least 4 hits. Half of them (seeded) get one hit, chosen
uniformly, replaced by a module on the same layer among the ``NEARBY`` modules whose centres are
nearest to the true module (never a module the track already crosses): the wrong hit a track
finder picks up from a neighbouring track. Labels: ``has_outlier`` (0/1), ``position`` (index of
the replaced hit, -1 without), ``original`` (the true module token, -1 without).

Positions (read by an ``inputs: hits`` model): every hit shows its measured position, the
outlier too, as a hit of the wrong module: the true hit's local (u, v, w) moved onto the
replacement module's frame (clipped to its outline), so it lies where a hit of that module
can lie, at the same place in it as the true hit in its own. (NaN there would give the outlier
away; the true position would contradict the module the task claims.)

* Model head: a track logit on ``[CLS]`` (a causal model: on its last token) and a logit per
  hit.
* Zero-shot: mask each hit in turn; the pre-trained masked-module head's log-probability of the
  observed module given the others. The least probable hit is the outlier candidate and its
  negative log-probability the track score. The masked hit shows no position.
* Baseline: leave-one-out helix residuals: fit a helix through the other module centres, cross
  the hit's layer between its neighbours, and measure how much farther the hit's module centre is
  from that crossing than the layer's nearest module centre (mm). The largest residual is the
  candidate and the track score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.evaluate.metrics import exact_accuracy
from tracklm.io.dataset import TrackArrays
from tracklm.models.bert import TrackingBert
from tracklm.tasks.common import (
    ABSENT,
    Examples,
    TaskContext,
    TaskSpec,
    each_hit_masked_log_probs,
    encode_batch,
    hits_of,
    random_choice_where,
    single_inputs,
    track_classifier,
    track_mask,
    tracks_with_min_hits,
)
from tracklm.tasks.metrics import detection_metrics
from tracklm.tracking.helix import fit_helix

MIN_HITS = 4
NEARBY = 4


def make_examples(tracks: TrackArrays, context: TaskContext, rng: np.random.Generator) -> Examples:
    """Outlier examples from tracks (see the module docstring)."""
    tokens, lengths = tracks_with_min_hits(tracks, MIN_HITS)
    n, width = tokens.shape
    rows = np.arange(n)
    real = track_mask(lengths, width)

    position = np.minimum((rng.random(n) * lengths).astype(np.int64), lengths - 1)
    original = tokens[rows, position]
    candidates, _ = context.surfaces.nearest_modules(
        context.layer_of(original),
        context.centres_of(original),
        k=NEARBY,
        exclude=np.where(real, tokens, -1),
    )
    choice = random_choice_where(candidates >= 0, rng)
    has_outlier = (rng.random(n) < 0.5) & (choice >= 0)
    replacement = candidates[rows, np.clip(choice, 0, None)]
    changed = tokens.copy()
    changed[rows[has_outlier], position[has_outlier]] = replacement[has_outlier]
    hits = hits_of(tracks, np.asarray(tracks.lengths) >= MIN_HITS)
    at = (rows[has_outlier], position[has_outlier])
    hits[at] = moved_hit_mm(context, original[has_outlier], replacement[has_outlier], hits[at])
    return Examples(
        tokens=changed,
        lengths=lengths,
        inputs=single_inputs(changed, lengths, context.vocab, width + 2, hits),
        labels={
            "has_outlier": has_outlier.astype(np.float32),
            "position": np.where(has_outlier, position, ABSENT).astype(np.int64),
            "original": np.where(has_outlier, original, ABSENT).astype(np.int64),
        },
        hits=hits,
    )


def moved_hit_mm(
    context: TaskContext, original: np.ndarray, replacement: np.ndarray, xyz_mm: np.ndarray
) -> np.ndarray:
    """(k, 3) positions in mm of hits (k, 3) of modules ``original`` (k,) moved onto modules
    ``replacement`` (k,): the same local (u, v, w), clipped to the replacement's outline.

    Without frames (``context.frames`` None) the hit moves by the difference of the centres.
    """
    frames = context.frames
    if frames is None:
        shift = context.centres_of(replacement) - context.centres_of(original)
        return (xyz_mm + shift).astype(np.float32)
    local = frames.to_local(original, xyz_mm)  # (k, 3) mm
    hv = frames.hv[replacement]
    v = np.clip(local[:, 1], -hv, hv)
    half_u = frames.half_width(replacement, v)
    u = np.clip(local[:, 0], -half_u, half_u)
    moved = frames.to_global(replacement, np.stack([u, v, local[:, 2]], axis=1))
    return moved.astype(np.float32)


class OutlierHead(nn.Module):
    """Track logit on ``[CLS]`` and one logit per hit state."""

    def __init__(self, encoder: TrackingBert) -> None:
        super().__init__()
        hidden_size = encoder.config.hidden_size
        self.detect = track_classifier(encoder, 1)
        self.locate = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 1)
        )


def make_head(encoder: TrackingBert) -> OutlierHead:
    return OutlierHead(encoder)


def forward(encoder: TrackingBert, head: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    assert isinstance(head, OutlierHead)
    hidden = encode_batch(encoder, batch)  # (b, w, d)
    n_hits = batch["attention_mask"].sum(dim=1) - 2
    hit = torch.arange(hidden.shape[1] - 2, device=hidden.device)[None, :]
    hit_logits = head.locate(hidden[:, 1:-1]).squeeze(-1)  # hit k at input position 1 + k
    return {
        "outlier_logit": head.detect.classify(encoder.summary(hidden, batch["attention_mask"])),
        "hit_logits": hit_logits.masked_fill(hit >= n_hits[:, None], float("-inf")),
    }


def loss(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    total = F.binary_cross_entropy_with_logits(outputs["outlier_logit"], batch["has_outlier"])
    positive = batch["position"] >= 0
    if bool(positive.any()):
        total = total + F.cross_entropy(
            outputs["hit_logits"][positive], batch["position"][positive]
        )
    return total


def predict(outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {
        "outlier_score": outputs["outlier_logit"].float().cpu().numpy(),
        "position": outputs["hit_logits"].argmax(dim=1).cpu().numpy(),
    }


def metrics(
    predictions: dict[str, np.ndarray], examples: Examples, context: TaskContext
) -> dict[str, Any]:
    """Detection AUC and efficiencies; accuracy of the outlier's position on tracks that have one."""
    has = examples.labels["has_outlier"] > 0.5
    out: dict[str, Any] = {"n_tracks": len(has), "n_outliers": int(has.sum())}
    out.update(detection_metrics(predictions["outlier_score"], has))
    out["position_accuracy"] = exact_accuracy(
        predictions["position"][has], examples.labels["position"][has]
    )
    return out


def zero_shot(
    encoder: TrackingBert, examples: Examples, context: TaskContext, batch_size: int
) -> dict[str, np.ndarray]:
    """Mask each hit in turn; least probable observed module = outlier (module docstring)."""
    log_p = each_hit_masked_log_probs(encoder, examples, context.vocab, batch_size)
    surprise = np.where(np.isnan(log_p), -np.inf, -log_p)
    return {"outlier_score": surprise.max(axis=1), "position": surprise.argmax(axis=1)}


def helix_residuals_mm(tokens: np.ndarray, lengths: np.ndarray, context: TaskContext) -> np.ndarray:
    """Leave-one-out helix residual of every hit, in mm (-inf on padding).

    For hit k: a helix through the other module centres, crossed with hit k's layer between its
    neighbours' arc lengths. The residual is how much farther hit k's module centre lies from the
    crossing than the nearest module centre of that layer does (0 when the helix points at hit
    k's own module): module centres are coarse (a pixel module is 17 x 72 mm), so the raw
    distance would mostly measure where the crossing falls inside a module.
    """
    n, width = tokens.shape
    rows = np.arange(n)
    real = track_mask(lengths, width)
    centres = np.nan_to_num(context.centres_of(tokens))
    layer = np.where(real, context.layer_of(tokens), 0)
    # The beam line (origin) leads every fit: it steadies circles through a few coarse centres.
    points = np.concatenate([np.zeros((n, 1, 3)), centres], axis=1)
    residual = np.full((n, width), -np.inf)
    for k in range(width):
        has = real[:, k]
        if not has.any():
            continue
        others = np.concatenate([np.ones((n, 1), dtype=bool), real], axis=1)
        others[:, k + 1] = False
        fit = fit_helix(points, others)
        s = fit.s_mm  # column 0 is the beam line, column k + 1 hit k
        s_lo = s[:, k]
        s_hi = np.where(k + 1 < lengths, s[:, min(k + 2, width)], np.inf)
        s_lo, s_hi = np.where(np.isnan(s_lo), -np.inf, s_lo), np.where(np.isnan(s_hi), np.inf, s_hi)
        xyz, _, _ = context.surfaces.intersect(fit, layer[:, k], s_lo, s_hi)
        _, nearest = context.surfaces.nearest_modules(layer[:, k], xyz, k=1)
        excess = np.linalg.norm(xyz - centres[rows, k], axis=1) - nearest[:, 0]
        residual[:, k] = np.where(has, excess, -np.inf)
    return residual


def baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """Largest leave-one-out helix residual (module docstring)."""
    residual = helix_residuals_mm(examples.tokens, examples.lengths, context)
    return {"outlier_score": residual.max(axis=1), "position": residual.argmax(axis=1)}


SPEC = TaskSpec(
    name="outliers",
    description="has one hit been replaced by a nearby module on the same layer, and which",
    make_examples=make_examples,
    make_head=make_head,
    forward=forward,
    loss=loss,
    predict=predict,
    metrics=metrics,
    baseline=baseline,
    zero_shot=zero_shot,
    headline="auc",
)
