"""Transverse momentum and charge from the module sequence alone.

Examples (from truth): tracks with at least 3 hits and a non-zero charge; labels ``log_pt``
(natural log of pT in GeV at production), ``pt_gev`` and ``charge_positive`` (1 for positive).
Every hit is shown, with its measured position (read by an ``inputs: hits`` model).

* Model head: pooler on ``[CLS]`` (a causal model: on its last token), then two numbers: log pT (squared error) and the charge logit.
* Zero-shot: none (the pre-training pair head ranks two tracks by pT but gives no scale).
* Baselines (``baselines`` in metrics.json), one circle fit (``fit_helix``) in x-y through the
  beam line (0, 0) and

  - ``circle`` (also ``baseline``): the module centres, what the model's tokens say (the seed
    fit of a classical tracker); a centre can lie far from its hit across a large module, so
    this is coarse and biased;
  - ``circle_hits``: the measured hit positions (``Examples.hits``), what a hit-aware model sees.

  and ``lookup``: the mean log pT (and charge) of the train split's tracks with the same
  (first, second, last) module, backing off to (first, last), first and all (the pair task's
  ``lookup``);
  and ``regression``: a small network fitted to the train split's tracks, log pT and charge from
  all the module centres of a track (``tracklm.evaluate.pt_regression``; the pair task's
  ``regression``, the best module-only estimate of pT found so far).

  pT = 0.3 * B[T] * R[m] in the dataset's field (``b_field_t``), charge from the bending
  direction (a positive particle turns clockwise seen from +z, the field being along +z).
* Metrics: the relative pT error's ``q68_abs`` (68% quantile of its absolute value, the
  headline: it counts a bias that ``sigma68`` hides), ``sigma68``, ``std``, ``bias`` (median),
  the rank correlation ``spearman`` of predicted and true pT; ``sigma68``, ``q68_abs`` and
  ``bias`` also above 1 GeV (``ABOVE_1GEV``); the charge accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.evaluate.metrics import exact_accuracy
from tracklm.evaluate.pair_baselines import lookup_mean
from tracklm.evaluate.pt_regression import regression_estimates
from tracklm.io.dataset import TrackArrays
from tracklm.models.bert import PairHead, TrackingBert
from tracklm.tasks.common import (
    Examples,
    TaskContext,
    TaskSpec,
    encode_batch,
    hits_of,
    single_inputs,
    track_classifier,
    track_mask,
)
from tracklm.tasks.metrics import relative_resolution
from tracklm.tracking.helix import beam_line_circle

MIN_HITS = 3
ABOVE_1GEV = ("sigma68", "q68_abs", "bias")


def make_examples(tracks: TrackArrays, context: TaskContext, rng: np.random.Generator) -> Examples:
    """pT and charge examples from tracks (see the module docstring); ``rng`` is not needed."""
    tokens = np.asarray(tracks.tokens, dtype=np.int64)
    lengths = np.asarray(tracks.lengths, dtype=np.int64)
    pt = np.asarray(tracks.pt, dtype=np.float32)
    charge = np.asarray(tracks.charge)
    keep = (lengths >= MIN_HITS) & (charge != 0) & (pt > 0)
    tokens, lengths, pt, charge = tokens[keep], lengths[keep], pt[keep], charge[keep]
    hits = hits_of(tracks, keep)
    return Examples(
        tokens=tokens,
        lengths=lengths,
        inputs=single_inputs(tokens, lengths, context.vocab, tokens.shape[1] + 2, hits),
        labels={
            "log_pt": np.log(pt).astype(np.float32),
            "pt_gev": pt,
            "charge_positive": (charge > 0).astype(np.float32),
        },
        hits=hits,
    )


def make_head(encoder: TrackingBert) -> PairHead:
    return track_classifier(encoder, 2)


def forward(encoder: TrackingBert, head: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    assert isinstance(head, PairHead)
    hidden = encode_batch(encoder, batch)  # (b, w, d)
    out = head.classify(encoder.summary(hidden, batch["attention_mask"]))  # (b, 2)
    return {"log_pt": out[:, 0], "charge_logit": out[:, 1]}


def loss(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    regression = F.mse_loss(outputs["log_pt"], batch["log_pt"])
    return regression + F.binary_cross_entropy_with_logits(
        outputs["charge_logit"], batch["charge_positive"]
    )


def predict(outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {
        "pt_gev": outputs["log_pt"].float().exp().cpu().numpy(),
        "charge": np.where(outputs["charge_logit"].float().cpu().numpy() > 0, 1, -1).astype(
            np.int8
        ),
    }


def metrics(
    predictions: dict[str, np.ndarray], examples: Examples, context: TaskContext
) -> dict[str, Any]:
    """pT resolution, bias and rank correlation (``relative_resolution``), overall and (widths
    and bias) above 1 GeV; charge accuracy. Keys ``pt_<name>`` and ``pt_<name>_above_1gev``."""
    truth = examples.labels["pt_gev"]
    predicted = predictions["pt_gev"]
    charge = np.where(examples.labels["charge_positive"] > 0.5, 1, -1)
    out: dict[str, Any] = {"n_tracks": len(truth)}
    out.update({f"pt_{k}": v for k, v in relative_resolution(predicted, truth).items()})
    high = truth > 1.0
    above = relative_resolution(predicted[high], truth[high])
    for name in ABOVE_1GEV:
        out[f"pt_{name}_above_1gev"] = above[name]
    out["charge_accuracy"] = exact_accuracy(predictions["charge"], charge)
    return out


def baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """``circle``: through the beam line and the module centres (module docstring)."""
    tokens, lengths = examples.tokens, examples.lengths
    used = track_mask(lengths, tokens.shape[1])
    return beam_line_circle(context.centres_of(tokens), used, context.b_field_t)


def lookup_baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """``lookup``: the mean log pT, and the mean charge, of the training tracks with the same
    (first, second, last) module, backing off to shorter keys (module docstring)."""
    train = context.train_tracks
    if train is None or len(train) == 0:
        raise ValueError("the lookup baseline needs the dataset's training tracks")
    charged = (np.asarray(train.charge) != 0) & (np.asarray(train.pt) > 0)
    train_tokens, train_lengths = (
        np.asarray(train.tokens)[charged],
        np.asarray(train.lengths)[charged],
    )

    def mean_of(values: np.ndarray) -> np.ndarray:
        return lookup_mean(train_tokens, train_lengths, values, examples.tokens, examples.lengths)

    log_pt = mean_of(np.log(np.asarray(train.pt, dtype=np.float64)[charged]))
    charge = mean_of(np.sign(np.asarray(train.charge, dtype=np.float64)[charged]))
    return {"pt_gev": np.exp(log_pt), "charge": np.where(charge >= 0.0, 1, -1)}


def regression_baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """``regression``: the network fitted to the training tracks' module centres (module
    docstring)."""
    train = context.train_tracks
    if train is None or len(train) == 0:
        raise ValueError("the regression baseline needs the dataset's training tracks")
    charge = np.asarray(train.charge)
    pt = np.asarray(train.pt, dtype=np.float64)
    charged = (charge != 0) & (pt > 0)
    log_pt, positive = regression_estimates(
        np.asarray(train.tokens)[charged],
        np.asarray(train.lengths)[charged],
        np.log(pt[charged]),
        (charge[charged] > 0).astype(np.float32),
        examples.tokens,
        examples.lengths,
        context.centres_mm,
    )
    return {"pt_gev": np.exp(log_pt), "charge": np.where(positive >= 0.5, 1, -1).astype(np.int8)}


def circle_hits_baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """``circle_hits``: through the beam line and the measured hits (module docstring)."""
    if examples.hits is None:
        raise ValueError("the circle_hits baseline needs the tracks' hit positions")
    hits = np.asarray(examples.hits, dtype=np.float64)
    used = track_mask(examples.lengths, hits.shape[1]) & np.isfinite(hits).all(axis=-1)
    return beam_line_circle(hits, used, context.b_field_t)


SPEC = TaskSpec(
    name="pt",
    description="transverse momentum (GeV) and charge from the module sequence",
    make_examples=make_examples,
    make_head=make_head,
    forward=forward,
    loss=loss,
    predict=predict,
    metrics=metrics,
    baseline=baseline,
    zero_shot=None,
    headline="pt_q68_abs",
    higher_is_better=False,
    baseline_name="circle",
    extra_baselines={
        "circle_hits": circle_hits_baseline,
        "lookup": lookup_baseline,
        "regression": regression_baseline,
    },
)
