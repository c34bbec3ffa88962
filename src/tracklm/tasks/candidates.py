"""Candidate scoring for track finding: is a finder's candidate a track, and which of its hits
belong to it?

Examples (``tracklm.find.candidates``): every round's distinct candidates of ``tracklm find
--method helix`` on simulated events with truth, split by event (train, val, test). Labels:
``real`` (more than half of the hits from one particle, not noise) and ``good`` per hit (the hit
is that particle's). Unlike the other tasks, ``--data`` is a directory of events with truth
(``tracklm simulate`` writes them), not a prepared dataset: the candidates are the finder's.

* Model head: a track logit from the summary token (``[CLS]``; a causal model's last token) and
  the finder's numbers of the candidate (``candidate_features``: chi2 per hit, hits, the
  round), and a logit per hit state.
* Zero-shot: the pre-trained model's pseudo-log-likelihood of the candidate's modules (each
  masked in turn, mean log-probability): what ``tracklm find --method model`` orders and vetoes
  candidates by without fine-tuning.
* Baseline ``helix``: the helix finder's own quality (hits, then chi2 per hit).

Metrics are those of detecting fakes (a fake is the positive): AUC and the share of fakes
caught when 1% or 5% of the real candidates are caught with them, and the accuracy of the hit
labels on real candidates. A fine-tuned model directory from this task serves ``tracklm find
--method model --model RUN2/model`` (``tracklm.find.model``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.detector.layers import TokenLayers
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.find.candidates import N_FEATURES, CandidateSet
from tracklm.find.config import FinderConfig
from tracklm.io.dataset import TrackArrays, modules_table
from tracklm.models.bert import TrackingBert
from tracklm.tasks.common import (
    Examples,
    TaskContext,
    TaskSpec,
    each_hit_masked_log_probs,
    encode_batch,
    single_inputs,
    track_mask,
)
from tracklm.tasks.config import FinetuneConfig
from tracklm.tasks.metrics import detection_metrics

logger = logging.getLogger(__name__)

MAX_CANDIDATE_HITS = 16
"""The most hits of a candidate the model is shown (its first, by distance from the origin)."""


def candidate_width(encoder: TrackingBert) -> int:
    """Hits a candidate shows ``encoder``: ``MAX_CANDIDATE_HITS``, or fewer if its inputs are
    narrower (``[CLS] hits [SEP]``)."""
    return min(encoder.config.max_length - 2, MAX_CANDIDATE_HITS)


def candidate_examples(
    candidates: CandidateSet, vocab: ModuleVocab, reads_hits: bool, with_labels: bool = True
) -> Examples:
    """Model inputs (``single_inputs`` plus ``features``) and labels of candidates.

    Modules outside ``vocab`` become ``[UNK]``; the positions are given to a model that reads
    hits (``reads_hits``).
    """
    ids = candidates.module_ids
    width = ids.shape[1]
    lengths = np.minimum(candidates.n_hits, width).astype(np.int64)
    shown = ids[..., 0] >= 0
    flat = np.maximum(ids.reshape(-1, 3), 0)
    tokens = vocab.encode(flat[:, 0], flat[:, 1], flat[:, 2], unknown="unk").reshape(shown.shape)
    tokens = np.where(shown, tokens, vocab.pad_id).astype(np.int64)
    hits = candidates.xyz_mm.astype(np.float32) if reads_hits else None
    inputs = single_inputs(tokens, lengths, vocab, width + 2, hits)
    inputs["features"] = candidates.features.astype(np.float32)
    labels: dict[str, np.ndarray] = {}
    if with_labels:
        labels = {
            "real": candidates.real.astype(np.float32),
            "good": candidates.good.astype(np.float32),
        }
    return Examples(tokens=tokens, lengths=lengths, inputs=inputs, labels=labels, hits=hits)


def candidate_context(vocab: ModuleVocab, detector: Any, b_field_t: float) -> TaskContext:
    """The ``TaskContext`` of a vocabulary over a detector (no prepared dataset behind it)."""
    table = modules_table(vocab, detector)
    centres = np.full((len(vocab), 3), np.nan)
    centres[table["token"].to_numpy()] = table[["cx", "cy", "cz"]].to_numpy(np.float64)
    return TaskContext(
        vocab=vocab,
        centres_mm=centres,
        surfaces=TokenLayers.from_modules(table, len(vocab)),
        b_field_t=b_field_t,
    )


# ----------------------------------------------------------------------------- the head
class CandidateHead(nn.Module):
    """A track logit from the summary token and the candidate's features; a logit per hit."""

    def __init__(self, encoder: TrackingBert) -> None:
        super().__init__()
        d = encoder.config.hidden_size
        self.track = nn.Sequential(nn.Linear(d + N_FEATURES, d), nn.GELU(), nn.Linear(d, 1))
        self.hit = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))


def make_head(encoder: TrackingBert) -> CandidateHead:
    return CandidateHead(encoder)


def forward(encoder: TrackingBert, head: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    assert isinstance(head, CandidateHead)
    hidden = encode_batch(encoder, batch)  # (b, w, d)
    summary = encoder.summary(hidden, batch["attention_mask"])
    features = batch["features"].to(summary.dtype)
    track = head.track(torch.cat([summary, features], dim=1)).squeeze(-1)
    n_hits = batch["attention_mask"].sum(dim=1) - 2
    hit = torch.arange(hidden.shape[1] - 2, device=hidden.device)[None, :]
    return {
        "real_logit": track,
        "hit_logits": head.hit(hidden[:, 1:-1]).squeeze(-1),  # hit k at input position 1 + k
        "hit_shown": hit < n_hits[:, None],
    }


def loss(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    total = F.binary_cross_entropy_with_logits(outputs["real_logit"].float(), batch["real"])
    shown = outputs["hit_shown"]
    good = batch["good"][:, : shown.shape[1]]
    return total + F.binary_cross_entropy_with_logits(
        outputs["hit_logits"].float()[shown], good[shown]
    )


def predict(outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    shown = outputs["hit_shown"]
    probability = torch.sigmoid(outputs["hit_logits"].float()).masked_fill(~shown, float("nan"))
    return {
        "real_logit": outputs["real_logit"].float().cpu().numpy(),
        "good_probability": probability.cpu().numpy(),
    }


def metrics(
    predictions: dict[str, np.ndarray], examples: Examples, context: TaskContext
) -> dict[str, Any]:
    """Fake detection (``detection_metrics`` with fakes positive) and hit-label accuracy."""
    real = examples.labels["real"] > 0.5
    out: dict[str, Any] = {"n_candidates": int(real.size), "n_fakes": int((~real).sum())}
    out.update(detection_metrics(-predictions["real_logit"], ~real))
    probability = predictions["good_probability"]
    shown = track_mask(examples.lengths, probability.shape[1]) & real[:, None]
    good = examples.labels["good"][:, : probability.shape[1]] > 0.5
    out["hit_accuracy"] = (
        float(np.mean((probability[shown] > 0.5) == good[shown])) if shown.any() else None
    )
    return out


def helix_baseline(examples: Examples, context: TaskContext) -> dict[str, np.ndarray]:
    """The helix finder's quality (hits minus ``chi2_weight`` x chi2 per hit) as the score;
    every hit called good."""
    features = examples.inputs["features"].astype(np.float64)
    n_hits, chi2_per_hit = features[:, 1] * 10.0, np.expm1(features[:, 0])
    quality = n_hits - FinderConfig().chi2_weight * chi2_per_hit
    shown = track_mask(examples.lengths, examples.tokens.shape[1])
    return {"real_logit": quality, "good_probability": np.where(shown, 1.0, np.nan)}


def zero_shot(
    encoder: TrackingBert, examples: Examples, context: TaskContext, batch_size: int
) -> dict[str, np.ndarray]:
    """The pre-trained model's pseudo-log-likelihood of each candidate (module docstring); a hit
    is called good when the model gives its module at least 1% (masked in turn)."""
    per_hit = each_hit_masked_log_probs(encoder, examples, context.vocab, batch_size)
    lengths = examples.lengths
    pll = np.nansum(per_hit, axis=1) / np.maximum(lengths, 1)
    # sigmoid(log p - log 0.01): above one half where p > 1%
    good = 1.0 / (1.0 + np.exp(np.log(0.01) - per_hit))
    return {"real_logit": pll, "good_probability": good}


def _no_tracks(tracks: TrackArrays, context: TaskContext, rng: np.random.Generator) -> Examples:
    raise InputError(
        "--task candidates: --data must be a directory of events with truth (as tracklm "
        "simulate writes), not a prepared dataset"
    )


SPEC = TaskSpec(
    name="candidates",
    description="is a track finder's candidate a track, and which of its hits are its particle's",
    make_examples=_no_tracks,
    make_head=make_head,
    forward=forward,
    loss=loss,
    predict=predict,
    metrics=metrics,
    baseline=helix_baseline,
    zero_shot=zero_shot,
    headline="auc",
    baseline_name="helix",
)


# ----------------------------------------------------------------------------- the command
def finetune_candidates(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: FinetuneConfig,
    *,
    mode: str = "finetune",
    train_size: int | None = None,
    max_steps: int | None = None,
    max_time: float | None = None,
    seed: int = 0,
    references: bool = True,
) -> dict[str, Any]:
    """``tracklm finetune --task candidates``: ``finetune``'s steps on the finder's candidates
    of the events in ``data`` (split by event: ``split_events``); ``train_size`` draws that many
    training candidates (seeded), val and test at most ``settings.val_tracks`` and
    ``settings.eval_tracks``."""
    from tracklm.data.prepare import resolve_detector
    from tracklm.find.candidates import collect_candidates, finder_setup, split_events
    from tracklm.find.model import check_finder_vocab
    from tracklm.io.trackml import list_events
    from tracklm.tasks import finetune as ft

    events = Path(data)
    if not events.is_dir() or not list_events(events):
        raise InputError(
            f"--data {events}: task candidates needs a directory of events with truth "
            "(eventNNNNNNNNN-hits.csv[.gz] and -truth.csv[.gz], as tracklm simulate writes)"
        )
    encoder = ft.load_encoder(model, mode, seed)
    detector = resolve_detector(events, None)
    layers, b_field_t, volumes = finder_setup(events, detector)
    check_finder_vocab(encoder, detector, volumes, f"--model {model}")
    assert encoder.vocab is not None
    splits = split_events(list_events(events), events)
    config = FinderConfig()
    width = candidate_width(encoder)
    rng = np.random.default_rng(seed)
    limits = {"train": train_size, "val": settings.val_tracks, "test": settings.eval_tracks}
    examples: dict[str, Examples] = {}
    for split, ids in splits.items():
        found = collect_candidates(
            events, ids, layers, config, b_field_t, width, desc=f"candidates ({split})"
        )
        limit = limits[split]
        if limit is not None and len(found) > limit:
            found = found.take(np.sort(rng.choice(len(found), size=limit, replace=False)))
        if len(found) == 0:
            raise InputError(
                f"--data {events}: the finder made no candidates in the {split} events"
            )
        examples[split] = candidate_examples(found, encoder.vocab, encoder.config.reads_hits)
    context = candidate_context(encoder.vocab, detector, b_field_t)
    return ft.train_score_and_write(
        SPEC, encoder, examples, context, settings, model, data, out,
        mode=mode, train_size=train_size, steps=int(max_steps or settings.max_steps),
        max_time=max_time, seed=seed, references=references,
        n_train_tracks=len(examples["train"]), vocab_sha256=encoder.vocab.sha256,
        extra={"events": splits},
    )  # fmt: skip
