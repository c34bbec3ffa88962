"""The README's transfer table from one or more ``transfer_study.json`` files.

One row per task and study (e.g. one study per model input mode): the baselines' and the
zero-shot headline figures, then the fine-tuned, frozen and from-scratch figures at each
training size.

Usage::

    python benchmarks/transfer_table.py tokens=STUDY1/transfer_study.json \\
        hits=STUDY2/transfer_study.json [geometry=STUDY3/transfer_study.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MODES = ("finetune", "frozen", "scratch")


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def rows(label: str, study: dict[str, Any]) -> list[str]:
    """Markdown rows of one study, one per task."""
    out = []
    tasks = sorted({run["task"] for run in study["runs"]})
    for task in tasks:
        runs = [run for run in study["runs"] if run["task"] == task]
        metric = runs[0]["headline_metric"]
        references = study.get("references", {}).get(task, {})
        baselines = references.get("baselines") or {"baseline": references.get("baseline")}
        shown = ", ".join(
            f"{name} {_number((block or {}).get(metric))}" for name, block in baselines.items()
        )
        zero = _number((references.get("zero_shot") or {}).get(metric))
        cells = []
        for mode in MODES:
            by_size = sorted((r["train_size"], r["headline"]) for r in runs if r["mode"] == mode)
            cells.append(" / ".join(_number(value) for _, value in by_size))
        out.append(
            f"| {task} ({metric}) | {label} | {shown} | {zero} | " + " | ".join(cells) + " |"
        )
    return out


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    studies = []
    for item in argv:
        label, _, path = item.partition("=")
        studies.append((label, json.loads(Path(path).read_text())))
    sizes = " / ".join(f"{s // 1000}k" for s in studies[0][1]["sizes"])
    print(
        f"| task (headline) | model inputs | baselines | zero-shot | finetune {sizes} "
        f"| frozen {sizes} | scratch {sizes} |"
    )
    print("|---|---|---|---|---|---|---|")
    lines = [(row.split(" | ")[0], index, row) for index, (label, study) in enumerate(studies)
             for row in rows(label, study)]  # fmt: skip
    for _, _, row in sorted(lines, key=lambda item: (item[0], item[1])):
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
