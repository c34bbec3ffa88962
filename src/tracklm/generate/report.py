"""The report of ``tracklm generate``: ``report.md`` and its figures.

* ``step_accuracy.png``: accuracy of each generated step, the model beside the helix followers;
* ``observables.png``: the physics observables of the sampled (and completed) tracks over the
  simulated reference sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from tracklm.evaluate.plots import _figure, save_figure
from tracklm.generate.judge import OBSERVABLES

UNITS = {"first_r_mm": "mm", "first_z_mm": "mm", "last_r_mm": "mm", "last_z_mm": "mm",
         "pt_gev": "GeV", "d0_mm": "mm", "z0_mm": "mm"}  # fmt: skip


def write_report(directory: Path, metrics: dict[str, Any], figures: dict[str, Any]) -> None:
    """Write ``report.md`` and the PNG figures into ``directory``; ``figures`` holds, per part
    judged (``conditional``, ``unconditional``), the observables' ``values`` (``generated`` and
    ``reference``, name -> array)."""
    lines = [
        "# Generated tracks",
        "",
        f"Model `{metrics['model']}` (objective `{metrics['model_objective']}`, inputs "
        f"`{metrics['model_inputs']}`), tracks of `{metrics['data']}` split `{metrics['split']}`.",
        "",
    ]
    conditional = metrics.get("conditional")
    if conditional is not None:
        lines += _conditional_lines(conditional, metrics["decoding"])
        _plot_steps(directory / "step_accuracy.png", conditional)
        lines += ["", "![accuracy by step](step_accuracy.png)", ""]
    unconditional = metrics.get("unconditional")
    if unconditional is not None:
        lines += _sample_lines(
            f"## Sampled from nothing ({unconditional['samples']} tracks, "
            f"{unconditional['tracks_per_second']:.0f} tracks/s)",
            unconditional,
        )
    if conditional is not None:
        lines += _sample_lines("## The completed tracks as a sample", conditional["sample"])
    names = {"unconditional": "sampled", "conditional": "completed"}  # plotted in this order
    values = {label: figures[part]["values"] for part, label in names.items() if part in figures}
    if values:
        _plot_observables(directory / "observables.png", values)
        lines += ["", "![observables](observables.png)", ""]
    (directory / "report.md").write_text("\n".join(lines) + "\n")


def _conditional_lines(result: dict[str, Any], decoding: dict[str, Any]) -> list[str]:
    k = result["seed_hits"]
    rows = [("model", result), *result["baselines"].items()]
    lines = [
        f"## Completed from {k} seed hits ({result['tracks']} tracks, strategy "
        f"`{decoding['strategy']}`, {result['tracks_per_second']:.0f} tracks/s)",
        "",
        f"The fair baseline, with the model's information, is `{result['baseline']['name']}`.",
        "",
        "| predictor | exact completion | generated hits right | right length | mean length error "
        "| " + " | ".join(f"step {j + 1}" for j in range(len(result["step_accuracy"]))) + " |",
        "|---" * (5 + len(result["step_accuracy"])) + "|",
    ]
    for name, part in rows:
        steps = " | ".join(_pct(x) for x in part["step_accuracy"])
        lines.append(
            f"| {name} | {_pct(part['exact_completion'])} | {_pct(part['generated_hits_accuracy'])} "
            f"| {_pct(part['length_error']['exact'])} | {part['length_error']['mean']:+.2f} | {steps} |"
        )
    return lines


def _sample_lines(title: str, result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        title,
        "",
        f"Classifier AUC {result['classifier_auc']:.3f} (0.5: indistinguishable); unfittable "
        f"{_pct(result['unfittable_fraction'])} (simulated: "
        f"{_pct(result['reference_unfittable_fraction'])}). Distances as multiples of the floor "
        f"(mean over {result['floor_samples']} independent simulated samples of the same size).",
        "",
        "| observable | W1 | W1 floor | W1 / floor | KL | KL floor | KL / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in result["observables"].items():
        lines.append(
            f"| {name} | {d['w1']:.4g} | {d['w1_floor']:.3g} | {_ratio(d['w1'], d['w1_floor'])} "
            f"| {d['kl']:.3g} | {d['kl_floor']:.3g} | {_ratio(d['kl'], d['kl_floor'])} |"
        )
    return lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _ratio(a: float, b: float) -> str:
    return "n/a" if not (np.isfinite(a) and np.isfinite(b) and b > 0) else f"{a / b:.1f}"


def _plot_steps(path: Path, result: dict[str, Any]) -> None:
    fig, (ax,) = _figure()
    series = [("model", result), *result["baselines"].items()]
    for index, (name, part) in enumerate(series):
        steps = np.arange(1, len(part["step_accuracy"]) + 1)
        accuracy = np.array([np.nan if x is None else x for x in part["step_accuracy"]], float)
        ax.plot(steps, 100 * accuracy, marker="o", label=name, color=f"C{index}")
    ax.set_xlabel(f"generated step (hit {result['seed_hits']} + step of the true track)")
    ax.set_ylabel("module right (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    save_figure(fig, path)


def _plot_observables(path: Path, samples: dict[str, dict[str, dict[str, np.ndarray]]]) -> None:
    names = list(OBSERVABLES)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    grid = axes.reshape(-1)
    for ax, name in zip(grid, names, strict=False):
        reference = next(iter(samples.values()))["reference"][name]
        reference = reference[np.isfinite(reference)]
        if reference.size == 0:
            continue
        lo, hi = np.quantile(reference, [0.005, 0.995])
        bins = np.linspace(lo, hi + 1e-9, 41)
        if np.allclose(reference, np.round(reference)) and hi - lo < 40:
            bins = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5)
        reference = np.clip(reference, bins[0], bins[-1] - 1e-9 * (bins[-1] - bins[0]))
        ax.hist(reference, bins=bins, density=True, histtype="stepfilled", alpha=0.3,
                color="grey", label="simulated")  # fmt: skip
        for index, (label, part) in enumerate(samples.items()):
            values = part["generated"][name]
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            # beyond the range: shown in the edge bins
            values = np.clip(values, bins[0], bins[-1] - 1e-9 * (bins[-1] - bins[0]))
            ax.hist(values, bins=bins, density=True, histtype="step", color=f"C{index}",
                    label=label)  # fmt: skip
        unit = UNITS.get(name)
        ax.set_xlabel(name if unit is None else f"{name.removesuffix('_' + unit)} ({unit})")
    for ax in grid[len(names) :]:
        ax.axis("off")
    grid[0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
