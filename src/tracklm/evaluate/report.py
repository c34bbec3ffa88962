"""``tracklm evaluate``: masked-module evaluation of a model beside physics baselines, and a report.

Writes a report directory (atomically) with ``metrics.json`` (schema in ARCHITECTURE.md, plus
extra keys), ``report.md``, ``predictions.parquet`` (every single-hit prediction with its distance
to the truth, model and baselines), PNG plots and ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracklm._fs import atomic_output_dir, write_json
from tracklm.data.sequences import encode_pairs
from tracklm.errors import InputError
from tracklm.evaluate import metrics as M
from tracklm.evaluate import plots
from tracklm.evaluate.baselines import FrequencyBaseline, HelixBaseline, HelixFrequencyBaseline
from tracklm.evaluate.helix import LayerSurfaces, ModuleBounds
from tracklm.evaluate.masked import (
    PROTOCOLS,
    mask_inputs,
    pair_partners,
    pick_device,
    predict_masked_modules,
    predict_pair_logits,
)
from tracklm.io.dataset import TrackArrays, open_dataset
from tracklm.manifest import write_manifest

log = logging.getLogger(__name__)

SIDES = ("A", "B")
# Baselines using information the model does not have: shown, never the one to beat.
REFERENCE_ONLY = ("helix_hits",)
MULTI_MASK_COUNTS = (2, 3)
PROTOCOL_TEXT = {
    "masked": "masked: the evaluated hit is replaced by [MASK] in the input (the honest result)",
    "unmasked": (
        "unmasked: the evaluated hit's true token stays visible in the input, as in the public "
        "code's evaluation; the model can copy it, so this figure does NOT measure prediction"
    ),
}
BASELINE_TEXT = {
    "frequency": "most frequent module given the neighbouring visible modules, counted on the train split",
    "helix": (
        "helix fitted to the visible modules' CENTRES (the information the model has), each "
        "weighted by its module's size in its local frame, through the beam spot; crossed with "
        "the layer of the hidden hit (chosen by the train-split layer statistics and the helix), "
        "predicting the module whose bounds contain the crossing"
    ),
    "helix+frequency": (
        "the frequency baseline's candidates (and the helix's pick), those the centre-based helix "
        "passes through first, in frequency order"
    ),
    "helix_hits": (
        "REFERENCE, not a fair baseline: the same helix algorithm on the measured hit positions, "
        "information the model does not have"
    ),
    "copy_input": "copies the token visible at the evaluated position (only meaningful under 'unmasked')",
}


# ----------------------------------------------------------------------------- headline table
def _pct(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _mm(value: Any) -> str:
    if value is None:
        return "n/a"
    return "inf" if not np.isfinite(value) else f"{value:.1f}"


def headline_table(metrics: dict[str, Any]) -> str:
    """Markdown table: model beside every baseline (accuracy, top-5, within 20 mm, median distance,
    first / middle / last), with the protocol in the header row's caption.

    Parameters
    ----------
    metrics : the content of ``metrics.json``.
    """
    rows = [("model", metrics["masked_module"])]
    rows += list(metrics.get("baselines", {}).items())
    lines = [
        f"Protocol: **{metrics.get('protocol', '?')}**, split {metrics.get('split', '?')}, "
        f"{metrics.get('n_tracks', '?')} tracks",
        "",
        "| predictor | accuracy | top-5 | within 20 mm | median distance [mm] | first | middle | last |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, block in rows:
        pos = block.get("by_position", {})
        shown = f"{name} (reference: measured hits)" if name in REFERENCE_ONLY else name
        lines.append(
            f"| {shown} | {_pct(block.get('accuracy'))} | {_pct(block.get('top5_accuracy'))} | "
            f"{_pct(block.get('within_20mm'))} | {_mm(block.get('median_distance_mm'))} | "
            f"{_pct(pos.get('first'))} | {_pct(pos.get('middle'))} | {_pct(pos.get('last'))} |"
        )
    return "\n".join(lines)


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


def _load_model(model_dir: str | os.PathLike[str]) -> Any:
    from tracklm.models.bert import TrackingBert

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
        dataset = open_dataset(data)
        net.check_vocab(dataset.vocab)
        all_tracks = dataset.split(split)
        if len(all_tracks) == 0:
            raise InputError(f"{Path(data) / split}: the split holds no tracks")
        train = dataset.split("train")
        if len(train) == 0:
            raise InputError(f"{Path(data) / 'train'}: no tracks to count the baselines on")
        selected = _select_tracks(all_tracks, max_tracks, seed)
        tracks = all_tracks.take(selected)
        train = train.take(slice(None))
        width = 2 * tracks.max_length + 3
        if width > net.config.max_length:
            raise InputError(
                f"{data}: pairs of tracks of up to {tracks.max_length} hits need {width} positions, "
                f"the model knows {net.config.max_length}"
            )
        result = _evaluate(net, dataset, tracks, train, protocol, seed, width, batch_size)
        metrics, frames = result["metrics"], result["frames"]
        metrics["split"] = split
        metrics["model"] = str(model)
        metrics["data"] = str(data)
        metrics["selected_tracks"] = (
            "all" if max_tracks is None else f"random {len(tracks)} (seed {seed})"
        )
        metrics = M.json_ready(metrics)
        write_json(tmp / "metrics.json", metrics)
        frames["predictions"].to_parquet(tmp / "predictions.parquet", index=False)
        figures = _write_plots(tmp, dataset, tracks, result)
        (tmp / "report.md").write_text(_report_markdown(metrics, figures))
        write_manifest(
            tmp,
            "evaluate",
            inputs={"model": str(model), "data": str(data)},
            config={"split": split, "protocol": protocol, "max_tracks": max_tracks, "seed": seed},
            vocab_sha256=dataset.vocab.sha256,
        )
    log.info("evaluation written to %s", out)
    return metrics


def module_bounds(dataset: Any) -> ModuleBounds:
    """The modules' frames and bounds from the detector the dataset was prepared with.

    ``manifest.json`` records it under ``inputs.detector.name`` (``"trackml"`` or a
    ``detectors.csv`` path). When it is absent, unreadable or does not hold every module of the
    dataset, the bounds are guessed from the module centres (``ModuleBounds.approximate``).
    """
    name = (dataset.manifest.get("inputs") or {}).get("detector", {}).get("name")
    if name:
        try:
            from tracklm.detector.geometry import Detector

            return ModuleBounds.from_detector(
                dataset.modules, Detector.load(name), len(dataset.vocab)
            )
        except Exception as exc:  # any failure: fall back, and say so
            log.warning("detector %s not usable for module bounds (%s); guessing", name, exc)
    else:
        log.warning("dataset records no detector; module bounds guessed from centres")
    return ModuleBounds.approximate(dataset.modules, len(dataset.vocab))


def _evaluate(
    net: Any,
    dataset: Any,
    tracks: TrackArrays,
    train: TrackArrays,
    protocol: str,
    seed: int,
    width: int,
    batch_size: int,
) -> dict[str, Any]:
    vocab = dataset.vocab
    centres = dataset.module_centres
    n = len(tracks)
    length = tracks.lengths.astype(np.int64)
    tokens = tracks.tokens.astype(np.int64)
    real = np.arange(tracks.max_length)[None, :] < length[:, None]
    rows = np.arange(n)

    # Pairs: track i is A of pair i and B of the pair whose A is its predecessor in the cycle.
    partner = pair_partners(tracks.event_id, seed)
    encoded = encode_pairs(tokens, length, tokens[partner], length[partner], vocab, width)
    pair_labels = tracks.pt[partner] > tracks.pt
    track_of = {"A": rows, "B": partner}  # which track sits on each side of pair i

    def run(input_ids: np.ndarray, labels: np.ndarray, what: str) -> np.ndarray:
        return predict_masked_modules(
            net,
            input_ids,
            encoded.token_type_ids,
            encoded.attention_mask,
            labels,
            vocab.num_special,
            k=5,
            batch_size=batch_size,
            description=what,
        )

    pair_logits = predict_pair_logits(
        net, encoded.input_ids, encoded.token_type_ids, encoded.attention_mask, batch_size
    )

    # Baselines, fitted on the train split.
    surfaces = LayerSurfaces.from_modules(dataset.modules, len(vocab))
    bounds = module_bounds(dataset)
    frequency = FrequencyBaseline(train.tokens, train.lengths)
    helix = HelixBaseline(
        surfaces, train.tokens, train.lengths, centres, use_hits=False, bounds=bounds
    )
    baselines = [
        frequency,
        helix,
        HelixFrequencyBaseline(frequency, helix),
        HelixBaseline(surfaces, train.tokens, train.lengths, centres, use_hits=True, bounds=bounds),
    ]

    # Single hidden hit: first, middle, last of every track, as A and as B.
    hit_of = {"first": np.zeros(n, np.int64), "middle": length // 2, "last": length - 1}
    baseline_ranked: dict[tuple[str, str], np.ndarray] = {}
    for position, hit in hit_of.items():
        visible = real & (np.arange(tracks.max_length)[None, :] != hit[:, None])
        for baseline in baselines:
            baseline_ranked[(baseline.name, position)] = baseline.predict(
                tokens, visible, hit, tracks.hits
            )
    records = []
    for side in SIDES:
        for position, hit_by_track in hit_of.items():
            track = track_of[side]
            hit = hit_by_track[track]
            true = tokens[track, hit]
            input_ids, labels = mask_inputs(
                encoded, side, hit[:, None], true[:, None], vocab.mask_id, protocol
            )
            ranked = run(input_ids, labels, f"{side} {position}")
            frame = {
                "track": track,
                "event_id": tracks.event_id[track],
                "side": side,
                "position": position,
                "hit_index": hit,
                "length": length[track],
                "true_token": true,
                "model_pred": ranked[:, 0],
                "model_top5": M.top_k_hits(ranked, true, 5),
            }
            for baseline in baselines:
                b_ranked = baseline_ranked[(baseline.name, position)][track]
                frame[f"{baseline.name}_pred"] = b_ranked[:, 0]
                frame[f"{baseline.name}_top5"] = M.top_k_hits(b_ranked, true, 5)
            if protocol == "unmasked":
                frame["copy_input_pred"] = input_ids[
                    rows, (encoded.offset_a if side == "A" else encoded.offset_b) + hit
                ]
            records.append(pd.DataFrame(frame))
    pred = pd.concat(records, ignore_index=True)
    names = (
        ["model"] + [b.name for b in baselines] + (["copy_input"] if protocol == "unmasked" else [])
    )
    true_all = pred["true_token"].to_numpy()
    for name in names:
        pred[f"{name}_distance_mm"] = M.module_distance_mm(
            pred[f"{name}_pred"].to_numpy(), true_all, centres
        )

    def summary(name: str) -> dict[str, Any]:
        top5 = f"{name}_top5"
        ranked = None
        if top5 in pred:  # rebuild a (N, 5) "ranked" whose top-5 hit equals the stored flag
            flag = pred[top5].to_numpy()
            ranked = np.where(flag[:, None], true_all[:, None], -1).repeat(5, axis=1)
        return M.masked_module_summary(
            pred[f"{name}_pred"].to_numpy(),
            true_all,
            pred[f"{name}_distance_mm"].to_numpy(),
            pred["position"].to_numpy(),
            pred["length"].to_numpy(),
            ranked=ranked,
            side=pred["side"].to_numpy(),
        )

    metrics: dict[str, Any] = {
        "protocol": protocol,
        "protocol_description": PROTOCOL_TEXT[protocol],
        "split": None,
        "n_tracks": int(n),
        "masked_module": summary("model"),
        "pair_pt": {
            "accuracy": M.binary_accuracy(pair_logits, pair_labels),
            "auc": M.roc_auc(pair_logits, pair_labels),
            "n_pairs": int(n),
            "fraction_positive": float(np.mean(pair_labels)) if n else float("nan"),
            "input": "clean pairs (no hit masked)",
        },
        "baselines": {
            name: {**summary(name), "description": BASELINE_TEXT[name]} for name in names[1:]
        },
        "baseline_descriptions": {name: BASELINE_TEXT[name] for name in names[1:]},
        "pairing": "tracks of one event in a seeded random cycle: each track is A once and B once",
    }

    # Per volume / layer of the true module.
    triples = vocab.decode(true_all)
    pred["volume_id"], pred["layer_id"] = triples[:, 0], triples[:, 1]
    by_vl = {}
    for (volume, layer), group in pred.groupby(["volume_id", "layer_id"], sort=True):
        entry: dict[str, Any] = {"n": len(group)}
        for name in names:
            entry[name] = float(
                np.mean(group[f"{name}_pred"].to_numpy() == group["true_token"].to_numpy())
            )
        by_vl[f"{volume}_{layer}"] = entry
    metrics["masked_module"]["by_volume_layer"] = by_vl

    # Several hidden hits at once (random distinct positions), model and baselines.
    rng = np.random.default_rng(seed + 1)
    multi: dict[str, Any] = {}
    for count in MULTI_MASK_COUNTS:
        correct: dict[str, list[np.ndarray]] = {
            name: [] for name in ["model"] + [b.name for b in baselines]
        }
        for side in SIDES:
            track = track_of[side]
            hits = _random_positions(length[track], count, rng, tracks.max_length)  # (n, count)
            true = tokens[track[:, None], hits]
            input_ids, labels = mask_inputs(encoded, side, hits, true, vocab.mask_id, protocol)
            ranked = run(input_ids, labels, f"{count} masked, {side}")
            correct["model"].append(ranked[:, 0] == true.reshape(-1))
            hidden = np.zeros_like(real)
            hidden[rows[:, None], hits] = True
            visible = real[track] & ~hidden
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
    metrics["multi_mask"] = multi
    return {
        "metrics": metrics,
        "frames": {"predictions": pred},
        "names": names,
        "pair_logits": pair_logits,
        "pair_labels": pair_labels,
        "centres": centres,
    }


# ----------------------------------------------------------------------------- plots and report
def _write_plots(
    tmp: Path, dataset: Any, tracks: TrackArrays, result: dict[str, Any]
) -> dict[str, str]:
    metrics, pred, names = result["metrics"], result["frames"]["predictions"], result["names"]
    shown = [n for n in names if n != "copy_input"]
    figures: dict[str, str] = {}

    def block(name: str) -> dict[str, Any]:
        return metrics["masked_module"] if name == "model" else metrics["baselines"][name]

    def save(fig: Any, filename: str, caption: str) -> None:
        plots.save_figure(fig, tmp / filename)
        figures[filename] = caption

    nan = float("nan")
    save(
        plots.plot_grouped_accuracy(
            list(M.POSITION_NAMES),
            {n: [block(n)["by_position"].get(p, nan) for p in M.POSITION_NAMES] for n in shown},
            "position of the hidden hit",
            f"exact accuracy by position ({metrics['protocol']})",
        ),
        "accuracy_by_position.png",
        "Exact accuracy by position of the hidden hit",
    )
    lengths = [str(x) for x in range(4, 9)]
    save(
        plots.plot_grouped_accuracy(
            lengths,
            {n: [block(n)["by_length"].get(k, nan) for k in lengths] for n in shown},
            "track length (hits)",
            f"exact accuracy by track length ({metrics['protocol']})",
        ),
        "accuracy_by_length.png",
        "Exact accuracy by track length",
    )
    save(
        plots.plot_distance_distribution({n: pred[f"{n}_distance_mm"].to_numpy() for n in shown}),
        "distance.png",
        "Distance between predicted and true module centres, and its cumulative fraction",
    )
    modules = dataset.modules
    per_module = (
        pred.assign(correct=pred["model_pred"] == pred["true_token"])
        .groupby("true_token")["correct"]
        .agg(["mean", "size"])
    )
    tok = modules["token"].to_numpy()
    acc = per_module["mean"].reindex(tok).to_numpy(np.float64)
    cnt = per_module["size"].reindex(tok).fillna(0).to_numpy(np.float64)
    save(
        plots.plot_module_accuracy_rz(
            np.hypot(modules["cx"].to_numpy(), modules["cy"].to_numpy()),
            modules["cz"].to_numpy(),
            acc,
            cnt,
            title=f"model accuracy per true module ({metrics['protocol']})",
        ),
        "module_accuracy_rz.png",
        "Model accuracy per module (module centres on an r-z map)",
    )
    labels, logits = result["pair_labels"], result["pair_logits"]
    if labels.any() and not labels.all():
        fpr, tpr = M.roc_curve(logits, labels)
        save(
            plots.plot_roc(fpr, tpr, M.roc_auc(logits, labels), label="pair task pT(B) > pT(A)"),
            "pair_roc.png",
            "ROC of the pair task (is pT of track B larger than of track A?)",
        )
    # Example tracks: middle hit of track A, two the model gets wrong and two it gets right.
    middle = pred[(pred["side"] == "A") & (pred["position"] == "middle")]
    wrong = middle[middle["model_pred"] != middle["true_token"]].head(2)
    right = middle[middle["model_pred"] == middle["true_token"]].head(4 - len(wrong))
    examples = pd.concat([wrong, right])
    if len(examples):
        centres = result["centres"]
        t = examples["track"].to_numpy()
        hits = [tracks.hits[i, : tracks.lengths[i]] for i in t]
        predicted = {
            n: centres[np.clip(examples[f"{n}_pred"].to_numpy(), 0, None)]
            for n in ["model", "helix", "helix_hits"]
            if f"{n}_pred" in examples
        }
        titles = [
            f"track {i}, hit {h}: model {'right' if p == tt else 'wrong'}"
            for i, h, p, tt in zip(
                t, examples["hit_index"], examples["model_pred"], examples["true_token"]
            )
        ]
        save(
            plots.plot_example_tracks(
                hits,
                examples["hit_index"].tolist(),
                centres[examples["true_token"].to_numpy()],
                predicted,
                modules[["cx", "cy", "cz"]].to_numpy(),
                titles,
            ),
            "example_tracks.png",
            "Example tracks (middle hit of track A hidden): x-y above, r-z below",
        )
    return figures


def _report_markdown(metrics: dict[str, Any], figures: dict[str, str]) -> str:
    mm = metrics["masked_module"]
    names = ["model", *metrics["baselines"]]
    blocks = {"model": mm, **metrics["baselines"]}
    lines = [
        "# Masked-module evaluation",
        "",
        f"**Protocol: {metrics['protocol_description']}.**",
        "",
        f"Split `{metrics['split']}`, {metrics['n_tracks']} tracks ({metrics['selected_tracks']}); "
        f"{mm['n_predictions']} hidden hits: the first, middle (length // 2) and last hit of every track, "
        "once as track A and once as track B of a pair of tracks from the same event "
        f"({metrics['pairing']}). Model predictions are the argmax over module tokens only.",
        "",
        "## Headline",
        "",
        headline_table(metrics),
        "",
    ]
    fair = {k: v for k, v in metrics["baselines"].items() if k not in REFERENCE_ONLY}
    best = max(fair.items(), key=lambda kv: kv[1].get("accuracy") or 0.0, default=None)
    if best is not None and metrics["protocol"] == "masked":
        name, b = best
        diff = (mm["accuracy"] or 0.0) - (b.get("accuracy") or 0.0)
        verdict = "beats" if diff > 0 else "does NOT beat"
        lines += [
            f"Finding: the model {verdict} the best baseline (`{name}`): "
            f"{_pct(mm['accuracy'])} vs {_pct(b.get('accuracy'))} exact accuracy "
            f"({100 * diff:+.1f} points).",
            "",
        ]
    if "helix_hits" in metrics["baselines"]:
        lines += [
            "`helix_hits` is a reference, not a baseline: it fits the measured hit positions, "
            "which the model never sees (it sees module ids only). The fair geometric baseline "
            "is `helix`, on module centres.",
            "",
        ]
    if metrics["protocol"] == "unmasked":
        lines += [
            "Warning: under this protocol the answer is in the input. `copy_input` shows what copying "
            "it scores; compare the model with the `masked` protocol. Baselines always hide the hit.",
            "",
        ]
    lines += [
        "## By track length",
        "",
        "| predictor | " + " | ".join(str(k) for k in range(4, 9)) + " |",
        "|---|" + "---|" * 5,
    ]
    for n in names:
        lines.append(
            f"| {n} | "
            + " | ".join(_pct(blocks[n]["by_length"].get(str(k))) for k in range(4, 9))
            + " |"
        )
    lines += ["", "## By track of the pair", "", "| predictor | A | B |", "|---|---|---|"]
    for n in names:
        bt = blocks[n].get("by_track", {})
        lines.append(f"| {n} | {_pct(bt.get('A'))} | {_pct(bt.get('B'))} |")
    lines += [
        "",
        "## Several hidden hits at once (random distinct positions)",
        "",
        "| hidden hits | "
        + " | ".join(k for k in metrics["multi_mask"]["2"] if k != "n_predictions")
        + " |",
        "|---|" + "---|" * (len(metrics["multi_mask"]["2"]) - 1),
    ]
    for count, entry in metrics["multi_mask"].items():
        lines.append(
            f"| {count} | "
            + " | ".join(_pct(v) for k, v in entry.items() if k != "n_predictions")
            + " |"
        )
    pp = metrics["pair_pt"]
    lines += [
        "",
        "## Pair task: pT(B) > pT(A)",
        "",
        f"Accuracy {_pct(pp['accuracy'])}, ROC AUC {pp['auc'] if pp['auc'] is None else round(pp['auc'], 4)} "
        f"on {pp['n_pairs']} pairs ({pp['input']}; {_pct(pp['fraction_positive'])} positive).",
        "",
    ]
    lines += [
        "## By volume and layer of the true module",
        "",
        "| volume_layer | hidden hits | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, entry in mm["by_volume_layer"].items():
        lines.append(
            f"| {key} | {entry['n']} | " + " | ".join(_pct(entry.get(n)) for n in names) + " |"
        )
    lines += ["", "## Baselines", ""]
    for name, text in metrics["baseline_descriptions"].items():
        lines.append(f"- `{name}`: {text}.")
    lines += ["", "## Plots", ""]
    for filename, caption in figures.items():
        lines += [f"### {caption}", "", f"![{caption}]({filename})", ""]
    lines += [
        "Files: `metrics.json`, `predictions.parquet` (every single-hit prediction and its distance), "
        "`manifest.json`.",
        "",
    ]
    return "\n".join(lines)


def load_metrics(report_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``metrics.json`` of a report directory."""
    path = Path(report_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a tracklm report?)") from None
