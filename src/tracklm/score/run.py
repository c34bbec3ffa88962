"""``tracklm score``: the TrackML score of a track finder's output, event by event.

Reads each event of EVENTS (hits, truth, particles) and its submission in TRACKS, scores it
(``tracklm.score.trackml``) and keeps only per-event figures and fixed-size histograms, so memory
does not grow with the number of events. Writes ``SCORE/score.json``, ``SCORE/report.md`` with its
figures, and ``SCORE/manifest.json``.

Choices (the command line's contract leaves them open):

- evaluated volumes: ``--volumes 7,8,9`` (the pixel detector, the default) or ``all``. Weights and
  particle hit counts are recomputed over the evaluated hits, so the score is the *pixel TrackML
  score* (key ``pixel_trackml_score``), ``trackml_score`` when all volumes are scored, and
  ``partial_trackml_score`` for another set of volumes;
- hit order along a particle, for the order weight: ``|tz - vz|`` (true hit z from the truth file,
  production vertex z from the particles file), as the challenge ranked hits;
- across events: the score is the mean of the per-event scores (as the challenge's leaderboard);
  efficiencies, fake and duplicate rates pool the particles and tracks of all events;
- ``seconds_per_event`` is the finder's, read from ``TRACKS/manifest.json`` (key
  ``seconds_per_event``; ``seconds_per_stage``, a mapping of stage name to seconds per event, fills
  the report's time table), null when it is not recorded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from tracklm._fs import atomic_output_dir, write_json
from tracklm.detector.geometry import PIXEL_VOLUMES
from tracklm.errors import InputError
from tracklm.io.trackml import check_hits_files, event_path, list_events, read_part
from tracklm.manifest import write_manifest
from tracklm.score import trackml as T
from tracklm.score.submission import check_no_stray_files, read_submission, tracks_path

logger = logging.getLogger(__name__)

DEFAULT_VOLUMES = ",".join(str(v) for v in PIXEL_VOLUMES)
PT_EDGES_GEV = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, math.inf)
ETA_EDGES = tuple(np.round(np.arange(-4.0, 4.01, 0.5), 2).tolist())

CONVENTIONS = {
    "score": "TrackML: double majority (strict > 0.5), majority particle by hit count, weights by "
    "pT and hit order (|tz - vz|), particles with < 4 evaluated hits weigh 0; weights and hit "
    "counts recomputed over the evaluated volumes; mean over events",
    "efficiency": "particles (not noise) with >= 4 evaluated hits matched by a double-majority track",
    "efficiency_pt1": "the same for particles with pT > 1 GeV",
    "fake_rate": "tracks of >= 4 hits (track_id 0 = left out) matching no particle by double majority",
    "duplicate_rate": "of the tracks of >= 4 hits with > 50% of their hits from one particle, "
    "the fraction that are not the only such track of their particle",
    "track_id_0": "hits left out of every track; each is scored as a one-hit track",
}


def parse_volumes(volumes: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """The evaluated volume ids, or None for every volume.

    Parameters
    ----------
    volumes : ``"all"`` (or None), a comma-separated list such as ``"7,8,9"``, or volume ids.
    """
    if volumes is None or (isinstance(volumes, str) and volumes.strip().lower() == "all"):
        return None
    items = volumes.split(",") if isinstance(volumes, str) else list(volumes)
    try:
        parsed = sorted({int(str(item).strip()) for item in items})
    except ValueError:
        raise InputError(
            f"--volumes: expected 'all' or volume ids separated by commas, got {volumes!r}"
        ) from None
    if not parsed or parsed[0] < 0 or parsed[-1] > np.iinfo(np.int32).max:
        raise InputError(
            f"--volumes: expected volume ids from 0 to {np.iinfo(np.int32).max}, got {volumes!r}"
        )
    return tuple(parsed)


def score_key(volumes: tuple[int, ...] | None) -> str:
    """The name of the score in ``score.json``: which hits its weights were normalised over."""
    if volumes is None:
        return "trackml_score"
    if volumes == tuple(sorted(PIXEL_VOLUMES)):
        return "pixel_trackml_score"
    return "partial_trackml_score"


@dataclass(frozen=True)
class EvaluatedEvent:
    """One event's truth over its evaluated hits, ready to score.

    Attributes
    ----------
    event_id : the event.
    hit_id : (N,) int64, every hit of the event (hits file order).
    evaluated : (N,) bool, hits in the evaluated volumes.
    xyz_mm : (E,) x 3 float64, positions of the E evaluated hits in mm.
    particle_id : (E,) int64, their particles (0 for noise).
    weight : (E,) float64, TrackML weights over the evaluated hits (sum 1, or all 0).
    pt_gev, eta, phi : (E,) float64, the particle's transverse momentum (GeV), pseudorapidity and
        azimuth of its momentum at production (NaN for noise).
    hits_source : the hits file, for messages.
    """

    event_id: int
    hit_id: np.ndarray
    evaluated: np.ndarray
    xyz_mm: np.ndarray
    particle_id: np.ndarray
    weight: np.ndarray
    pt_gev: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    hits_source: str


def _first_duplicate(values: np.ndarray) -> int | None:
    repeated = np.flatnonzero(pd.Index(values).duplicated())
    return int(repeated[0]) if repeated.size else None


def load_evaluated_event(
    events: str | os.PathLike[str], event_id: int, volumes: tuple[int, ...] | None
) -> EvaluatedEvent:
    """Read one event's hits, truth and particles and weigh its evaluated hits.

    Raises ``InputError`` naming the file and row when the tables disagree: a repeated hit or
    particle id, a hit without a truth row, a truth row naming an unknown hit or particle.
    """
    paths = {part: event_path(events, event_id, part) for part in ("hits", "truth", "particles")}
    hits = read_part(paths["hits"], "hits")
    truth = read_part(paths["truth"], "truth")
    particles = read_part(paths["particles"], "particles")

    hit_id = hits["hit_id"].to_numpy(np.int64)
    for source, ids, column in (
        (paths["hits"], hit_id, "hit_id"),
        (paths["truth"], truth["hit_id"].to_numpy(np.int64), "hit_id"),
        (paths["particles"], particles["particle_id"].to_numpy(np.int64), "particle_id"),
    ):
        row = _first_duplicate(ids)
        if row is not None:
            raise InputError(f"{source}: row {row + 1}, column {column!r}: repeats {int(ids[row])}")
    truth_rows = pd.Index(truth["hit_id"].to_numpy(np.int64)).get_indexer(pd.Index(hit_id))
    if (truth_rows < 0).any():
        row = int(np.flatnonzero(truth_rows < 0)[0])
        raise InputError(
            f"{paths['truth']}: no row for hit_id {int(hit_id[row])} of {paths['hits']}"
        )
    if truth_rows.size != len(truth):
        extra = np.setdiff1d(np.arange(len(truth)), truth_rows)
        raise InputError(
            f"{paths['truth']}: row {int(extra[0]) + 1}: hit_id "
            f"{int(truth['hit_id'].iloc[extra[0]])} is not in {paths['hits']}"
        )

    evaluated = np.ones(hit_id.size, dtype=bool)
    if volumes is not None:
        evaluated = np.isin(hits["volume_id"].to_numpy(), volumes)
    if not evaluated.any():
        where = "at all" if volumes is None else f"in --volumes {','.join(map(str, volumes))}"
        raise InputError(f"{paths['hits']}: no hit {where}")
    rows = np.flatnonzero(evaluated)
    truth_at = truth_rows[rows]
    particle_id = truth["particle_id"].to_numpy(np.int64)[truth_at]
    particle_rows = pd.Index(particles["particle_id"].to_numpy(np.int64)).get_indexer(
        pd.Index(particle_id)
    )
    unknown = np.flatnonzero((particle_rows < 0) & (particle_id != T.NOISE))
    if unknown.size:
        row = int(truth_at[unknown[0]])
        raise InputError(
            f"{paths['truth']}: row {row + 1}: particle_id {int(particle_id[unknown[0]])} "
            f"is not in {paths['particles']}"
        )
    noise = particle_id == T.NOISE
    momentum = particles[["px", "py", "pz"]].to_numpy(np.float64)[particle_rows]
    momentum[noise] = np.nan
    vertex_z = particles["vz"].to_numpy(np.float64)[particle_rows]
    true_z = truth["tz"].to_numpy(np.float64)[truth_at]
    pt = np.hypot(momentum[:, 0], momentum[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(momentum[:, 2] / pt)
    order_key = np.where(noise, 0.0, np.abs(true_z - vertex_z))
    weight = T.trackml_weights(particle_id, order_key, np.nan_to_num(pt), hit_id[rows])
    return EvaluatedEvent(
        event_id=event_id,
        hit_id=hit_id,
        evaluated=evaluated,
        xyz_mm=hits[["x", "y", "z"]].to_numpy(np.float64)[rows],
        particle_id=particle_id,
        weight=weight,
        pt_gev=pt,
        eta=eta,
        phi=np.arctan2(momentum[:, 1], momentum[:, 0]),
        hits_source=str(paths["hits"]),
    )


@dataclass(frozen=True)
class EventDisplay:
    """What the report draws of one event.

    Attributes
    ----------
    event_id : the event.
    xyz_mm : (E, 3) evaluated hit positions in mm.
    particle_id : (E,) their particles.
    found_track : (E,) int, index of the double-majority track the hit was counted in, -1 if none.
    missed : (E,) bool, the hit belongs to a reconstructable particle no track found.
    particle_phi : (E,) float, azimuth of the hit's particle momentum (NaN for noise).
    """

    event_id: int
    xyz_mm: np.ndarray
    particle_id: np.ndarray
    found_track: np.ndarray
    missed: np.ndarray
    particle_phi: np.ndarray


@dataclass
class ScoreTotals:
    """What scoring keeps across events: per-event figures and fixed-size sums (memory does not
    grow with the number of hits)."""

    per_event: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=lambda: dict.fromkeys(T.LOSS_KINDS, 0.0))
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "particles",
                "found",
                "particles_pt1",
                "found_pt1",
                "tracks",
                "fake",
                "matched",
                "matched_particles",
            ),
            0,
        )
    )
    pt_found: np.ndarray = field(default_factory=lambda: np.zeros(len(PT_EDGES_GEV) - 1, np.int64))
    pt_total: np.ndarray = field(default_factory=lambda: np.zeros(len(PT_EDGES_GEV) - 1, np.int64))
    eta_found: np.ndarray = field(default_factory=lambda: np.zeros(len(ETA_EDGES) - 1, np.int64))
    eta_total: np.ndarray = field(default_factory=lambda: np.zeros(len(ETA_EDGES) - 1, np.int64))
    scoring_seconds: float = 0.0

    def add(
        self,
        event_id: int,
        result: T.EventScore,
        key: str,
        seconds: float,
        losses: dict[str, float] | None = None,
    ) -> None:
        """Add one event's figures (``losses``: its ``score_losses``, summed over the events
        that have a score, like the score itself)."""
        high = result.particle_pt_gev > T.PT_ONE_GEV
        event_counts = {
            "particles": result.n_particles,
            "found": int(result.particle_found.sum()),
            "particles_pt1": int(high.sum()),
            "found_pt1": int(result.particle_found[high].sum()),
            "tracks": result.n_candidates,
            "fake": result.n_fake,
            "matched": result.n_matched,
            "matched_particles": result.n_matched_particles,
        }
        for name, value in event_counts.items():
            self.counts[name] += value
        if result.score is not None:
            self.scores.append(result.score)
            for kind, weight in (losses or {}).items():
                self.losses[kind] += weight
        found, total = T.binned_counts(result.particle_pt_gev, result.particle_found, PT_EDGES_GEV)
        self.pt_found += found
        self.pt_total += total
        found, total = T.binned_counts(result.particle_eta, result.particle_found, ETA_EDGES)
        self.eta_found += found
        self.eta_total += total
        self.scoring_seconds += seconds
        self.per_event[str(event_id)] = {
            key: result.score,
            "efficiency": result.efficiency,
            "efficiency_pt1": result.efficiency_pt1,
            "fake_rate": result.fake_rate,
            "duplicate_rate": result.duplicate_rate,
            "n_hits": result.n_hits,
            "n_particles": result.n_particles,
            "n_particles_pt1": event_counts["particles_pt1"],
            "n_tracks": result.n_candidates,
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _binned(edges: Sequence[float], found: np.ndarray, total: np.ndarray) -> dict[str, Any]:
    return {
        "edges": [None if math.isinf(e) else e for e in edges],
        "found": found.tolist(),
        "particles": total.tolist(),
        "efficiency": [_ratio(int(f), int(t)) for f, t in zip(found, total, strict=True)],
    }


def finder_timing(tracks: str | os.PathLike[str]) -> tuple[float | None, dict[str, float]]:
    """The finder's seconds per event and per stage, from ``TRACKS/manifest.json`` when recorded.

    Returns
    -------
    (seconds per event or None, {stage: seconds per event}).
    """
    path = Path(tracks) / "manifest.json"
    if not path.is_file():
        return None, {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: not a JSON object")

    def seconds(value: Any) -> float | None:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if is_number and math.isfinite(value) and value >= 0 else None

    stages = manifest.get("seconds_per_stage")
    per_stage = {}
    if isinstance(stages, dict):
        per_stage = {str(k): s for k, v in stages.items() if (s := seconds(v)) is not None}
    return seconds(manifest.get("seconds_per_event")), per_stage


def score_events(
    events: str | os.PathLike[str],
    tracks: str | os.PathLike[str],
    volumes: tuple[int, ...] | None,
) -> tuple[ScoreTotals, EventDisplay | None]:
    """Score every event of ``events`` against its submission in ``tracks``, one at a time.

    Returns
    -------
    The totals and the display of the first event.
    """
    event_ids = list_events(events)
    check_hits_files(events)  # an event whose hits file is lost is not one to leave out
    if not event_ids:
        raise InputError(f"{events}: no eventNNNNNNNNN-hits.csv[.gz] files")
    if not Path(tracks).is_dir():
        raise InputError(f"{tracks}: no such tracks directory")
    check_no_stray_files(tracks, event_ids, str(events))
    for event_id in event_ids:  # fail before scoring anything when a file is missing
        tracks_path(tracks, event_id)
    key = score_key(volumes)
    label = "every volume" if volumes is None else f"volumes {','.join(map(str, volumes))}"
    totals = ScoreTotals()
    display = None
    for event_id in tqdm(event_ids, desc="score", unit="event", disable=None):
        start = time.perf_counter()
        event = load_evaluated_event(events, event_id, volumes)
        track_of_hit = read_submission(
            tracks_path(tracks, event_id),
            event_id,
            event.hit_id,
            event.evaluated,
            hits_source=event.hits_source,
            volumes_label=label,
        )
        result, matches = T.score_event(
            track_of_hit[event.evaluated], event.particle_id, event.weight, event.pt_gev, event.eta
        )
        losses = T.score_losses(event.particle_id, event.weight, matches)
        totals.add(event_id, result, key, time.perf_counter() - start, losses)
        if display is None:
            display = _display(event, result, matches)
    return totals, display


def _display(event: EvaluatedEvent, result: T.EventScore, matches: T.TrackMatches) -> EventDisplay:
    track = matches.hit_track
    counted = matches.matched[track] & (event.particle_id == matches.majority_particle[track])
    missed_particles = result.particle_id[~result.particle_found]
    return EventDisplay(
        event_id=event.event_id,
        xyz_mm=event.xyz_mm,
        particle_id=event.particle_id,
        found_track=np.where(counted, track, -1),
        missed=np.isin(event.particle_id, missed_particles),
        particle_phi=event.phi,
    )


def run_score(
    events: str | os.PathLike[str],
    tracks: str | os.PathLike[str],
    out: str | os.PathLike[str],
    volumes: str = DEFAULT_VOLUMES,
) -> dict[str, Any]:
    """Score a track finder's submission files against the truth of their events.

    Parameters
    ----------
    events : TrackML event directory (hits, truth, particles of every event).
    tracks : directory of ``eventNNNNNNNNN-tracks.csv[.gz]`` (``event_id, hit_id, track_id``), one
        per event of ``events``, holding every hit of the evaluated volumes exactly once; its
        ``manifest.json``, when present, may record ``seconds_per_event`` and ``seconds_per_stage``.
    out : the score directory to write (must not exist, or be empty).
    volumes : evaluated volume ids, comma-separated, or ``"all"`` (default: the pixel volumes).

    Returns
    -------
    The content of ``score.json``.
    """
    evaluated_volumes = parse_volumes(volumes)
    key = score_key(evaluated_volumes)
    seconds_per_event, seconds_per_stage = finder_timing(tracks)
    with atomic_output_dir(out) as tmp:
        totals, display = score_events(events, tracks, evaluated_volumes)
        counts = totals.counts
        n_events = len(totals.per_event)
        result: dict[str, Any] = {
            key: float(np.mean(totals.scores)) if totals.scores else None,
            "efficiency": _ratio(counts["found"], counts["particles"]),
            "efficiency_pt1": _ratio(counts["found_pt1"], counts["particles_pt1"]),
            "fake_rate": _ratio(counts["fake"], counts["tracks"]),
            "duplicate_rate": _ratio(
                counts["matched"] - counts["matched_particles"], counts["matched"]
            ),
            "seconds_per_event": seconds_per_event,
            "events": n_events,
            "volumes": "all" if evaluated_volumes is None else list(evaluated_volumes),
            "counts": counts,
            "score_losses": {
                name: value / len(totals.scores) if totals.scores else None
                for name, value in totals.losses.items()
            },
            "efficiency_vs_pt": _binned(PT_EDGES_GEV, totals.pt_found, totals.pt_total),
            "efficiency_vs_eta": _binned(ETA_EDGES, totals.eta_found, totals.eta_total),
            "conventions": CONVENTIONS,
            "per_event": totals.per_event,
        }
        write_json(tmp / "score.json", result)
        from tracklm.score.report import write_report

        timing = {
            "finder_seconds_per_event": seconds_per_event,
            "finder_seconds_per_stage": seconds_per_stage,
            "scoring_seconds_per_event": totals.scoring_seconds / max(n_events, 1),
        }
        write_report(tmp, result, display, timing)
        write_manifest(
            tmp,
            "score",
            inputs={"events": str(Path(events).resolve()), "tracks": str(Path(tracks).resolve())},
            config={"volumes": result["volumes"]},
            events=[int(e) for e in totals.per_event],
            scoring_seconds_per_event=timing["scoring_seconds_per_event"],
        )
    value = result[key]
    logger.info(
        "score: %s %s over %d events (efficiency %s, fake rate %s) -> %s",
        key,
        "n/a" if value is None else f"{value:.4f}",
        n_events,
        _fmt(result["efficiency"]),
        _fmt(result["fake_rate"]),
        out,
    )
    return result


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
