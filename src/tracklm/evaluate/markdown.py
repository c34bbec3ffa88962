"""The text of an evaluation report (``report.md``): headline table, findings and breakdowns.

Pure functions of the content of ``metrics.json`` (see ``tracklm/evaluate/report.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Baselines using information the model does not have: shown, never the one to beat.
REFERENCE_ONLY = ("helix_hits",)
"""Baselines that use information a module-token model does not have (the measured hits); for a
model that reads hit positions (``model_inputs: hits``) they are fair baselines."""


def reference_only(metrics: dict[str, Any]) -> tuple[str, ...]:
    """The baselines that are references, not baselines, for the evaluated model."""
    return () if metrics.get("model_inputs") == "hits" else REFERENCE_ONLY


def _pct(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _mm(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return "inf" if not np.isfinite(value) else f"{value:.{digits}f}"


def headline_table(metrics: dict[str, Any]) -> str:
    """Markdown table: model beside every baseline (accuracy, top-5, within 20 mm, mean and 90%
    quantile of the distance between predicted and true module centres, first / middle / last),
    with the protocol in the header row's caption. (The median distance is 0 wherever most
    predictions are exact; it stays in ``metrics.json``.)

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
        "| predictor | accuracy | top-5 | within 20 mm | mean distance [mm] "
        "| 90% quantile [mm] | first | middle | last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, block in rows:
        pos = block.get("by_position", {})
        shown = f"{name} (reference: measured hits)" if name in reference_only(metrics) else name
        lines.append(
            f"| {shown} | {_pct(block.get('accuracy'))} | {_pct(block.get('top5_accuracy'))} | "
            f"{_pct(block.get('within_20mm'))} | {_mm(block.get('mean_distance_mm'))} | "
            f"{_mm(block.get('q90_distance_mm'))} | "
            f"{_pct(pos.get('first'))} | {_pct(pos.get('middle'))} | {_pct(pos.get('last'))} |"
        )
    return "\n".join(lines)


def report_markdown(metrics: dict[str, Any], figures: dict[str, str]) -> str:
    """The text of ``report.md``.

    Parameters
    ----------
    metrics : the content of ``metrics.json``.
    figures : PNG file name -> caption, in the order shown.
    """
    mm = metrics["masked_module"]
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
        *(
            [
                "A next-module (causal) model predicts each hidden hit from the hits before it "
                "only: what follows is never read.",
                "",
            ]
            if metrics.get("model_objective") == "next-module"
            else []
        ),
        "## Headline",
        "",
        headline_table(metrics),
        "",
    ]
    lines += _findings(metrics)
    lines += _breakdowns(metrics)
    lines += ["", "## Baselines", ""]
    lines.append(_counted_on(metrics.get("baselines_counted_on")))
    lines.append("")
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


def _auc(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _counted_on(record: dict[str, Any] | None) -> str:
    """The sentence saying which tracks the baselines counted on, or why they are left out."""
    if not record:
        return "The baselines counted on the dataset's train split."
    if record.get("left_out"):
        return f"**The baselines are left out**: {record.get('reason')}."
    return (
        f"The baselines counted on the train split of `{record['data']}` ({record['source']}, "
        f"{record['n_tracks']} tracks), which holds none of the evaluated events."
    )


def _findings(metrics: dict[str, Any]) -> list[str]:
    """The model against the best fair baseline, and the notes the protocol and baselines need."""
    mm = metrics["masked_module"]
    lines: list[str] = []
    references = reference_only(metrics)
    fair = {k: v for k, v in metrics["baselines"].items() if k not in references}
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
    if "helix_hits" in metrics["baselines"] and not references:
        lines += [
            "`helix_hits` is the baseline this model must beat: it fits the same measured hit "
            "positions the model reads (the hidden hit's excluded for both).",
            "",
        ]
    elif "helix_hits" in metrics["baselines"]:
        lines += [
            "`helix_hits` is a reference for this model, not a baseline: it fits the measured hit "
            "positions, which the model never sees (it sees module ids only). The fair geometric "
            "baseline is `helix`, on module centres; `helix_hits` is the baseline a model that "
            "sees hit positions must beat.",
            "",
        ]
    lines += _positions(metrics)
    if metrics["protocol"] == "unmasked":
        lines += [
            "Warning: under this protocol the answer is in the input. `copy_input` shows what copying "
            "it scores; compare the model with the `masked` protocol. Baselines always hide the hit.",
            "",
        ]
    return lines


def _positions(metrics: dict[str, Any]) -> list[str]:
    """One sentence per predictor with a ``position_mm`` block (the distance between the position
    it predicts for the hidden hit and the true hit)."""
    blocks = {"model": metrics["masked_module"], **metrics["baselines"]}
    lines = []
    for name, block in blocks.items():
        position = block.get("position_mm")
        if position:
            lines += [
                f"Position: `{name}` puts the hidden hit {_mm(position.get('median'), 2)} mm from "
                f"the true hit (median; 68% within {_mm(position.get('q68'), 2)} mm, 95% within "
                f"{_mm(position.get('q95'), 2)} mm).",
                "",
            ]
    return lines


def _breakdowns(metrics: dict[str, Any]) -> list[str]:
    """Tables by track length, by track of the pair, by number of hidden hits, the pair task and
    by volume and layer."""
    mm = metrics["masked_module"]
    names = ["model", *metrics["baselines"]]
    blocks = {"model": mm, **metrics["baselines"]}
    lines = [
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
    if pp.get("baselines"):
        lines += ["| predictor | accuracy | ROC AUC |", "|---|---|---|"]
        lines.append(f"| model | {_pct(pp['accuracy'])} | {_auc(pp['auc'])} |")
        for name, block in pp["baselines"].items():
            lines.append(
                f"| {name}: {block['description']} | {_pct(block['accuracy'])} | {_auc(block['auc'])} |"
            )
        lines.append("")
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
    return lines
