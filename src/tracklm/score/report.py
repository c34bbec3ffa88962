"""The report of a scoring (``SCORE/report.md``) and its figures.

Text is a pure function of the content of ``score.json`` and the timing; each plot function takes
arrays and returns a matplotlib Figure (saved and closed by ``save_figure``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from tracklm.evaluate.plots import save_figure

if TYPE_CHECKING:
    from tracklm.score.run import EventDisplay

DISPLAY_PARTICLES = 150
"""About how many reconstructable particles the event display shows: beyond that, a wedge in
azimuth around phi = 0 holding about this many, so that tracks stay distinguishable."""

FIGURES = {
    "efficiency_pt.png": "Efficiency (double majority) against the particle's pT.",
    "efficiency_eta.png": "Efficiency (double majority) against the particle's pseudorapidity.",
    "event_display.png": "One event in x-y and r-z: hits of found tracks coloured by track, hits "
    "of missed reconstructable particles marked with red crosses, other hits grey.",
}


LOSS_TEXT = {
    "not_found_impure": "particle not found: a track holds most of its hits, but is mostly others'",
    "not_found_unassigned": "particle not found: half or more of its hits left out",
    "not_found_split": "particle not found: its hits split over tracks, none with more than half",
    "found_hit_unassigned": "particle found: its hits left out",
    "found_hit_elsewhere": "particle found: its hits in other tracks",
}


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _seconds(value: Any) -> str:
    return "not recorded" if value is None else f"{value:.3g} s"


def _bin_labels(edges: Sequence[float | None], unit: str = "") -> list[str]:
    return [
        f"> {low:g}{unit}" if high is None else f"{low:g} - {high:g}{unit}"
        for low, high in itertools.pairwise(edges)
    ]


def _binomial_error(found: np.ndarray, total: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        efficiency = found / total
        return np.sqrt(efficiency * (1 - efficiency) / total)


def plot_efficiency(
    labels: Sequence[str],
    found: np.ndarray,
    total: np.ndarray,
    xlabel: str,
    positions: np.ndarray | None = None,
) -> Figure:
    """Efficiency per bin with binomial error bars; empty bins are left out.

    Parameters
    ----------
    labels : B bin labels (tick labels when ``positions`` is None).
    found, total : (B,) int counts of found and of all reconstructable particles.
    xlabel : axis label with its unit.
    positions : (B,) x positions (bin centres); None places the bins evenly, labelled.
    """
    found = np.asarray(found, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    x = np.arange(len(labels), dtype=np.float64) if positions is None else np.asarray(positions)
    filled = total > 0
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    ax.errorbar(
        x[filled],
        found[filled] / total[filled],
        yerr=_binomial_error(found[filled], total[filled]),
        fmt="o",
        color="#1f4e9c",
        capsize=3,
    )
    if positions is None:
        ax.set_xticks(x, labels, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("efficiency (double majority)")
    ax.grid(alpha=0.3)
    return fig


def _display_selection(display: EventDisplay) -> tuple[np.ndarray, np.ndarray, float]:
    """Which hits to draw: those of reconstructable particles in the azimuth wedge, and every hit
    whose own azimuth is in it (for context). Returns (particle hits, context hits, half-width)."""
    reconstructable = (display.found_track >= 0) | display.missed
    n_particles = np.unique(display.particle_id[reconstructable]).size
    half_width = math.pi * min(1.0, DISPLAY_PARTICLES / max(n_particles, 1))
    in_wedge = np.abs(display.particle_phi) <= half_width
    hit_phi = np.arctan2(display.xyz_mm[:, 1], display.xyz_mm[:, 0])
    return reconstructable & in_wedge, np.abs(hit_phi) <= half_width, half_width


def plot_event_display(display: EventDisplay) -> Figure:
    """One event in x-y and r-z: found tracks coloured, missed particles marked.

    Parameters
    ----------
    display : the event (``tracklm.score.run.EventDisplay``), positions in mm.
    """
    shown, context, half_width = _display_selection(display)
    x, y, z = display.xyz_mm.T
    r = np.hypot(x, y)
    fig, axes = plt.subplots(1, 2, figsize=(13.0, 5.5))
    views = ((axes[0], x, y, "x [mm]", "y [mm]"), (axes[1], z, r, "z [mm]", "r [mm]"))
    found = shown & (display.found_track >= 0)
    missed = shown & display.missed & (display.found_track < 0)
    tracks = np.unique(display.found_track[found])
    colours = plt.get_cmap("tab20")(np.arange(tracks.size) % 20)
    for ax, u, v, ulabel, vlabel in views:
        ax.scatter(u[context], v[context], s=1, color="0.8", label="other hits", rasterized=True)
        segments = []
        for track in tracks:
            on = np.flatnonzero(display.found_track == track)
            on = on[np.argsort(r[on])]
            segments.append(np.column_stack([u[on], v[on]]))
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=0.8))
        ax.scatter(
            u[found],
            v[found],
            s=4,
            c=colours[np.searchsorted(tracks, display.found_track[found])],
            label="found tracks",
        )
        ax.scatter(u[missed], v[missed], s=14, marker="x", color="red", label="missed particles")
        ax.set_xlabel(ulabel)
        ax.set_ylabel(vlabel)
        ax.grid(alpha=0.3)
    axes[0].set_aspect("equal", adjustable="datalim")
    axes[0].legend(loc="upper right", fontsize="small", markerscale=2)
    wedge = (
        "all particles"
        if half_width >= math.pi
        else f"particles with momentum azimuth |phi| < {half_width:.2f} rad"
    )
    fig.suptitle(f"event {display.event_id}: {tracks.size} found tracks, {wedge}")
    return fig


def _efficiency_table(block: Mapping[str, Any], name: str, unit: str) -> list[str]:
    lines = [f"| {name} | particles | found | efficiency |", "|---|---|---|---|"]
    labels = _bin_labels(block["edges"], unit)
    for label, total, found, eff in zip(
        labels, block["particles"], block["found"], block["efficiency"], strict=True
    ):
        lines.append(f"| {label} | {total} | {found} | {_pct(eff)} |")
    return lines


def report_markdown(
    result: Mapping[str, Any], timing: Mapping[str, Any], figures: Mapping[str, str]
) -> str:
    """The text of ``report.md``.

    Parameters
    ----------
    result : the content of ``score.json``.
    timing : ``finder_seconds_per_event``, ``finder_seconds_per_stage`` (stage -> seconds per
        event) and ``scoring_seconds_per_event``.
    figures : PNG file name -> caption, in the order shown.
    """
    key = next(
        k for k in ("pixel_trackml_score", "trackml_score", "partial_trackml_score") if k in result
    )
    volumes = result["volumes"]
    counts = result["counts"]
    lines = [
        "# Track finding score",
        "",
        f"{result['events']} events, volumes {volumes if volumes == 'all' else ','.join(map(str, volumes))}. "
        f"`{key}`: the TrackML score with weights and particle hit counts recomputed over the "
        "evaluated hits"
        + (" (not the challenge's all-detector number)." if key != "trackml_score" else "."),
        "",
        "| figure | value |",
        "|---|---|",
        f"| {key} (mean over events) | {_num(result[key])} |",
        f"| efficiency ({counts['particles']} particles with >= 4 hits) | {_pct(result['efficiency'])} |",
        f"| efficiency, pT > 1 GeV ({counts['particles_pt1']} particles) | {_pct(result['efficiency_pt1'])} |",
        f"| fake rate ({counts['tracks']} tracks with >= 4 hits) | {_pct(result['fake_rate'])} |",
        f"| duplicate rate ({counts['matched']} matched tracks) | {_pct(result['duplicate_rate'])} |",
        f"| finder seconds per event | {_seconds(result['seconds_per_event'])} |",
        "",
    ]
    losses = result.get("score_losses") or {}
    if losses:
        lines += [
            "## Where the score is lost",
            "",
            f"Weight of the hits the score does not count (mean over events); with `{key}` they "
            "sum to 1.",
            "",
            "| lost to | weight |",
            "|---|---|",
        ]
        lines += [
            f"| {LOSS_TEXT.get(name, name)} | {_num(value)} |" for name, value in losses.items()
        ]
        lines += [""]
    lines += ["## Definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in result["conventions"].items()]
    lines += [
        "",
        "## Per event",
        "",
        f"| event | {key} | efficiency | pT > 1 GeV | fake rate | duplicate rate |",
        "|---|---|---|---|---|---|",
    ]
    for event_id, row in result["per_event"].items():
        lines.append(
            f"| {event_id} | {_num(row[key])} | {_pct(row['efficiency'])} | "
            f"{_pct(row['efficiency_pt1'])} | {_pct(row['fake_rate'])} | {_pct(row['duplicate_rate'])} |"
        )
    lines += ["", "## Efficiency against pT and eta", ""]
    lines += _efficiency_table(result["efficiency_vs_pt"], "pT", " GeV")
    lines += [""]
    lines += _efficiency_table(result["efficiency_vs_eta"], "eta", "")
    lines += ["", "## Time", "", "| stage | seconds per event |", "|---|---|"]
    stages = timing.get("finder_seconds_per_stage") or {}
    for stage, seconds in stages.items():
        lines.append(f"| finder: {stage} | {_seconds(seconds)} |")
    lines.append(f"| finder, total | {_seconds(timing.get('finder_seconds_per_event'))} |")
    lines.append(
        f"| scoring (reading and scoring) | {_seconds(timing.get('scoring_seconds_per_event'))} |"
    )
    lines += ["", "## Figures", ""]
    for name, caption in figures.items():
        lines += [f"![{caption}]({name})", "", caption, ""]
    return "\n".join(lines)


def write_report(
    directory: str | os.PathLike[str],
    result: Mapping[str, Any],
    display: EventDisplay | None,
    timing: Mapping[str, Any],
) -> None:
    """Write ``report.md`` and its PNG figures into ``directory``."""
    root = Path(directory)
    pt = result["efficiency_vs_pt"]
    save_figure(
        plot_efficiency(
            _bin_labels(pt["edges"]), np.array(pt["found"]), np.array(pt["particles"]), "pT [GeV]"
        ),
        root / "efficiency_pt.png",
    )
    eta = result["efficiency_vs_eta"]
    edges = np.array(eta["edges"], dtype=np.float64)
    save_figure(
        plot_efficiency(
            _bin_labels(eta["edges"]),
            np.array(eta["found"]),
            np.array(eta["particles"]),
            "eta",
            positions=(edges[:-1] + edges[1:]) / 2,
        ),
        root / "efficiency_eta.png",
    )
    figures = dict(FIGURES)
    if display is None:
        figures.pop("event_display.png")
    else:
        save_figure(plot_event_display(display), root / "event_display.png")
    (root / "report.md").write_text(report_markdown(result, timing, figures))
