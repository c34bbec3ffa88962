"""The model-guided finder: the same seeds and stages as the helix finder, with a pre-trained
TrackingBERT deciding the extension and ranking whole candidates.

The model knows only module tokens, in the order of their distance from the origin (as
``tracklm prepare --order distance`` writes tracks); the helix knows the measured positions.
Each decision combines both:

- **next hit** (``model_decider``): the helix proposes every hit within a wider window
  (``model_window_chi2``) on the next layer. Where the decision is open (a runner-up on another
  module within ``model_ask_chi2_gap`` of the best and too far to join as an overlap hit, or
  only proposals outside the helix window ``chi2_max``), one batched forward pass per step, over
  all such tracks, fills a ``[MASK]`` after the track's modules (before them when growing
  backwards) and each proposal is ranked by ``chi2 - 2 * model_step_weight * log p(module)``.
  A proposal outside the helix window joins only if its module is among the model's
  ``model_rescue_top_k`` first choices; otherwise the track misses the layer, and ends as the
  helix's does (more than ``max_missed_layers`` in a row);
- **whole candidates** (``model_method``'s quality): the pseudo-log-likelihood of a candidate's
  modules (each masked in turn, mean log-probability per hit) is added, weighted by
  ``model_pll_weight``, to the helix quality that orders the greedy resolution, and a candidate
  below ``model_veto_pll`` is dropped. Candidates longer than ``model_max_scored_hits`` are
  nearly always right and keep the helix quality (scoring them costs time, not score). Short
  candidates (at most ``model_short_hits`` hits, where most fakes are) can face a stricter
  veto (``--short-veto``, off by default) calibrated on the event: below the
  ``model_short_veto_quantile`` of the model's pseudo-log-likelihood for the innermost hits of
  the first round's long candidates, which are nearly all real tracks
  (``short_veto_threshold``).

Tracks longer than the model's inputs allow show it their first (or, growing, last)
``context_hits`` hits.

A model fine-tuned on the finder's candidates (``tracklm finetune --task candidates``) judges
whole candidates with its head instead of the pseudo-log-likelihood (``scorer_method``), given
as ``--model`` (the helix then decides the steps) or as ``--scorer`` beside a pre-trained
``--model`` that decides them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracklm.detector.geometry import Detector
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.evaluate.masked import module_logits_only
from tracklm.find.candidates import shown_candidates, unique_candidates
from tracklm.find.config import FinderConfig, SeedRound
from tracklm.find.extend import (
    StepCandidates,
    StepDecider,
    TrackCandidates,
    best_and_overlaps,
    first_per_module,
    helix_decider,
    rank_in_query,
)
from tracklm.find.finder import Method, helix_quality
from tracklm.find.hits import EventHits
from tracklm.models.bert import TrackingBert


class TrackScorer:
    """Masked-module log-probabilities of tracks' modules under a TrackingBERT.

    Parameters
    ----------
    model : the model (put in eval mode here).
    hits : the event's hits; their modules become tokens (``[UNK]`` outside the vocabulary).
    batch_rows : input rows per forward pass.
    """

    def __init__(self, model: TrackingBert, hits: EventHits, batch_rows: int = 2048) -> None:
        vocab = model.vocab
        assert vocab is not None
        self.model = model.eval()
        self.vocab: ModuleVocab = vocab
        ids = hits.module_ids
        self.token = vocab.encode(ids[:, 0], ids[:, 1], ids[:, 2], unknown="unk").astype(np.int64)
        self.distance = np.linalg.norm(hits.xyz_mm, axis=1)
        # a model that reads hit positions gets those of the hits it is shown (never the asked one)
        self.xyz: np.ndarray | None = (
            np.asarray(hits.xyz_mm, dtype=np.float32) if model.config.reads_hits else None
        )
        # [CLS] A [SEP]: the widest single track the position table takes.
        self.context_hits = min(model.config.max_length - 2, 16)
        self.batch_rows = batch_rows

    def ordered_hits(self, hits: np.ndarray, n_hits: np.ndarray) -> np.ndarray:
        """(N, H) the tracks' hits sorted by distance from the origin, -1 after ``n_hits``."""
        valid = np.arange(hits.shape[1])[None, :] < n_hits[:, None]
        distance = np.where(valid, self.distance[np.maximum(hits, 0)], np.inf)
        order = np.argsort(distance, axis=1, kind="stable")
        ordered = np.take_along_axis(hits, order, axis=1)
        result: np.ndarray = np.where(valid, ordered, -1)
        return result

    def _positions(self, hit_ids: np.ndarray) -> np.ndarray | None:
        """(B, L + 2, 3) positions of (B, L) hit ids laid out like ``_inputs`` (NaN where the id
        is negative: the asked hit, padding, ``[CLS]``, ``[SEP]``), or None for a model that
        does not read hits."""
        if self.xyz is None:
            return None
        b, width = hit_ids.shape
        out = np.full((b, width + 2, 3), np.nan, dtype=np.float32)
        out[:, 1:-1] = np.where((hit_ids >= 0)[..., None], self.xyz[np.maximum(hit_ids, 0)], np.nan)
        return out

    def _inputs(self, tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[CLS] tokens [SEP]`` rows (input ids, attention mask) for (B, L) tokens."""
        b, width = tokens.shape
        ids = np.full((b, width + 2), self.vocab.pad_id, dtype=np.int64)
        ids[:, 0] = self.vocab.cls_id
        inside = np.arange(width)[None, :] < lengths[:, None]
        ids[:, 1:-1] = np.where(inside, tokens, self.vocab.pad_id)
        ids[np.arange(b), lengths + 1] = self.vocab.sep_id
        mask = np.arange(width + 2)[None, :] < (lengths + 2)[:, None]
        return ids, mask

    def masked_log_probs(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        position: np.ndarray,
        targets: np.ndarray,
        top_k: int = 0,
        positions: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """log p(``targets`` (B, T) token ids) at input ``position`` (B,) of each row, special
        tokens excluded, and whether each target is among the model's ``top_k`` first choices;
        rows in batches of ``batch_rows``. Targets < 0 give -inf (and False). ``positions``
        (B, W, 3): the shown hits' positions for a model that reads them (``_positions``)."""
        out = np.full(targets.shape, -np.inf)
        in_top = np.zeros(targets.shape, dtype=bool)
        with torch.inference_mode():
            for start in range(0, len(ids), self.batch_rows):
                sl = slice(start, start + self.batch_rows)
                rows = np.arange(len(ids[sl]))
                logits = self.model.predict_masked(
                    torch.as_tensor(ids[sl]),
                    torch.zeros(ids[sl].shape, dtype=torch.long),
                    torch.as_tensor(mask[sl]),
                    torch.as_tensor(np.stack([rows, position[sl]], axis=1)),
                    hits=None if positions is None else torch.as_tensor(positions[sl]),
                ).float()  # (b, v)
                logp = torch.log_softmax(module_logits_only(logits, self.vocab.num_special), 1)
                target = targets[sl]
                picked = logp.gather(1, torch.as_tensor(np.maximum(target, 0))).numpy()  # (b, T)
                out[sl] = np.where(target >= 0, picked, -np.inf)
                if top_k > 0:
                    top = torch.topk(logp, top_k, dim=1).indices.numpy()  # (b, k)
                    in_top[sl] = (target[:, :, None] == top[:, None, :]).any(2) & (target >= 0)
        return out, in_top

    def pseudo_log_likelihood(self, hits: np.ndarray, n_hits: np.ndarray) -> np.ndarray:
        """(N,) mean log-probability of each track's modules, each masked in turn (its first
        ``context_hits`` hits by distance from the origin)."""
        ordered = self.ordered_hits(hits, n_hits)[:, : self.context_hits]
        lengths = np.minimum(n_hits, self.context_hits)
        tokens = np.where(ordered >= 0, self.token[np.maximum(ordered, 0)], self.vocab.pad_id)
        track = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(track.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids, mask = self._inputs(tokens[track], lengths[track])
        rows = np.arange(track.size)
        true = ids[rows, position + 1].copy()
        ids[rows, position + 1] = self.vocab.mask_id
        shown = ordered[track].copy()
        shown[rows, position] = -1  # the asked hit carries no position
        logp = self.masked_log_probs(
            ids, mask, position + 1, true[:, None], positions=self._positions(shown)
        )[0][:, 0]
        total = np.bincount(track, weights=logp, minlength=len(lengths))
        result: np.ndarray = total / np.maximum(lengths, 1)
        return result

    def next_module_log_probs(
        self,
        hits: np.ndarray,
        n_hits: np.ndarray,
        backward: np.ndarray,
        candidate_tokens: np.ndarray,
        top_k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """log p of candidate modules for each track's next hit, and whether each is among the
        model's ``top_k`` first choices.

        Parameters
        ----------
        hits, n_hits : (B, H), (B,) the tracks so far.
        backward : (B,) bool, the track grows towards the beam line (the next hit comes first).
        candidate_tokens : (B, C) token ids to score (-1 for none).

        Returns
        -------
        (B, C) log-probabilities (-inf where no candidate) and (B, C) bool.
        """
        ordered = self.ordered_hits(hits, n_hits)
        keep = self.context_hits - 1
        lengths = np.minimum(n_hits, keep)
        # growing outwards the model sees the last hits, growing inwards the first ones
        start = np.where(backward, 0, n_hits - lengths)
        index = start[:, None] + np.arange(keep)[None, :]
        window = np.take_along_axis(ordered, np.minimum(index, ordered.shape[1] - 1), axis=1)
        window = np.where(np.arange(keep)[None, :] < lengths[:, None], window, -1)
        tokens = np.where(window >= 0, self.token[np.maximum(window, 0)], self.vocab.pad_id)
        # put the [MASK] before (backward) or after (forward) the hits
        b = len(lengths)
        with_mask = np.full((b, keep + 1), self.vocab.pad_id, dtype=np.int64)
        cols = np.arange(keep)[None, :] + backward[:, None].astype(np.int64)
        with_mask[np.arange(b)[:, None], cols] = tokens
        position = np.where(backward, 0, lengths)
        with_mask[np.arange(b), position] = self.vocab.mask_id
        ids, mask = self._inputs(with_mask, lengths + 1)
        shown = np.full((b, keep + 1), -1, dtype=np.int64)  # the [MASK] keeps -1: no position
        shown[np.arange(b)[:, None], cols] = window
        return self.masked_log_probs(
            ids, mask, position + 1, candidate_tokens, top_k, self._positions(shown)
        )


def model_decider(config: FinderConfig, hits: EventHits, scorer: TrackScorer) -> StepDecider:
    """The next hit by helix chi2 and the model's module probability (see the module docstring)."""

    def decide(tracks: TrackCandidates, step: StepCandidates) -> np.ndarray:
        window = step.chi2 < config.model_window_chi2
        # the proposal of smallest chi2 on each module stands for its module
        distinct = window & first_per_module(step, hits.module, np.where(window, step.chi2, np.inf))
        n_modules = np.bincount(step.query[distinct], minlength=step.rows.size)
        order = rank_in_query(step.query, step.chi2, distinct)
        best_chi2 = np.full(step.rows.size, np.inf)
        second_chi2 = np.full(step.rows.size, np.inf)
        best_chi2[step.query[order == 0]] = step.chi2[order == 0]
        second_chi2[step.query[order == 1]] = step.chi2[order == 1]
        # The model is asked where it can change the outcome: a runner-up on another module
        # close enough in chi2 to overtake, or a lone proposal outside the helix window.
        rescue = (best_chi2 >= config.chi2_max) & (config.model_rescue_top_k > 0)
        # a runner-up that joins anyway as an overlap hit needs no decision
        contested = (second_chi2 < best_chi2 + config.model_ask_chi2_gap) & (
            second_chi2 >= config.overlap_chi2_max
        )
        ambiguous = (contested | rescue) & (tracks.n_hits[step.rows] >= config.model_min_context)
        logp = np.where(distinct, 0.0, -np.inf)
        in_top = np.ones(step.hit.size, dtype=bool)
        queries = np.flatnonzero(ambiguous & (n_modules > 0))
        if queries.size:
            local = np.full(step.rows.size, -1)
            local[queries] = np.arange(queries.size)
            asked = np.flatnonzero(distinct & (local[step.query] >= 0))
            q = local[step.query[asked]]
            slot = rank_in_query(q, step.chi2[asked], np.ones(q.size, dtype=bool))
            tokens = np.full((queries.size, int(slot.max()) + 1), -1, dtype=np.int64)
            tokens[q, slot] = scorer.token[step.hit[asked]]
            rows = step.rows[queries]
            table, top = scorer.next_module_log_probs(
                tracks.hits[rows],
                tracks.n_hits[rows],
                np.full(queries.size, step.backward),
                tokens,
                config.model_rescue_top_k,
            )
            logp[asked] = table[q, slot]
            in_top[asked] = top[q, slot]
        score = step.chi2 - 2.0 * config.model_step_weight * logp
        allowed = distinct & ((step.chi2 < config.chi2_max) | in_top)
        rank = rank_in_query(step.query, score, allowed)
        return best_and_overlaps(step, rank, rank == 0, config)

    return decide


def short_veto_threshold(
    tracks: TrackCandidates, scorer: TrackScorer, config: FinderConfig
) -> float:
    """The pseudo-log-likelihood below which a short candidate is vetoed, or -inf for none.

    The ``model_short_veto_quantile`` of the model's values for real short tracks in this
    event: the innermost ``model_short_hits`` hits (by distance from the origin) of the
    candidates with at least two hits more (in the first round: nearly all real tracks, one
    copy each), an even sample of at most ``model_reference_max_tracks``. -inf when the
    quantile is 0 or fewer than ``model_reference_min_tracks`` candidates qualify.
    """
    short = config.model_short_hits
    if config.model_short_veto_quantile <= 0:
        return -np.inf
    long_rows = np.flatnonzero(tracks.n_hits >= short + 2)
    keys = np.sort(tracks.hits[long_rows], axis=1)  # -1 padding sorts first: same for copies
    long_rows = long_rows[np.unique(keys, axis=0, return_index=True)[1]]  # one copy each
    if long_rows.size < config.model_reference_min_tracks:
        return -np.inf
    if long_rows.size > config.model_reference_max_tracks:
        pick = np.linspace(0, long_rows.size - 1, config.model_reference_max_tracks)
        long_rows = long_rows[np.round(pick).astype(np.int64)]
    inner = scorer.ordered_hits(tracks.hits[long_rows], tracks.n_hits[long_rows])[:, :short]
    reference = scorer.pseudo_log_likelihood(inner, np.full(long_rows.size, short))
    return float(np.quantile(reference, config.model_short_veto_quantile))


def veto_levels(n_hits: np.ndarray, config: FinderConfig, short_veto: float) -> np.ndarray:
    """(N,) the pseudo-log-likelihood below which each scored candidate is dropped:
    ``model_veto_pll``, raised to ``short_veto`` for candidates of at most ``model_short_hits``
    hits (never lowered)."""
    short = max(config.model_veto_pll, short_veto)
    levels: np.ndarray = np.where(n_hits <= config.model_short_hits, short, config.model_veto_pll)
    return levels


def check_finder_vocab(
    model: TrackingBert, detector: Detector, volumes: tuple[int, ...], name: str
) -> None:
    """Refuse (``InputError`` naming ``name``) a model whose vocabulary is not the detector's
    modules of ``volumes``: its tokens would mean other modules."""
    expected = ModuleVocab.from_detector(detector, volumes)
    assert model.vocab is not None
    if model.vocab.sha256 != expected.sha256:
        raise InputError(
            f"{name}: its vocabulary ({len(model.vocab.modules)} modules, sha256 "
            f"{model.vocab.sha256[:12]}) is not the detector's modules of volumes "
            f"{','.join(map(str, volumes))} ({len(expected.modules)} modules, sha256 "
            f"{expected.sha256[:12]})"
        )


def model_method(
    model_dir: str | os.PathLike[str], detector: Detector, volumes: tuple[int, ...]
) -> tuple[Method, dict[str, Any]]:
    """The model-guided ``Method`` for a model directory, and what the manifest records of it.

    A pre-trained model decides steps and scores candidates by their pseudo-log-likelihood; a
    model fine-tuned on the finder's candidates (``tracklm finetune --task candidates``)
    scores them with its head instead (``scorer_method``).

    Raises ``InputError`` when the model's vocabulary is not the detector's modules of
    ``volumes`` (the tokens would mean other modules), or for a model fine-tuned on another task.
    """
    from tracklm.tasks.finetune import HEAD_FILE

    if (Path(model_dir) / HEAD_FILE).is_file():
        return scorer_method(model_dir, detector, volumes)
    model = TrackingBert.from_pretrained(model_dir)
    check_finder_vocab(model, detector, volumes, f"--model {model_dir}")
    assert model.vocab is not None
    state: dict[str, Any] = {"hits": None, "scorer": None, "short_veto": None}

    def scorer_for(hits: EventHits) -> TrackScorer:
        if state["hits"] is not hits:
            state["hits"], state["scorer"] = hits, TrackScorer(model, hits)
            state["short_veto"] = None  # calibrated on this event's first round
        scorer: TrackScorer = state["scorer"]
        return scorer

    def decider(config: FinderConfig, hits: EventHits) -> StepDecider:
        return model_decider(config, hits, scorer_for(hits))

    def quality(
        tracks: TrackCandidates, hits: EventHits, config: FinderConfig, seed_round: SeedRound
    ) -> np.ndarray:
        base = helix_quality(tracks, hits, config, seed_round)
        rows = np.flatnonzero(
            (tracks.n_hits >= seed_round.min_hits) & (tracks.n_hits <= config.model_max_scored_hits)
        )
        pll = np.zeros(len(tracks))
        if rows.size:
            # copies of one track (a particle seeded several times) are scored once
            first, inverse = unique_candidates(tracks.hits[rows], tracks.n_hits[rows])
            unique = rows[first]
            pll[rows] = scorer_for(hits).pseudo_log_likelihood(
                tracks.hits[unique], tracks.n_hits[unique]
            )[inverse]
        result: np.ndarray = base + config.model_pll_weight * pll
        if state["short_veto"] is None:
            # the event's first round: its long candidates calibrate the veto of short ones
            state["short_veto"] = short_veto_threshold(tracks, scorer_for(hits), config)
        # a candidate whose modules the model finds implausible is no track at all
        vetoed = np.zeros(len(tracks), dtype=bool)
        vetoed[rows] = pll[rows] < veto_levels(tracks.n_hits[rows], config, state["short_veto"])
        return np.where(vetoed, -np.inf, result)

    return Method("model", decider, quality), _model_record(model_dir, model)


def _model_record(model_dir: str | os.PathLike[str], model: TrackingBert) -> dict[str, Any]:
    assert model.vocab is not None
    return {
        "path": str(Path(model_dir).resolve()),
        "vocab_sha256": model.vocab.sha256,
        "parameters": model.num_parameters(),
        "config": model.config.to_dict(),
    }


def scorer_method(
    model_dir: str | os.PathLike[str],
    detector: Detector,
    volumes: tuple[int, ...],
    option: str = "--model",
) -> tuple[Method, dict[str, Any]]:
    """The ``Method`` of a model fine-tuned on the finder's candidates (``tracklm finetune --task
    candidates``): the helix decides the steps (the fine-tuned encoder no longer predicts
    modules as it was pre-trained to); the candidate head orders the resolution, adding
    ``model_scorer_weight`` times its track logit to the helix quality and subtracting
    ``model_scorer_bad_weight`` times the hits it expects not to be the particle's (the sum of
    one minus each shown hit's probability), and drops a candidate whose logit is below
    ``model_scorer_veto``. ``option`` names the command-line option in messages.
    """
    from tracklm.tasks.candidates import SPEC, candidate_examples, candidate_width
    from tracklm.tasks.finetune import load_finetuned, predict_examples

    spec, model, head = load_finetuned(model_dir)
    if spec is not SPEC:
        raise InputError(
            f"{option} {model_dir}: fine-tuned for task {spec.name}; tracklm find takes a "
            "pre-trained model or one fine-tuned with --task candidates"
        )
    check_finder_vocab(model, detector, volumes, f"{option} {model_dir}")
    assert model.vocab is not None
    vocab = model.vocab
    width = candidate_width(model)

    def quality(
        tracks: TrackCandidates, hits: EventHits, config: FinderConfig, seed_round: SeedRound
    ) -> np.ndarray:
        base = helix_quality(tracks, hits, config, seed_round)
        rows = np.flatnonzero(tracks.n_hits >= seed_round.min_hits)
        result = np.full(len(tracks), -np.inf)
        if rows.size == 0:
            return result
        first, inverse = unique_candidates(tracks.hits[rows], tracks.n_hits[rows])
        distance = np.linalg.norm(hits.xyz_mm, axis=1)
        candidates, _ = shown_candidates(tracks, rows[first], hits, distance, width, seed_round)
        examples = candidate_examples(candidates, vocab, model.config.reads_hits, False)
        predicted = predict_examples(SPEC, model, head, examples, config.model_scorer_batch)
        logit = predicted["real_logit"][inverse]
        bad = np.nansum(1.0 - predicted["good_probability"], axis=1)[inverse]
        score = (
            base[rows] + config.model_scorer_weight * logit - config.model_scorer_bad_weight * bad
        )
        result[rows] = np.where(logit < config.model_scorer_veto, -np.inf, score)
        return result

    record = _model_record(model_dir, model) | {"task": SPEC.name}
    return Method("model", helix_decider, quality), record
