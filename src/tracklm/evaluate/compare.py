"""Two evaluations side by side: the paper's model (module tokens) and a hit-aware model.

``side_by_side`` is the table ``tracklm demo`` prints and appends (``add_comparison``) to the
hit-aware model's ``report.md``: both models on the same held-out tracks beside every baseline,
and one sentence on what the measured hit positions buy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _row(name: str, block: dict[str, Any], multi: dict[str, Any], key: str) -> str:
    pos = block.get("by_position", {})
    position = (block.get("position_mm") or {}).get("median")
    where = "-" if position is None else f"{float(position):.2f}"
    return (
        f"| {name} | {_pct(block.get('accuracy'))} | {_pct(block.get('top5_accuracy'))} | "
        f"{_pct(pos.get('first'))} | {_pct(pos.get('middle'))} | {_pct(pos.get('last'))} | "
        f"{_pct((multi.get('2') or {}).get(key))} | {_pct((multi.get('3') or {}).get(key))} | "
        f"{where} |"
    )


def side_by_side(tokens: dict[str, Any], hits: dict[str, Any]) -> str:
    """Markdown: both models and the baselines (from ``hits``' evaluation) on one table.

    Parameters
    ----------
    tokens, hits : the ``metrics.json`` of the paper's model and of the hit-aware model,
        evaluated on the same split and tracks.
    """
    lines = [
        "| predictor | accuracy | top-5 | first | middle | last | 2 hidden | 3 hidden "
        "| hit position, median [mm] |",
        "|---|---|---|---|---|---|---|---|---|",
        _row(
            "model, module tokens", tokens["masked_module"], tokens.get("multi_mask", {}), "model"
        ),
        _row("model, tokens + hits", hits["masked_module"], hits.get("multi_mask", {}), "model"),
    ]
    for name, block in hits.get("baselines", {}).items():
        lines.append(_row(name, block, hits.get("multi_mask", {}), name))
    return "\n".join(lines) + "\n\n" + what_hits_buy(tokens, hits)


def what_hits_buy(tokens: dict[str, Any], hits: dict[str, Any]) -> str:
    """One sentence, from the figures: what reading the visible hits' positions changed."""
    a = float(tokens["masked_module"]["accuracy"])
    b = float(hits["masked_module"]["accuracy"])
    helix = (hits.get("baselines", {}).get("helix_hits") or {}).get("accuracy")
    text = (
        f"Reading the measured positions of the visible hits (not the hidden one) takes "
        f"masked-module accuracy from {_pct(a)} to {_pct(b)} on the same held-out tracks"
    )
    if helix is not None:
        verdict = "above" if b > float(helix) else "still below"
        text += f", {verdict} the helix through the same measured hits ({_pct(helix)})"
    return text + "."


def add_comparison(report: Path, tokens: dict[str, Any], hits: dict[str, Any]) -> None:
    """Append (once) the side-by-side table to the hit-aware model's ``report.md``."""
    heading = "## Beside the paper's model"
    text = report.read_text() if report.is_file() else ""
    if heading in text:
        return
    report.write_text(
        text.rstrip("\n")
        + f"\n\n{heading}\n\nThe same held-out tracks, the model that reads module tokens only "
        f"(`DIR/run`) beside this one:\n\n{side_by_side(tokens, hits)}\n"
    )
