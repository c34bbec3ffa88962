"""Track extrapolation: from the first hits of a track, predict the next module and the one after.

Examples (from truth): tracks with at least 4 hits, cut after c hits with c uniform in
[3, n - 1] (seeded). Input: ``[CLS] h_0 ... h_{c-1} [MASK] [MASK] [SEP]``. Labels: ``next1`` (the
token of hit c), ``next2`` (hit c + 1, -1 when the track ends after hit c), ``cut`` (c). The kept
hits show their measured positions (read by an ``inputs: hits`` model); the two ``[MASK]`` show
none, and nothing of the hits after the cut reaches the input.

* Model head: module scores at the two ``[MASK]`` positions, a decoder of the same shape as the
  pre-trained masked-module head and started from its weights (random in ``scratch`` mode).
* Zero-shot: the pre-trained masked-module head at the two ``[MASK]`` positions.
* Baseline: the helix follower of track generation (``tracklm.generate.follower.HelixFollower``
  on the kept module centres, told that at least one more hit exists): its first (second)
  generated module is the next (second next) module, so a second module of the last hit's layer
  (an overlap) is predicted as such. The rest of each top-5 list: the modules of the same layer
  nearest to the follower's crossing, then the nearest module centres to a helix's crossing of
  the first (second) layer ahead that carries no kept hit.
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
from tracklm.generate.follower import HelixFollower
from tracklm.io.dataset import TrackArrays
from tracklm.models.bert import TrackingBert
from tracklm.tasks.common import (
    ABSENT,
    Examples,
    TaskContext,
    TaskSpec,
    encode_batch,
    hits_of,
    masked_module_logits_at,
    module_logits_only,
    pretrained_module_decoder,
    single_inputs,
    top_k_modules,
    track_mask,
    tracks_with_min_hits,
)
from tracklm.tracking.helix import fit_helix

MIN_HITS = 4
MIN_KEPT = 3
AHEAD = 2
TOP_K = 5


def make_examples(tracks: TrackArrays, context: TaskContext, rng: np.random.Generator) -> Examples:
    """Extrapolation examples from tracks (see the module docstring)."""
    tokens, lengths = tracks_with_min_hits(tracks, MIN_HITS)
    keep = np.asarray(tracks.lengths) >= MIN_HITS
    n, width = tokens.shape
    rows = np.arange(n)
    cut = MIN_KEPT + np.minimum(
        (rng.random(n) * (lengths - MIN_KEPT)).astype(np.int64), lengths - MIN_KEPT - 1
    )
    next1 = tokens[rows, cut]
    next2 = np.where(cut + 1 < lengths, tokens[rows, np.minimum(cut + 1, width - 1)], ABSENT)
    kept = np.where(track_mask(cut, width), tokens, context.vocab.pad_id)
    with_masks = np.concatenate([kept, np.zeros((n, AHEAD), dtype=np.int64)], axis=1)
    for ahead in range(AHEAD):
        with_masks[rows, cut + ahead] = context.vocab.mask_id
    # (n, L + AHEAD, 3): the kept hits' positions, NaN from the cut on (the [MASK] and beyond)
    kept_hits = np.where(track_mask(cut, width)[..., None], hits_of(tracks, keep), np.nan)
    kept_hits = np.concatenate([kept_hits, np.full((n, AHEAD, 3), np.nan)], axis=1)
    return Examples(
        tokens=kept,
        lengths=cut,
        inputs=single_inputs(with_masks, cut + AHEAD, context.vocab, width + AHEAD + 2, kept_hits),
        labels={"next1": next1, "next2": next2.astype(np.int64), "cut": cut},
        hits=kept_hits[:, :width].astype(np.float32),
    )


class NextModuleHead(nn.Module):
    """Module scores at the ``[MASK]`` positions; starts from the pre-trained masked-module head."""

    def __init__(self, encoder: TrackingBert) -> None:
        super().__init__()
        self.num_special = encoder.vocab.num_special if encoder.vocab is not None else 0
        self.decoder = pretrained_module_decoder(encoder)


def make_head(encoder: TrackingBert) -> NextModuleHead:
    return NextModuleHead(encoder)


def forward(encoder: TrackingBert, head: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    assert isinstance(head, NextModuleHead)
    hidden = encode_batch(encoder, batch)  # (b, w, d)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    out = {}
    for ahead in range(AHEAD):
        state = hidden[rows, 1 + batch["cut"] + ahead]  # (b, d)
        logits = head.decoder(state, encoder.decoder_table())  # (b, v)
        out[f"next{ahead + 1}_logits"] = module_logits_only(logits, head.num_special)
    return out


def loss(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    total = F.cross_entropy(outputs["next1_logits"], batch["next1"])
    if bool((batch["next2"] >= 0).any()):
        total = total + F.cross_entropy(
            outputs["next2_logits"], batch["next2"], ignore_index=ABSENT
        )
    return total


def predict(outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {
        f"next{a}_top": outputs[f"next{a}_logits"].topk(TOP_K, dim=-1).indices.cpu().numpy()
        for a in range(1, AHEAD + 1)
    }


def metrics(
    predictions: dict[str, np.ndarray], examples: Examples, context: TaskContext
) -> dict[str, Any]:
    """Next-module accuracy (top 1, top 5, within 20 mm), second-next accuracy, both right."""
    next1, next2 = examples.labels["next1"], examples.labels["next2"]
    top1, top2 = predictions["next1_top"], predictions["next2_top"]
    has2 = next2 >= 0
    distance = module_distance_mm(top1[:, 0], next1, context.centres_mm)
    both = (top1[:, 0] == next1) & (top2[:, 0] == next2)
    return {
        "n_tracks": len(next1),
        "next1_accuracy": exact_accuracy(top1[:, 0], next1),
        "next1_top5_accuracy": top_k_accuracy(top1, next1, TOP_K),
        "next1_within_20mm": fraction_within(distance, 20.0),
        "next2_accuracy": exact_accuracy(top2[has2, 0], next2[has2]),
        "next2_both_accuracy": float(np.mean(both[has2])) if has2.any() else float("nan"),
    }


def zero_shot(
    encoder: TrackingBert, examples: Examples, context: TaskContext, batch_size: int
) -> dict[str, np.ndarray]:
    """The pre-trained masked-module head at the appended ``[MASK]`` positions."""
    cut = examples.labels["cut"]
    return {
        f"next{a + 1}_top": masked_module_logits_at(
            encoder,
            examples.inputs,
            1 + cut + a,
            context.vocab.num_special,
            batch_size,
            lambda logits, _: top_k_modules(logits, TOP_K),
        ).reshape(-1, TOP_K)
        for a in range(AHEAD)
    }


def _nearest_ahead(examples: Examples, context: TaskContext) -> list[np.ndarray]:
    """(N, TOP_K) module tokens per step ahead: the nearest module centres to a helix's crossing
    of the first (second) layer beyond the last kept hit that carries no kept hit."""
    tokens, lengths = examples.tokens, examples.lengths
    n, width = tokens.shape
    rows = np.arange(n)
    real = track_mask(lengths, width)
    fit = fit_helix(np.nan_to_num(context.centres_of(tokens)), real)
    s_last = fit.s_mm[rows, lengths - 1]
    track_layers = np.where(real, context.layer_of(tokens), -1)
    surfaces = context.surfaces
    crossing_s = np.full((n, len(surfaces)), np.inf)
    crossing_xyz = np.zeros((n, len(surfaces), 3))
    for y in range(len(surfaces)):
        layer = np.full(n, y)
        xyz, s, crosses = surfaces.intersect(fit, layer, s_last, np.full(n, np.inf))
        ahead = crosses & surfaces.covers(layer, xyz) & (s > s_last)
        ahead &= ~np.any(track_layers == y, axis=1)
        crossing_s[:, y] = np.where(ahead, s, np.inf)
        crossing_xyz[:, y] = xyz
    order = np.argsort(crossing_s, axis=1, kind="stable")
    exclude = np.where(real, tokens, -1)
    out = []
    for a in range(AHEAD):
        layer = order[:, a]
        found = np.isfinite(crossing_s[rows, layer])
        top = np.full((n, TOP_K), ABSENT, dtype=np.int64)
        if found.any():
            top[found], _ = surfaces.nearest_modules(
                layer[found], crossing_xyz[rows, layer][found], k=TOP_K, exclude=exclude[found]
            )
        out.append(top)
    return out


def _merge_ranked(lists: list[np.ndarray]) -> np.ndarray:
    """(N, TOP_K) ranked module lists: the columns of ``lists`` ((N, k_i) each) in order, every
    module at its first place only, ``ABSENT`` at the end."""
    merged = np.concatenate(lists, axis=1)
    width = merged.shape[1]
    earlier = np.tril(np.ones((width, width), dtype=bool), k=-1)  # [j, i]: i before j
    repeated = np.any((merged[:, :, None] == merged[:, None, :]) & earlier[None], axis=2)
    merged = np.where(repeated, ABSENT, merged)
    order = np.argsort(merged == ABSENT, axis=1, kind="stable")
    return np.take_along_axis(merged, order, axis=1)[:, :TOP_K]


def baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """The helix follower's next two modules, then the nearest alternatives (module docstring)."""
    tokens, lengths = examples.tokens, examples.lengths
    n, width = tokens.shape
    follower = HelixFollower(context, use_hits=False, max_length=width + AHEAD)
    completion = follower.complete(tokens, lengths, min_generated=1)
    rows = np.arange(n)
    exclude = np.where(track_mask(lengths, width), tokens, -1)
    out = {}
    for a, nearest in enumerate(_nearest_ahead(examples, context)):
        generated = completion.lengths > lengths + a
        first = np.where(generated, completion.tokens[rows, lengths + a], ABSENT)
        # The modules of the generated module's layer nearest to the helix's crossing of it.
        around = np.full((n, TOP_K), ABSENT, dtype=np.int64)
        if generated.any():
            around[generated], _ = context.surfaces.nearest_modules(
                context.layer_of(first[generated]),
                completion.positions_mm[rows, lengths + a][generated],
                k=TOP_K,
                exclude=exclude[generated],
            )
        out[f"next{a + 1}_top"] = _merge_ranked([first[:, None], around, nearest])
    return out


SPEC = TaskSpec(
    name="extrapolate",
    description="the next module after the last hit, and the one after",
    make_examples=make_examples,
    make_head=make_head,
    forward=forward,
    loss=loss,
    predict=predict,
    metrics=metrics,
    baseline=baseline,
    zero_shot=zero_shot,
    headline="next1_accuracy",
)
