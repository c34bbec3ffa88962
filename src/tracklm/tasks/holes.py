"""Hole detection: has a track lost a hit between its first and last hit, where, and on which module?

Examples (from truth): tracks with at least 4 hits and at least one interior hit that is the only
hit on its layer (so that removing it leaves a crossed layer without a hit, a hole in the usual
sense; removing one of two overlapping hits on a layer would not). Half of them (seeded) lose one
such hit, chosen uniformly; the others lose their last hit, so both classes have the same length
distribution and length says nothing. Labels: ``has_hole`` (0/1), ``gap`` p (the hole lies between
hits p - 1 and p of the shortened track, 1 <= p <= n - 1; -1 without a hole), ``hole_module`` (token
of the removed hit; -1 without a hole).

The removed hit's position goes with it: the model's ``hits`` input (``inputs: hits``) holds the
positions of the remaining hits only.

Natural holes (detector inefficiency) and tracks already missing a hit are not labelled; they are
rare in the pixel selection and count against every method alike.

* Model head: a track logit on ``[CLS]`` (a causal model: on its last token); a logit per gap
  from the two hit states on either side; module scores at the true gap from those two states through a decoder tied to the token
  embeddings.
* Zero-shot: insert ``[MASK]`` in each gap in turn; the masked-module head's probability that the
  missing hit lies on a layer other than those of the two neighbouring hits scores the gap (a gap
  with no hole can hold at most an overlap hit on a neighbour's layer). Track score = best gap.
  The inserted ``[MASK]`` carries no position.
* Baseline: a helix through the remaining module centres; every layer the helix crosses between
  the first and last hit (within the layer's modules) that carries no hit is a hole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.evaluate.metrics import (
    exact_accuracy,
    fraction_within,
    module_distance_mm,
    top_k_accuracy,
)
from tracklm.io.dataset import TrackArrays
from tracklm.models.bert import TrackingBert
from tracklm.tasks.common import (
    ABSENT,
    Examples,
    TaskContext,
    TaskSpec,
    delete_hit,
    encode_batch,
    hits_of,
    insert_token,
    masked_module_logits_at,
    module_decoder,
    module_logits_only,
    random_choice_where,
    single_inputs,
    top_k_modules,
    track_classifier,
    track_mask,
)
from tracklm.tasks.metrics import detection_metrics
from tracklm.tracking.helix import fit_helix

MIN_HITS = 4
TOP_K = 5


def make_examples(tracks: TrackArrays, context: TaskContext, rng: np.random.Generator) -> Examples:
    """Hole examples from tracks (see the module docstring)."""
    tokens = np.asarray(tracks.tokens, dtype=np.int64)
    lengths = np.asarray(tracks.lengths, dtype=np.int64)
    width = tokens.shape[1]
    real = track_mask(lengths, width)
    layer = np.where(real, context.layer_of(tokens), -1)
    on_own_layer = ((layer[:, :, None] == layer[:, None, :]) & real[:, None, :]).sum(axis=2) == 1
    j = np.arange(width)[None, :]
    interior = (j >= 1) & (j <= lengths[:, None] - 2)
    eligible = real & interior & on_own_layer & (lengths[:, None] >= MIN_HITS)
    keep = eligible.any(axis=1)
    tokens, lengths, eligible = tokens[keep], lengths[keep], eligible[keep]
    hits = hits_of(tracks, keep)

    n = len(lengths)
    has_hole = rng.random(n) < 0.5
    hole_at = random_choice_where(eligible, rng)
    removed = np.where(has_hole, hole_at, lengths - 1)
    removed_token = tokens[np.arange(n), removed]
    shortened = delete_hit(tokens, removed, context.vocab.pad_id)
    short_hits = delete_hit(hits, removed, np.nan)  # the removed hit's position goes too
    short_lengths = lengths - 1
    return Examples(
        tokens=shortened,
        lengths=short_lengths,
        inputs=single_inputs(shortened, short_lengths, context.vocab, width + 1, short_hits),
        labels={
            "has_hole": has_hole.astype(np.float32),
            "gap": np.where(has_hole, removed, ABSENT).astype(np.int64),
            "hole_module": np.where(has_hole, removed_token, ABSENT).astype(np.int64),
        },
        hits=short_hits,
    )


class HoleHead(nn.Module):
    """Track logit, per-gap logits and module scores at a gap (see the module docstring)."""

    def __init__(self, encoder: TrackingBert) -> None:
        super().__init__()
        hidden_size = encoder.config.hidden_size
        self.num_special = encoder.vocab.num_special if encoder.vocab is not None else 0
        self.detect = track_classifier(encoder, 1)
        self.locate = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 1)
        )
        self.module = module_decoder(encoder, in_features=2 * hidden_size)


def make_head(encoder: TrackingBert) -> HoleHead:
    return HoleHead(encoder)


def forward(encoder: TrackingBert, head: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    assert isinstance(head, HoleHead)
    hidden = encode_batch(encoder, batch)  # (b, w, d)
    n_hits = batch["attention_mask"].sum(dim=1) - 2  # (b,)
    # Gap p (1 <= p <= n - 1) lies between hit p - 1 (input position p) and hit p (position p + 1).
    pairs = torch.cat([hidden[:, 1:-1], hidden[:, 2:]], dim=-1)  # (b, w - 2, 2d)
    gap = torch.arange(1, pairs.shape[1] + 1, device=hidden.device)[None, :]
    gap_logits = head.locate(pairs).squeeze(-1).masked_fill(gap >= n_hits[:, None], float("-inf"))
    positive = batch["gap"] >= 0
    rows = positive.nonzero().squeeze(1)
    at_gap = pairs[rows, batch["gap"][rows] - 1]  # (k, 2d)
    module_logits = head.module(at_gap, encoder.decoder_table())  # (k, v)
    return {
        "hole_logit": head.detect.classify(encoder.summary(hidden, batch["attention_mask"])),
        "gap_logits": gap_logits,
        "module_logits": module_logits_only(module_logits, head.num_special),
        "positive": positive,
    }


def loss(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    total = F.binary_cross_entropy_with_logits(outputs["hole_logit"], batch["has_hole"])
    positive = outputs["positive"]
    if bool(positive.any()):
        total = total + F.cross_entropy(outputs["gap_logits"][positive], batch["gap"][positive] - 1)
        total = total + F.cross_entropy(outputs["module_logits"], batch["hole_module"][positive])
    return total


def predict(outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    positive = outputs["positive"].cpu().numpy()
    top = outputs["module_logits"].topk(TOP_K, dim=-1).indices.cpu().numpy()
    module_top = np.full((len(positive), TOP_K), ABSENT, dtype=np.int64)
    module_top[positive] = top
    return {
        "hole_score": outputs["hole_logit"].float().cpu().numpy(),
        "gap": (outputs["gap_logits"].argmax(dim=1) + 1).cpu().numpy(),
        "module_top": module_top,
    }


def metrics(
    predictions: dict[str, np.ndarray], examples: Examples, context: TaskContext
) -> dict[str, Any]:
    """Detection AUC and efficiencies; gap and module accuracy on the tracks with a hole.

    ``module_*`` are conditional on the true gap (which module is missing there).
    """
    has = examples.labels["has_hole"] > 0.5
    out: dict[str, Any] = {"n_tracks": len(has), "n_holes": int(has.sum())}
    out.update(detection_metrics(predictions["hole_score"], has))
    out["position_accuracy"] = exact_accuracy(predictions["gap"][has], examples.labels["gap"][has])
    top = predictions["module_top"][has]
    truth = examples.labels["hole_module"][has]
    out["module_accuracy"] = exact_accuracy(top[:, 0], truth)
    out["module_top5_accuracy"] = top_k_accuracy(top, truth, TOP_K)
    distance = module_distance_mm(top[:, 0], truth, context.centres_mm)
    out["module_within_20mm"] = fraction_within(distance, 20.0)
    return out


def zero_shot(
    encoder: TrackingBert, examples: Examples, context: TaskContext, batch_size: int
) -> dict[str, np.ndarray]:
    """Pre-trained masked-module head with ``[MASK]`` inserted in each gap (module docstring)."""
    vocab = context.vocab
    tokens, lengths = examples.tokens, examples.lengths
    n, width = tokens.shape
    layer = context.layer_of(tokens)
    n_layers = len(context.surfaces)
    device = next(encoder.parameters()).device
    # (v, y + 1) one-hot of each token's layer; the last column collects special tokens.
    token_layer = torch.as_tensor(context.surfaces.layer_of_token, device=device)
    layer_onehot = F.one_hot(
        torch.where(token_layer >= 0, token_layer, n_layers), n_layers + 1
    ).float()

    rows, gaps = np.nonzero(np.arange(1, width)[None, :] < lengths[:, None])
    gaps = gaps + 1  # candidate gap p = 1 ... n - 1
    with_mask = insert_token(tokens[rows], gaps, vocab.mask_id)
    inputs = single_inputs(
        with_mask, lengths[rows] + 1, vocab, width + 2, _hits_with_mask(examples, rows, gaps)
    )

    def layer_mass(logits: Tensor, _: slice) -> Tensor:
        return logits.softmax(dim=-1) @ layer_onehot  # (b, y + 1), over modules only

    mass = masked_module_logits_at(
        encoder, inputs, 1 + gaps, vocab.num_special, batch_size, layer_mass
    ).reshape(-1, n_layers + 1)
    left, right = layer[rows, gaps - 1], layer[rows, gaps]
    pick = np.arange(len(rows))
    elsewhere = 1.0 - mass[pick, left] - np.where(right != left, mass[pick, right], 0.0)
    gap_score = np.full((n, width), -np.inf)
    gap_score[rows, gaps] = elsewhere
    hole_score = gap_score.max(axis=1)
    predicted_gap = gap_score.argmax(axis=1)

    module_top = np.full((n, TOP_K), ABSENT, dtype=np.int64)
    positive = np.flatnonzero(examples.labels["gap"] >= 0)
    if positive.size:
        true_gap = examples.labels["gap"][positive]
        at_true = insert_token(tokens[positive], true_gap, vocab.mask_id)
        true_hits = _hits_with_mask(examples, positive, true_gap)
        true_inputs = single_inputs(at_true, lengths[positive] + 1, vocab, width + 2, true_hits)
        module_top[positive] = masked_module_logits_at(
            encoder,
            true_inputs,
            1 + true_gap,
            vocab.num_special,
            batch_size,
            lambda logits, _: top_k_modules(logits, TOP_K),
        ).reshape(-1, TOP_K)
    return {"hole_score": hole_score, "gap": predicted_gap, "module_top": module_top}


def _hits_with_mask(examples: Examples, rows: np.ndarray, gaps: np.ndarray) -> np.ndarray | None:
    """(r, L + 1, 3) positions of tracks ``rows`` with a position-less ``[MASK]`` at ``gaps``."""
    if examples.hits is None:
        return None
    return insert_token(examples.hits[rows], gaps, np.nan)


def baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """Helix through the module centres; crossed layers without a hit are holes (module docstring).

    The score is the number of such layers; the predicted gap is where the first lies; the module
    prediction at the true gap (for tracks with a hole) is the nearest modules to the crossing of
    a hit-less layer inside that gap (none if the helix finds no hole there).
    """
    tokens, lengths = examples.tokens, examples.lengths
    n, width = tokens.shape
    rows = np.arange(n)
    real = track_mask(lengths, width)
    fit = fit_helix(np.nan_to_num(context.centres_of(tokens)), real)
    s_hits = np.where(real, fit.s_mm, np.inf)
    s_first, s_last = s_hits[:, 0], s_hits[rows, lengths - 1]
    track_layers = np.where(real, context.layer_of(tokens), -1)
    true_gap = examples.labels["gap"]
    has_gap = true_gap >= 0
    gap_lo = np.where(has_gap, s_hits[rows, np.clip(true_gap - 1, 0, None)], np.nan)
    gap_hi = np.where(has_gap, s_hits[rows, np.clip(true_gap, 0, None)], np.nan)

    surfaces = context.surfaces
    count = np.zeros(n)
    first_s = np.full(n, np.inf)
    in_true_gap_s = np.full(n, np.inf)
    in_true_gap_xyz = np.zeros((n, 3))
    in_true_gap_layer = np.full(n, -1)
    for y in range(len(surfaces)):
        layer = np.full(n, y)
        xyz, s, crosses = surfaces.intersect(fit, layer, s_first, s_last)
        on_layer = crosses & surfaces.covers(layer, xyz)
        missing = on_layer & (s > s_first) & (s < s_last) & ~np.any(track_layers == y, axis=1)
        count += missing
        first_s = np.where(missing & (s < first_s), s, first_s)
        # Inside the true gap: keep the crossing nearest the gap's middle.
        middle = 0.5 * (gap_lo + gap_hi)
        inside = missing & has_gap & (s > gap_lo) & (s < gap_hi)
        better = inside & (np.abs(s - middle) < np.abs(in_true_gap_s - middle))
        in_true_gap_s = np.where(better, s, in_true_gap_s)
        in_true_gap_xyz = np.where(better[:, None], xyz, in_true_gap_xyz)
        in_true_gap_layer = np.where(better, y, in_true_gap_layer)
    predicted_gap = np.clip((s_hits < first_s[:, None]).sum(axis=1), 1, np.maximum(lengths - 1, 1))

    module_top = np.full((n, TOP_K), ABSENT, dtype=np.int64)
    found = in_true_gap_layer >= 0
    if found.any():
        exclude = np.where(real, tokens, -1)[found]
        module_top[found], _ = surfaces.nearest_modules(
            in_true_gap_layer[found], in_true_gap_xyz[found], k=TOP_K, exclude=exclude
        )
    return {"hole_score": count, "gap": predicted_gap, "module_top": module_top}


SPEC = TaskSpec(
    name="holes",
    description="is a hit missing between the first and last hit, in which gap, on which module",
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
