"""``tracklm evaluate``: masked-module evaluation of a model beside physics baselines, and a report.

Writes a report directory (atomically) with ``metrics.json`` (the evaluation schema, whose
keys ``tests/evaluate/test_report.py`` checks), ``report.md``, ``predictions.parquet`` (every single-hit prediction with its distance
to the truth, model and baselines), PNG plots and ``manifest.json``.

``evaluate_masked_modules`` does the work in named steps (``evaluation_pairs``, ``fit_baselines``,
``predict_single_hits``, ``summarise``, ``accuracy_by_volume_layer``, ``multi_mask_accuracy``) and
returns an ``EvaluationResult``; ``run_evaluate`` writes it. The report's text is made in
``tracklm/evaluate/markdown.py``, its figures in ``tracklm/evaluate/plots.py``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracklm._fs import atomic_output_dir, write_json
from tracklm.data.batches import input_width
from tracklm.data.sequences import EncodedInputs, encode_pairs, place_hits
from tracklm.detector.layers import TokenLayers
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.evaluate import metrics as M
from tracklm.evaluate import plots
from tracklm.evaluate.baselines import (
    BASELINE_TEXT,
    FrequencyBaseline,
    HelixBaseline,
    HelixFrequencyBaseline,
    SequenceBaseline,
)
from tracklm.evaluate.counting import counting_split
from tracklm.evaluate.markdown import report_markdown
from tracklm.evaluate.masked import (
    PROTOCOLS,
    mask_inputs,
    pair_partners,
    pick_device,
    predict_pair_logits,
    rank_and_locate,
)
from tracklm.evaluate.pair_baselines import pair_baselines
from tracklm.io.dataset import PreparedDataset, TrackArrays, open_dataset
from tracklm.manifest import write_manifest
from tracklm.models.bert import TrackingBert
from tracklm.models.inputs import check_hits_present

log = logging.getLogger(__name__)

SIDES = ("A", "B")
MULTI_MASK_COUNTS = (2, 3)
PROTOCOL_TEXT = {
    "masked": "masked: the evaluated hit is replaced by [MASK] in the input (the honest result)",
    "unmasked": (
        "unmasked: the evaluated hit's true token stays visible in the input, as in the public "
        "code's evaluation; the model can copy it, so this figure does NOT measure prediction"
    ),
}


# ----------------------------------------------------------------------------- evaluation
def _select_tracks(tracks: TrackArrays, max_tracks: int | None, seed: int) -> np.ndarray:
    n = len(tracks)
    if max_tracks is None or max_tracks >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_tracks, replace=False))


def _random_positions(
    lengths: np.ndarray, count: int, rng: np.random.Generator, width: int
) -> np.ndarray:
    """(N, count) distinct hit indices per track, ascending."""
    keys = rng.random((len(lengths), width))
    keys[np.arange(width)[None, :] >= lengths[:, None]] = np.inf
    return np.sort(np.argsort(keys, axis=1)[:, :count], axis=1)


def _load_model(model_dir: str | os.PathLike[str]) -> TrackingBert:
    return TrackingBert.from_pretrained(model_dir, map_location=pick_device())


def run_evaluate(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str = "test",
    protocol: str = "masked",
    max_tracks: int | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    baseline_data: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Evaluate masked-module prediction and the pair task; write the report directory ``out``.

    Every selected track is masked at its first, middle (length // 2) and last hit, once as track A
    and once as track B of a same-event pair (see ``tracklm.evaluate.masked``); also 2 and 3 random
    hits at once. Baselines (frequency, helix, helix on module centres) predict the same hidden
    hits from the same visible hits.

    Parameters
    ----------
    model : model directory (``RUN/model``).
    data : dataset directory.
    out : report directory (must not exist, or be empty).
    split : ``train``, ``val`` or ``test``.
    protocol : ``masked`` (honest) or ``unmasked`` (true token left visible: the public code's figure).
    max_tracks : evaluate a random subset of at most this many tracks (seeded).
    seed : seed of the subset, the pairing and the multi-mask positions.
    batch_size : pairs per forward pass.
    baseline_data : dataset whose train split the baselines count on (default: the model's
        training data, else this dataset's train split; see ``tracklm.evaluate.counting``).

    Returns
    -------
    The content of ``metrics.json``.
    """
    from tracklm.runtime import configure_torch

    configure_torch()
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol: unknown protocol {protocol!r} (choose masked or unmasked)")
    if max_tracks is not None and max_tracks < 1:
        raise InputError(f"--max-tracks: must be at least 1, got {max_tracks}")
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        net = _load_model(model)
        if protocol == "unmasked" and net.config.causal:
            raise InputError(
                f"--protocol unmasked: {model} is a next-module model, which predicts each hit "
                "from the hits before it and never sees the hit itself; use --protocol masked"
            )
        dataset = open_dataset(data)
        net.check_vocab(dataset.vocab, str(dataset.path / "vocab.json"))
        all_tracks = dataset.split(split)
        check_hits_present(
            net.config.reads_hits, all_tracks.hits, str(dataset.path / split / "hits.npy")
        )
        if len(all_tracks) == 0:
            raise InputError(f"{Path(data) / split}: the split holds no tracks")
        counting = counting_split(dataset, split, model, baseline_data)
        selected = _select_tracks(all_tracks, max_tracks, seed)
        tracks = all_tracks.take(selected)
        width = input_width(tracks.max_length, "event")
        if width > net.config.max_length:
            raise InputError(
                f"{data}: pairs of tracks of up to {tracks.max_length} hits need {width} positions, "
                f"the model knows {net.config.max_length}"
            )
        result = evaluate_masked_modules(
            net, dataset, tracks, counting.tracks, protocol, seed, width, batch_size
        )
        metrics = result.metrics
        metrics["baselines_counted_on"] = counting.record()
        metrics["split"] = split
        metrics["model"] = str(model)
        metrics["model_inputs"] = net.config.inputs
        metrics["model_objective"] = net.config.objective
        metrics["data"] = str(data)
        metrics["selected_tracks"] = (
            "all" if max_tracks is None else f"random {len(tracks)} (seed {seed})"
        )
        metrics = M.json_ready(metrics)
        write_report_files(tmp, result, metrics, dataset, tracks)
        write_manifest(
            tmp,
            "evaluate",
            inputs={"model": str(model), "data": str(data)},
            config={
                "split": split,
                "protocol": protocol,
                "max_tracks": max_tracks,
                "seed": seed,
                "baseline_data": None if baseline_data is None else str(baseline_data),
            },
            vocab_sha256=dataset.vocab.sha256,
        )
    log.info("evaluation written to %s", out)
    return metrics


def write_report_files(
    directory: Path,
    result: EvaluationResult,
    metrics: dict[str, Any],
    dataset: PreparedDataset,
    tracks: TrackArrays,
) -> None:
    """Write ``metrics.json``, ``predictions.parquet``, the PNG figures and ``report.md``.

    Parameters
    ----------
    directory : the report directory being written.
    result : what ``evaluate_masked_modules`` found.
    metrics : the final content of ``metrics.json`` (``json_ready``).
    dataset, tracks : the dataset (module table) and the evaluated tracks, for the figures.
    """
    write_json(directory / "metrics.json", metrics)
    result.predictions.to_parquet(directory / "predictions.parquet", index=False)
    figures = {}
    for filename, (figure, caption) in plots.report_figures(
        result, dataset.modules, tracks
    ).items():
        plots.save_figure(figure, directory / filename)
        figures[filename] = caption
    (directory / "report.md").write_text(report_markdown(metrics, figures))


# ----------------------------------------------------------------------------- evaluation steps
Baseline = FrequencyBaseline | SequenceBaseline | HelixBaseline | HelixFrequencyBaseline


@dataclass
class EvaluationPairs:
    """The evaluated tracks joined in same-event pairs, and their clean model inputs.

    Attributes
    ----------
    tracks : the N evaluated tracks; ``vocab`` the dataset's (and model's) vocabulary.
    tokens : (N, L) int64 their module tokens; ``lengths`` (N,) int64 their number of hits.
    real : (N, L) bool, True on the hits of each track.
    encoded : pair i = ``[CLS] track i [SEP] track partner[i] [SEP]``, no hit masked (N rows).
    track_of : side (``A``/``B``) -> (N,) index of the track on that side of each pair: track i
        is A of pair i and B of the pair whose A is its predecessor in the event's cycle.
    pair_labels : (N,) bool, pT(B) > pT(A).
    hits : (N, W, 3) every hit's position laid out like ``encoded`` (``place_hits``) when the
        model reads hits, else None.
    """

    tracks: TrackArrays
    vocab: ModuleVocab
    tokens: np.ndarray
    lengths: np.ndarray
    real: np.ndarray
    encoded: EncodedInputs
    track_of: dict[str, np.ndarray]
    pair_labels: np.ndarray
    hits: np.ndarray | None = None


@dataclass
class EvaluationResult:
    """What ``evaluate_masked_modules`` found.

    Attributes
    ----------
    metrics : the content of ``metrics.json`` (``split`` still None; ``run_evaluate`` adds the
        split, model, data and selection).
    predictions : one row per single hidden hit (the content of ``predictions.parquet``).
    names : the predictors, model first, then the baselines (and ``copy_input`` when unmasked).
    pair_logits : (N,) float64 pair-head logits of pT(B) > pT(A); ``pair_labels`` (N,) bool.
    centres_mm : (V, 3) module centre of every token id (NaN for special tokens).
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    names: list[str]
    pair_logits: np.ndarray
    pair_labels: np.ndarray
    centres_mm: np.ndarray


def evaluation_pairs(
    tracks: TrackArrays, dataset: PreparedDataset, seed: int, width: int, hits: bool = False
) -> EvaluationPairs:
    """Join the tracks in seeded same-event pairs (``pair_partners``) and encode the pairs
    (with ``hits``, lay out the hit positions too)."""
    n = len(tracks)
    lengths = tracks.lengths.astype(np.int64)
    tokens = tracks.tokens.astype(np.int64)
    partner = pair_partners(tracks.event_id, seed)
    encoded = encode_pairs(tokens, lengths, tokens[partner], lengths[partner], dataset.vocab, width)
    return EvaluationPairs(
        tracks=tracks,
        vocab=dataset.vocab,
        tokens=tokens,
        lengths=lengths,
        real=np.arange(tracks.max_length)[None, :] < lengths[:, None],
        encoded=encoded,
        track_of={"A": np.arange(n), "B": partner},
        pair_labels=tracks.pt[partner] > tracks.pt,
        hits=(
            place_hits(encoded, tracks.hits, lengths, tracks.hits[partner], lengths[partner])
            if hits
            else None
        ),
    )


def fit_baselines(dataset: PreparedDataset, train: TrackArrays) -> list[Baseline]:
    """The baselines, counted and fitted on the train split: frequency, the whole visible track
    looked up (sequence), helix (module centres), helix+frequency and the helix on measured hits
    (a reference)."""
    surfaces = TokenLayers.from_modules(dataset.modules, len(dataset.vocab))
    bounds = dataset.frames()
    centres = dataset.module_centres
    frequency = FrequencyBaseline(train.tokens, train.lengths)
    helix = HelixBaseline(
        surfaces, train.tokens, train.lengths, centres, use_hits=False, bounds=bounds
    )
    helix_hits = HelixBaseline(
        surfaces, train.tokens, train.lengths, centres, use_hits=True, bounds=bounds
    )
    sequence = SequenceBaseline(train.tokens, train.lengths, frequency)
    return [frequency, sequence, helix, HelixFrequencyBaseline(frequency, helix), helix_hits]


def predict_single_hits(
    net: TrackingBert,
    pairs: EvaluationPairs,
    baselines: list[Baseline],
    centres_mm: np.ndarray,
    protocol: str,
    batch_size: int,
) -> pd.DataFrame:
    """Hide the first, middle (length // 2) and last hit of every track, as A and as B.

    Returns
    -------
    One row per hidden hit: the track, its side and position, the true token, and for the model
    and every baseline (and ``copy_input`` when unmasked) the prediction ``<name>_pred``, whether
    the truth is in its top 5 (``<name>_top5``) and the distance to the truth
    (``<name>_distance_mm``); for the helices, the distance between their crossing of the
    predicted module and the true hit (``<name>_position_mm``).
    """
    vocab = pairs.vocab
    tokens, lengths, tracks, encoded = pairs.tokens, pairs.lengths, pairs.tracks, pairs.encoded
    hit_of = {
        "first": np.zeros(len(lengths), np.int64),
        "middle": lengths // 2,
        "last": lengths - 1,
    }
    baseline_ranked: dict[tuple[str, str], np.ndarray] = {}
    crossing_mm: dict[tuple[str, str], np.ndarray] = {}  # of the helices: their predicted hit
    for position, hit in hit_of.items():
        visible = pairs.real & (np.arange(tracks.max_length)[None, :] != hit[:, None])
        for baseline in baselines:
            key = (baseline.name, position)
            if isinstance(baseline, HelixBaseline):
                baseline_ranked[key], crossing_mm[key] = baseline.predict_with_crossing(
                    tokens, visible, hit, tracks.hits
                )
            else:
                baseline_ranked[key] = baseline.predict(tokens, visible, hit, tracks.hits)
    records = []
    for side in SIDES:
        for position, hit_by_track in hit_of.items():
            track = pairs.track_of[side]
            hit = hit_by_track[track]
            true = tokens[track, hit]
            input_ids, labels = mask_inputs(
                encoded, side, hit[:, None], true[:, None], vocab.mask_id, protocol
            )
            ranked, located = rank_and_locate(
                net, encoded, input_ids, labels, vocab.num_special, pairs.hits, batch_size,
                f"{side} {position}",
            )  # fmt: skip
            frame = {
                "track": track,
                "event_id": tracks.event_id[track],
                "side": side,
                "position": position,
                "hit_index": hit,
                "length": lengths[track],
                "true_token": true,
                "model_pred": ranked[:, 0],
                "model_top5": M.top_k_hits(ranked, true, 5),
            }
            for baseline in baselines:
                b_ranked = baseline_ranked[(baseline.name, position)][track]
                frame[f"{baseline.name}_pred"] = b_ranked[:, 0]
                frame[f"{baseline.name}_top5"] = M.top_k_hits(b_ranked, true, 5)
                if (baseline.name, position) in crossing_mm:
                    frame[f"{baseline.name}_position_mm"] = np.linalg.norm(
                        crossing_mm[(baseline.name, position)][track] - tracks.hits[track, hit],
                        axis=1,
                    )
            if located is not None:
                true_mm = tracks.hits[track, hit].astype(np.float64)
                frame["model_position_mm"] = np.linalg.norm(located - true_mm, axis=1)
            if protocol == "unmasked":
                offset = encoded.offset_a if side == "A" else encoded.offset_b
                frame["copy_input_pred"] = input_ids[np.arange(len(track)), offset + hit]
            records.append(pd.DataFrame(frame))
    pred = pd.concat(records, ignore_index=True)
    true_all = pred["true_token"].to_numpy()
    for name in predictor_names(baselines, protocol):
        pred[f"{name}_distance_mm"] = M.module_distance_mm(
            pred[f"{name}_pred"].to_numpy(), true_all, centres_mm
        )
    return pred


def predictor_names(baselines: list[Baseline], protocol: str) -> list[str]:
    """``model``, every baseline, and ``copy_input`` under the ``unmasked`` protocol."""
    return ["model", *(b.name for b in baselines)] + (
        ["copy_input"] if protocol == "unmasked" else []
    )


def predictor_summary(pred: pd.DataFrame, name: str) -> dict[str, Any]:
    """The ``masked_module`` block of one predictor, from its columns of ``pred``."""
    true_all = pred["true_token"].to_numpy()
    ranked = None
    top5 = f"{name}_top5"
    if top5 in pred:  # rebuild a (N, 5) "ranked" whose top-5 hit equals the stored flag
        flag = pred[top5].to_numpy()
        ranked = np.where(flag[:, None], true_all[:, None], -1).repeat(5, axis=1)
    summary = M.masked_module_summary(
        pred[f"{name}_pred"].to_numpy(),
        true_all,
        pred[f"{name}_distance_mm"].to_numpy(),
        pred["position"].to_numpy(),
        pred["length"].to_numpy(),
        ranked=ranked,
        side=pred["side"].to_numpy(),
    )
    if f"{name}_position_mm" in pred:
        summary["position_mm"] = M.position_summary(pred[f"{name}_position_mm"].to_numpy())
    return summary


def summarise(
    pred: pd.DataFrame,
    names: list[str],
    protocol: str,
    pair_logits: np.ndarray,
    pair_labels: np.ndarray,
) -> dict[str, Any]:
    """The ``metrics.json`` blocks of the single-hit predictions and of the pair task."""
    n = len(pair_labels)
    return {
        "protocol": protocol,
        "protocol_description": PROTOCOL_TEXT[protocol],
        "split": None,
        "n_tracks": int(n),
        "masked_module": predictor_summary(pred, "model"),
        "pair_pt": {
            "accuracy": M.binary_accuracy(pair_logits, pair_labels),
            "auc": M.roc_auc(pair_logits, pair_labels),
            "n_pairs": int(n),
            "fraction_positive": float(np.mean(pair_labels)) if n else float("nan"),
            "input": "clean pairs (no hit masked)",
        },
        "baselines": {
            name: {**predictor_summary(pred, name), "description": BASELINE_TEXT[name]}
            for name in names[1:]
        },
        "baseline_descriptions": {name: BASELINE_TEXT[name] for name in names[1:]},
        "pairing": "tracks of one event in a seeded random cycle: each track is A once and B once",
    }


def accuracy_by_volume_layer(
    pred: pd.DataFrame, names: list[str], dataset: PreparedDataset
) -> dict[str, dict[str, Any]]:
    """Exact accuracy of every predictor per (volume, layer) of the true module.

    Adds ``volume_id`` and ``layer_id`` columns to ``pred``. Keys are ``"<volume>_<layer>"``; each
    entry holds ``n`` (hidden hits) and one accuracy per predictor.
    """
    triples = dataset.vocab.decode(pred["true_token"].to_numpy())
    pred["volume_id"], pred["layer_id"] = triples[:, 0], triples[:, 1]
    by_vl = {}
    for (volume, layer), group in pred.groupby(["volume_id", "layer_id"], sort=True):
        entry: dict[str, Any] = {"n": len(group)}
        for name in names:
            entry[name] = float(
                np.mean(group[f"{name}_pred"].to_numpy() == group["true_token"].to_numpy())
            )
        by_vl[f"{volume}_{layer}"] = entry
    return by_vl


def multi_mask_accuracy(
    net: TrackingBert,
    pairs: EvaluationPairs,
    baselines: list[Baseline],
    protocol: str,
    seed: int,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """Exact accuracy with 2 and 3 random distinct hits hidden at once, model and baselines.

    The positions are drawn from ``numpy.random.default_rng(seed + 1)``, counts and sides in order.
    """
    tokens, tracks = pairs.tokens, pairs.tracks
    rows = np.arange(len(tokens))
    rng = np.random.default_rng(seed + 1)
    multi: dict[str, dict[str, Any]] = {}
    for count in MULTI_MASK_COUNTS:
        correct: dict[str, list[np.ndarray]] = {
            name: [] for name in ["model"] + [b.name for b in baselines]
        }
        for side in SIDES:
            track = pairs.track_of[side]
            hits = _random_positions(pairs.lengths[track], count, rng, tracks.max_length)
            true = tokens[track[:, None], hits]  # (n, count)
            input_ids, labels = mask_inputs(
                pairs.encoded, side, hits, true, pairs.vocab.mask_id, protocol
            )
            ranked, _ = rank_and_locate(
                net, pairs.encoded, input_ids, labels, pairs.vocab.num_special, pairs.hits,
                batch_size, f"{count} masked, {side}",
            )  # fmt: skip
            correct["model"].append(ranked[:, 0] == true.reshape(-1))
            hidden = np.zeros_like(pairs.real)
            hidden[rows[:, None], hits] = True
            visible = pairs.real[track] & ~hidden
            for baseline in baselines:
                preds = np.stack(
                    [
                        baseline.predict(tokens[track], visible, hits[:, j], tracks.hits[track])[
                            :, 0
                        ]
                        for j in range(count)
                    ],
                    axis=1,
                )
                correct[baseline.name].append((preds == true).reshape(-1))
        multi[str(count)] = {name: float(np.mean(np.concatenate(c))) for name, c in correct.items()}
        multi[str(count)]["n_predictions"] = int(sum(len(c) for c in correct["model"]))
    return multi


def evaluate_masked_modules(
    net: TrackingBert,
    dataset: PreparedDataset,
    tracks: TrackArrays,
    train: TrackArrays | None,
    protocol: str,
    seed: int,
    width: int,
    batch_size: int,
) -> EvaluationResult:
    """Masked-module prediction and the pair task of ``net`` on ``tracks``, beside the baselines.

    Parameters
    ----------
    net : the model (its vocabulary is the dataset's).
    dataset : the prepared dataset (vocabulary, module table and centres, detector).
    tracks : the evaluated tracks; ``train`` the train split the baselines count on (None: no
        baselines).
    protocol : ``masked`` or ``unmasked``.
    seed : seed of the pairing and the multi-mask positions.
    width : model input width of a pair, ``input_width(tracks.max_length, "event")``.
    batch_size : pairs per forward pass.
    """
    pairs = evaluation_pairs(tracks, dataset, seed, width, hits=net.config.reads_hits)
    encoded = pairs.encoded
    pair_logits = predict_pair_logits(
        net, encoded.input_ids, encoded.token_type_ids, encoded.attention_mask, batch_size,
        hits=pairs.hits,
    )  # fmt: skip
    baselines = [] if train is None else fit_baselines(dataset, train)
    names = predictor_names(baselines, protocol)
    centres = dataset.module_centres
    pred = predict_single_hits(net, pairs, baselines, centres, protocol, batch_size)
    metrics = summarise(pred, names, protocol, pair_logits, pairs.pair_labels)
    metrics["masked_module"]["by_volume_layer"] = accuracy_by_volume_layer(pred, names, dataset)
    metrics["multi_mask"] = multi_mask_accuracy(net, pairs, baselines, protocol, seed, batch_size)
    metrics["pair_pt"]["baselines"] = pair_baselines(
        tracks, pairs.track_of["B"], pairs.pair_labels, train, centres, dataset.b_field_t
    )
    return EvaluationResult(
        metrics=metrics,
        predictions=pred,
        names=names,
        pair_logits=pair_logits,
        pair_labels=pairs.pair_labels,
        centres_mm=centres,
    )


def load_metrics(report_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``metrics.json`` of a report directory."""
    path = Path(report_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a tracklm report?)") from None
