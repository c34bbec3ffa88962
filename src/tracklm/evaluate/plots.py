"""Evaluation plots: each function takes arrays and returns a matplotlib Figure (Agg backend).

``report_figures`` gathers the figures of an evaluation report from its result.

The caller saves and closes the figure (``save_figure`` does both). The mplhep CMS-like style is
used when mplhep is installed, plain matplotlib otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tracklm.evaluate import metrics as M
from tracklm.io.dataset import TrackArrays

if TYPE_CHECKING:
    from tracklm.evaluate.report import EvaluationResult

try:  # optional style, never required
    import mplhep as _mplhep
except ImportError:  # pragma: no cover - depends on the environment
    _mplhep = None

COLOURS = {
    "model": "#1f4e9c",
    "frequency": "#e3882f",
    "sequence": "#c0392b",
    "helix": "#3a9e4f",
    "helix+frequency": "#b5651d",
    "helix_hits": "#8c6bb1",
}
# Legend labels; names not listed are shown as they are.
LABELS = {
    "helix": "helix (module centres)",
    "helix_hits": "helix_hits (reference: measured hits, not seen by the model)",
}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _colour(name: str, index: int) -> str:
    return COLOURS.get(name, f"C{index % 10}")


def _figure(width: float = 7.0, height: float = 4.5, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    if _mplhep is not None:
        plt.style.use(_mplhep.style.ROOT)
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, axes[0]


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save ``fig`` as PNG and close it."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def plot_grouped_accuracy(
    groups: Sequence[str],
    accuracy: Mapping[str, Sequence[float]],
    xlabel: str,
    title: str = "",
) -> Figure:
    """Bars of accuracy per group, one bar per predictor (model and baselines).

    Parameters
    ----------
    groups : G group labels (e.g. first/middle/last or track lengths 4..8).
    accuracy : predictor name -> G accuracies in [0, 1] (NaN leaves a gap).
    xlabel : axis label of the groups.
    """
    fig, (ax,) = _figure()
    names = list(accuracy)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        values = np.asarray(accuracy[name], dtype=np.float64)
        bars = ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            label=_label(name),
            color=_colour(name, i),
        )
        for bar, value in zip(bars, values):
            if np.isfinite(value):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    value + 0.01,
                    f"{value:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(x, [str(g) for g in groups])
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("exact accuracy")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=max(len(names), 1), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_distance_distribution(distances_mm: Mapping[str, np.ndarray]) -> Figure:
    """Distance between predicted and true module centres: histogram and cumulative fraction.

    Parameters
    ----------
    distances_mm : predictor name -> (N,) distances in mm (0 for exact hits, inf for no prediction).
    """
    fig, (ax_hist, ax_cum) = _figure(12.0, 4.5, ncols=2)
    floor = 0.1  # exact hits (0 mm) are drawn in the first bin of the log axis
    finite = np.concatenate(
        [np.asarray(d)[np.isfinite(d)] for d in distances_mm.values()] or [np.zeros(1)]
    )
    top = max(float(finite.max(initial=1.0)), 10.0) * 1.5
    bins = np.logspace(np.log10(floor), np.log10(top), 50)
    for i, (name, d) in enumerate(distances_mm.items()):
        d = np.asarray(d, dtype=np.float64)
        shown = np.clip(d[np.isfinite(d)], floor, None)
        ax_hist.hist(
            shown, bins=bins, histtype="step", lw=1.5, label=_label(name), color=_colour(name, i)
        )
        xs = np.sort(np.where(np.isfinite(d), d, np.inf))
        fraction = np.arange(1, len(xs) + 1) / max(len(xs), 1)
        ax_cum.step(
            np.clip(xs, floor, None),
            fraction,
            where="post",
            label=_label(name),
            color=_colour(name, i),
        )
    ax_hist.set_xscale("log")
    ax_hist.set_xlabel("distance between predicted and true module centre [mm] (exact = 0.1)")
    ax_hist.set_ylabel("masked hits")
    ax_hist.legend(fontsize=8)
    ax_cum.set_xscale("log")
    ax_cum.set_ylim(0, 1.02)
    for threshold in (20.0, 100.0):
        ax_cum.axvline(threshold, color="grey", ls="--", lw=0.8)
    ax_cum.set_xlabel("distance [mm]")
    ax_cum.set_ylabel("fraction within distance")
    ax_cum.legend(loc="lower right", fontsize=8)
    ax_cum.grid(alpha=0.3)
    return fig


def plot_module_accuracy_rz(
    r_mm: np.ndarray, z_mm: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, title: str = ""
) -> Figure:
    """Module centres on an r-z map coloured by the accuracy of predictions for that module.

    Parameters
    ----------
    r_mm, z_mm : (M,) module centre radius and z.
    accuracy : (M,) fraction of masked hits on the module predicted exactly (NaN: never masked).
    counts : (M,) number of masked hits on the module.
    """
    fig, (ax,) = _figure(10.0, 4.5)
    seen = np.asarray(counts) > 0
    ax.scatter(z_mm[~seen], r_mm[~seen], s=4, c="lightgrey", label="not evaluated")
    points = ax.scatter(
        z_mm[seen],
        r_mm[seen],
        s=6 + 10 * np.sqrt(counts[seen] / max(counts.max(), 1)),
        c=accuracy[seen],
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    fig.colorbar(points, ax=ax, label="exact accuracy of the masked module")
    ax.set_xlabel("z [mm]")
    ax.set_ylabel("r [mm]")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, label: str = "model") -> Figure:
    """ROC curve of a binary task with its AUC, and the diagonal of a random guess."""
    fig, (ax,) = _figure(5.0, 5.0)
    ax.plot(fpr, tpr, color=COLOURS["model"], lw=1.8, label=f"{label} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="random")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_example_tracks(
    hits_mm: Sequence[np.ndarray],
    masked_index: Sequence[int],
    true_centre_mm: np.ndarray,
    predicted_centres_mm: Mapping[str, np.ndarray],
    detector_centres_mm: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
) -> Figure:
    """A few tracks in x-y and r-z with the masked hit, its true module and the predictions.

    Parameters
    ----------
    hits_mm : T arrays (n_hits, 3) of hit positions in flight order.
    masked_index : T indices of the masked hit in each track.
    true_centre_mm : (T, 3) centre of the true module of the masked hit.
    predicted_centres_mm : predictor name -> (T, 3) centre of its predicted module (NaN: none).
    detector_centres_mm : (M, 3) module centres drawn faintly as a backdrop, or None.
    titles : T titles.
    """
    n = len(hits_mm)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 7.0), squeeze=False)
    for t in range(n):
        hits = np.asarray(hits_mm[t], dtype=np.float64)
        keep = np.arange(len(hits)) != masked_index[t]
        ax_xy, ax_rz = axes[0, t], axes[1, t]
        if detector_centres_mm is not None:
            ax_xy.scatter(detector_centres_mm[:, 0], detector_centres_mm[:, 1], s=1, c="0.85")
            ax_rz.scatter(
                detector_centres_mm[:, 2],
                np.hypot(detector_centres_mm[:, 0], detector_centres_mm[:, 1]),
                s=1,
                c="0.85",
            )
        r = np.hypot(hits[:, 0], hits[:, 1])
        ax_xy.plot(hits[:, 0], hits[:, 1], "-", color="0.5", lw=0.8)
        ax_rz.plot(hits[:, 2], r, "-", color="0.5", lw=0.8)
        ax_xy.plot(hits[keep, 0], hits[keep, 1], "o", color="k", ms=4, label="visible hits")
        ax_rz.plot(hits[keep, 2], r[keep], "o", color="k", ms=4)
        true = true_centre_mm[t]
        ax_xy.plot(
            true[0], true[1], "*", color="#d62728", ms=14, mfc="none", mew=1.5, label="true module"
        )
        ax_rz.plot(
            true[2], np.hypot(true[0], true[1]), "*", color="#d62728", ms=14, mfc="none", mew=1.5
        )
        for i, (name, centres) in enumerate(predicted_centres_mm.items()):
            p = centres[t]
            marker = "x" if i == 0 else "+"
            ax_xy.plot(p[0], p[1], marker, color=_colour(name, i), ms=10, mew=2, label=_label(name))
            ax_rz.plot(p[2], np.hypot(p[0], p[1]), marker, color=_colour(name, i), ms=10, mew=2)
        # zoom on the track with a margin
        pts = np.vstack([hits, true[None, :]])
        pad = 30.0
        ax_xy.set_xlim(pts[:, 0].min() - pad, pts[:, 0].max() + pad)
        ax_xy.set_ylim(pts[:, 1].min() - pad, pts[:, 1].max() + pad)
        rr = np.hypot(pts[:, 0], pts[:, 1])
        ax_rz.set_xlim(pts[:, 2].min() - pad, pts[:, 2].max() + pad)
        ax_rz.set_ylim(max(rr.min() - pad, 0), rr.max() + pad)
        ax_xy.set_xlabel("x [mm]")
        ax_xy.set_ylabel("y [mm]")
        ax_rz.set_xlabel("z [mm]")
        ax_rz.set_ylabel("r [mm]")
        if titles is not None:
            ax_xy.set_title(titles[t], fontsize=9)
        if t == 0:
            handles, labels = ax_xy.get_legend_handles_labels()
    # One legend below all panels, so it never hides a track.
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- report figures
def report_figures(
    result: EvaluationResult, modules: pd.DataFrame, tracks: TrackArrays
) -> dict[str, tuple[Figure, str]]:
    """The figures of an evaluation report, by PNG file name, each with its caption.

    Parameters
    ----------
    result : what ``tracklm.evaluate.report.evaluate_masked_modules`` found.
    modules : the dataset's module table (token, cx, cy, cz in mm).
    tracks : the evaluated tracks (measured hits in mm for the example tracks).

    Returns
    -------
    dict file name -> (figure, caption), in the order the report shows them.
    """
    metrics, pred = result.metrics, result.predictions
    shown = [n for n in result.names if n != "copy_input"]
    blocks = {"model": metrics["masked_module"], **metrics["baselines"]}
    protocol = metrics["protocol"]
    nan = float("nan")
    figures: dict[str, tuple[Figure, str]] = {}
    lengths = [str(x) for x in range(4, 9)]
    figures["accuracy_by_position.png"] = (
        plot_grouped_accuracy(
            list(M.POSITION_NAMES),
            {n: [blocks[n]["by_position"].get(p, nan) for p in M.POSITION_NAMES] for n in shown},
            "position of the hidden hit",
            f"exact accuracy by position ({protocol})",
        ),
        "Exact accuracy by position of the hidden hit",
    )
    figures["accuracy_by_length.png"] = (
        plot_grouped_accuracy(
            lengths,
            {n: [blocks[n]["by_length"].get(k, nan) for k in lengths] for n in shown},
            "track length (hits)",
            f"exact accuracy by track length ({protocol})",
        ),
        "Exact accuracy by track length",
    )
    figures["distance.png"] = (
        plot_distance_distribution({n: pred[f"{n}_distance_mm"].to_numpy() for n in shown}),
        "Distance between predicted and true module centres, and its cumulative fraction",
    )
    figures["module_accuracy_rz.png"] = (
        _module_accuracy_map(pred, modules, protocol),
        "Model accuracy per module (module centres on an r-z map)",
    )
    labels, logits = result.pair_labels, result.pair_logits
    if labels.any() and not labels.all():
        fpr, tpr = M.roc_curve(logits, labels)
        figures["pair_roc.png"] = (
            plot_roc(fpr, tpr, M.roc_auc(logits, labels), label="pair task pT(B) > pT(A)"),
            "ROC of the pair task (is pT of track B larger than of track A?)",
        )
    examples = _example_tracks(pred, result.centres_mm, modules, tracks)
    if examples is not None:
        figures["example_tracks.png"] = (
            examples,
            "Example tracks (middle hit of track A hidden): x-y above, r-z below",
        )
    return figures


def _module_accuracy_map(pred: pd.DataFrame, modules: pd.DataFrame, protocol: str) -> Figure:
    """Model accuracy per true module on an r-z map of the module centres."""
    per_module = (
        pred.assign(correct=pred["model_pred"] == pred["true_token"])
        .groupby("true_token")["correct"]
        .agg(["mean", "size"])
    )
    tok = modules["token"].to_numpy()
    acc = per_module["mean"].reindex(tok).to_numpy(np.float64)
    cnt = per_module["size"].reindex(tok).fillna(0).to_numpy(np.float64)
    return plot_module_accuracy_rz(
        np.hypot(modules["cx"].to_numpy(), modules["cy"].to_numpy()),
        modules["cz"].to_numpy(),
        acc,
        cnt,
        title=f"model accuracy per true module ({protocol})",
    )


def _example_tracks(
    pred: pd.DataFrame, centres_mm: np.ndarray, modules: pd.DataFrame, tracks: TrackArrays
) -> Figure | None:
    """Middle hit of track A: two tracks the model gets wrong and two it gets right (None if none)."""
    middle = pred[(pred["side"] == "A") & (pred["position"] == "middle")]
    wrong = middle[middle["model_pred"] != middle["true_token"]].head(2)
    right = middle[middle["model_pred"] == middle["true_token"]].head(4 - len(wrong))
    examples = pd.concat([wrong, right])
    if not len(examples):
        return None
    t = examples["track"].to_numpy()
    hits = [tracks.hits[i, : tracks.lengths[i]] for i in t]
    predicted = {
        n: centres_mm[np.clip(examples[f"{n}_pred"].to_numpy(), 0, None)]
        for n in ["model", "helix", "helix_hits"]
        if f"{n}_pred" in examples
    }
    titles = [
        f"track {i}, hit {h}: model {'right' if p == tt else 'wrong'}"
        for i, h, p, tt in zip(
            t, examples["hit_index"], examples["model_pred"], examples["true_token"]
        )
    ]
    return plot_example_tracks(
        hits,
        examples["hit_index"].tolist(),
        centres_mm[examples["true_token"].to_numpy()],
        predicted,
        modules[["cx", "cy", "cz"]].to_numpy(),
        titles,
    )
