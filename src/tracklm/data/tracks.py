"""Tracks from TrackML truth: each particle's hits in the selected volumes, in flight order.

Everything here is vectorized numpy over a whole event: hits are sorted once by (particle, order
key, hit id) and cut into groups, with no Python loop over particles. TrackML records no hit
times, so the flight order is reconstructed from positions (``ORDERS``); file order, which follows
the detector numbering and runs outside-in in the -z endcaps, is never used.

A *selection* fixes which volumes count, how many hits a track needs, and what happens to longer
tracks (``SELECTIONS``). Its vocabulary is built from the detector geometry, never from data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tracklm.detector.geometry import PIXEL_VOLUMES
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import TrackArrays

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tracklm.detector.geometry import Detector

ORDERS = ("distance", "vertex", "r")
"""Hit orders: ``distance`` from the origin (the default), distance from the particle's
production ``vertex``, or transverse radius ``r``. Ties are broken by hit id."""


@dataclass(frozen=True)
class Selection:
    """Which hits make a track and which tracks are kept.

    Attributes
    ----------
    name : the ``--selection`` name.
    volumes : volume ids whose hits count; ``None`` for every volume of the detector.
    min_hits : fewest hits (in ``volumes``) a track needs.
    max_hits : padded track length L of the dataset.
    truncate_long : ``False``: tracks with more than ``max_hits`` hits are dropped;
        ``True``: they are kept, cut to their first ``max_hits`` hits in flight order.
    """

    name: str
    volumes: tuple[int, ...] | None
    min_hits: int
    max_hits: int
    truncate_long: bool

    def vocab(self, detector: Detector) -> ModuleVocab:
        """The selection's vocabulary: every module of ``detector`` in ``volumes``."""
        vocab = ModuleVocab.from_detector(detector, self.volumes)
        if len(vocab.modules) == 0:
            raise InputError(
                f"{detector.name}: no modules in volumes {self.volumes} (selection {self.name!r})"
            )
        return vocab

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "volumes": None if self.volumes is None else list(self.volumes),
            "min_hits": self.min_hits,
            "max_hits": self.max_hits,
            "long_tracks": "truncate" if self.truncate_long else "drop",
        }


SELECTIONS: Mapping[str, Selection] = MappingProxyType(
    {
        # The paper's: pixel detector, 4 to 8 hits, no pT cut; longer tracks are left out.
        "pixel-4to8": Selection("pixel-4to8", PIXEL_VOLUMES, 4, 8, truncate_long=False),
        "pixel-min4": Selection("pixel-min4", PIXEL_VOLUMES, 4, 12, truncate_long=True),
        "all-min4": Selection("all-min4", None, 4, 24, truncate_long=True),
    }
)


def get_selection(name: str) -> Selection:
    """The registered selection called ``name``; ``InputError`` naming the option otherwise."""
    try:
        return SELECTIONS[name]
    except KeyError:
        raise InputError(
            f"--selection: unknown selection {name!r} (choose from {', '.join(SELECTIONS)})"
        ) from None


def hit_order_key(xyz_mm: np.ndarray, vertex_mm: np.ndarray, order: str) -> np.ndarray:
    """Sort key of each hit along its particle's flight.

    Parameters
    ----------
    xyz_mm : (N, 3) hit positions in mm.
    vertex_mm : (N, 3) production vertex of each hit's particle in mm (used by ``"vertex"``).
    order : one of ``ORDERS``.

    Returns
    -------
    (N,) float64 key in mm; hits of one particle are in flight order when sorted by it.
    """
    xyz = np.asarray(xyz_mm, dtype=np.float64)
    if order == "distance":
        return np.sqrt(np.einsum("ni,ni->n", xyz, xyz))
    if order == "vertex":
        offset = xyz - np.asarray(vertex_mm, dtype=np.float64)
        return np.sqrt(np.einsum("ni,ni->n", offset, offset))
    if order == "r":
        return np.hypot(xyz[:, 0], xyz[:, 1])
    raise InputError(f"--order: unknown order {order!r} (choose from {', '.join(ORDERS)})")


def check_modules(
    hits: pd.DataFrame, detector: Detector, source: str | os.PathLike[str] = "hits"
) -> None:
    """Raise ``InputError`` naming ``source`` and the row of the first hit on an unknown module.

    Parameters
    ----------
    hits : TrackML hits table (``volume_id``, ``layer_id``, ``module_id``).
    detector : the geometry the hits must belong to.
    source : file name used in the message; rows are 1-based data rows (header not counted).
    """
    ids = [hits[c].to_numpy() for c in ("volume_id", "layer_id", "module_id")]
    rows = detector.rows(*ids)
    bad = np.flatnonzero(rows < 0)
    if bad.size:
        first = int(bad[0])
        triple = tuple(int(a[first]) for a in ids)
        raise InputError(
            f"{source}: row {first + 1}: module {triple} (volume, layer, module) "
            f"is not in the detector geometry {detector.name}"
        )


def _first_duplicate_row(values: np.ndarray) -> int | None:
    """0-based row of the first value that repeats an earlier one, or None."""
    order = np.argsort(values, kind="stable")
    repeats = order[1:][values[order][1:] == values[order][:-1]]
    return int(repeats.min()) if repeats.size else None


def _lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of ``keys`` (unique) holding each query, and whether it was found."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if sorted_keys.size == 0:
        return np.zeros(queries.size, np.int64), np.zeros(queries.size, bool)
    where = np.clip(np.searchsorted(sorted_keys, queries), 0, sorted_keys.size - 1)
    return order[where], sorted_keys[where] == queries


def _check_unique(values: np.ndarray, source: str, column: str) -> None:
    row = _first_duplicate_row(values)
    if row is not None:
        raise InputError(
            f"{source}: row {row + 1}, column {column!r}: duplicate value {int(values[row])}"
        )


def _truth_to_hit_rows(
    hit_ids: np.ndarray, truth_hit_ids: np.ndarray, names: Mapping[str, str]
) -> np.ndarray:
    """Row of ``hits`` for every truth row (TrackML files share their order; checked otherwise).

    Hits without a truth row are left out by the caller, but a truth file without rows for an
    event that has hits is a lost file, not an event without truth: ``InputError``.
    """
    if truth_hit_ids.size == 0 and hit_ids.size:
        raise InputError(
            f"{names['truth']}: no rows, but {names['hits']} holds {hit_ids.size} hits"
        )
    _check_unique(truth_hit_ids, names["truth"], "hit_id")
    if np.array_equal(hit_ids, truth_hit_ids):
        return np.arange(hit_ids.size)
    _check_unique(hit_ids, names["hits"], "hit_id")
    rows, found = _lookup(hit_ids, truth_hit_ids)
    if not np.all(found):
        row = int(np.flatnonzero(~found)[0])
        raise InputError(
            f"{names['truth']}: row {row + 1}: hit_id {int(truth_hit_ids[row])} is not in {names['hits']}"
        )
    return rows


def extract_tracks(
    hits: pd.DataFrame,
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    vocab: ModuleVocab,
    selection: Selection,
    order: str = "distance",
    *,
    event_id: int = 0,
    sources: Mapping[str, str] | None = None,
) -> TrackArrays:
    """The selected tracks of one event as token arrays, in flight order.

    Noise hits (``particle_id`` 0) and hits without a truth row are excluded. A particle's track is its hits in
    ``selection.volumes``, sorted by ``hit_order_key(order)`` (ties by hit id); it is kept when it
    has at least ``selection.min_hits`` of them and, unless ``selection.truncate_long``, at most
    ``selection.max_hits``. Tracks are listed by increasing particle id.

    Parameters
    ----------
    hits, truth, particles : TrackML tables of one event (as read by ``tracklm.io.trackml``).
    vocab : module vocabulary; must contain every module of the selected hits.
    selection : see ``Selection``.
    order : one of ``ORDERS``.
    event_id : stored in ``TrackArrays.event_id``.
    sources : file name of each part (``"hits"``, ``"truth"``, ``"particles"``) for error messages.

    Returns
    -------
    TrackArrays with L = ``selection.max_hits``: tokens padded with ``[PAD]`` (0), hit positions
    from the hits table (mm), and pT (GeV), eta, phi, charge and vertex (mm) of the particle at
    production.
    """
    names = {"hits": "hits", "truth": "truth", "particles": "particles", **(sources or {})}
    width = selection.max_hits
    flight = _hits_in_flight_order(hits, truth, particles, selection, order, names)
    layout = _TrackLayout.of(flight, selection)

    rows = flight.hit_rows[layout.take]
    tokens = np.zeros((layout.n_tracks, width), dtype=np.int32)
    tokens[layout.track, layout.slot] = _encode_modules(hits, rows, vocab, names["hits"])
    positions = np.zeros((layout.n_tracks, width, 3), dtype=np.float32)
    positions[layout.track, layout.slot] = flight.xyz_mm[layout.take]

    first_row = flight.particle_row[flight.starts[layout.accepted]]
    momentum = particles[["px", "py", "pz"]].to_numpy(np.float64)[first_row]
    pt = np.hypot(momentum[:, 0], momentum[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(momentum[:, 2] / pt)
    return TrackArrays(
        tokens=tokens,
        lengths=np.minimum(flight.counts[layout.accepted], width).astype(np.int32),
        hits=positions,
        pt=pt.astype(np.float32),
        eta=eta.astype(np.float32),
        phi=np.arctan2(momentum[:, 1], momentum[:, 0]).astype(np.float32),
        charge=particles["q"].to_numpy()[first_row].astype(np.int8),
        vertex=flight.vertex_mm[first_row].astype(np.float32),
        event_id=np.full(layout.n_tracks, event_id, dtype=np.int64),
        particle_id=flight.particle_id[flight.starts[layout.accepted]].astype(np.int64),
    )


@dataclass(frozen=True)
class _FlightOrderedHits:
    """The selected hits of one event, grouped by particle id, in flight order in each group.

    Attributes
    ----------
    hit_rows : (H,) int, row of each hit in the hits table.
    particle_id : (H,) int64, the hit's particle (groups in increasing id).
    particle_row : (H,) int, row of the hit's particle in the particles table.
    xyz_mm : (H, 3) float64, hit positions in mm.
    starts : (P,) int, index of the first hit of each particle's group.
    counts : (P,) int, number of hits in each group.
    vertex_mm : (N, 3) float64, production vertex of every row of the particles table, in mm.
    """

    hit_rows: np.ndarray
    particle_id: np.ndarray
    particle_row: np.ndarray
    xyz_mm: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    vertex_mm: np.ndarray


def _hits_in_flight_order(
    hits: pd.DataFrame,
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    selection: Selection,
    order: str,
    names: Mapping[str, str],
) -> _FlightOrderedHits:
    """Hits of particles (not noise) in ``selection.volumes``, sorted by particle then flight.

    Within a particle, hits are sorted by ``hit_order_key(order)``, ties by hit id.

    Parameters
    ----------
    hits, truth, particles : TrackML tables of one event.
    selection : its ``volumes`` choose the hits.
    order : one of ``ORDERS``.
    names : file name of each table (``"hits"``, ``"truth"``, ``"particles"``) for the
        ``InputError`` raised when the tables disagree (duplicate ids, unknown hit or particle).

    Returns
    -------
    The H selected hits grouped by particle; see ``_FlightOrderedHits``.
    """
    hit_ids = hits["hit_id"].to_numpy(np.int64)
    hit_rows = _truth_to_hit_rows(hit_ids, truth["hit_id"].to_numpy(np.int64), names)
    particle_of_hit = truth["particle_id"].to_numpy(np.int64)
    volume = hits["volume_id"].to_numpy()[hit_rows]
    keep = particle_of_hit != 0
    if selection.volumes is not None:
        keep &= np.isin(volume, selection.volumes)
    truth_rows = np.flatnonzero(keep)
    hit_rows = hit_rows[truth_rows]
    pid = particle_of_hit[truth_rows]

    # Production vertex of each hit's particle, for the "vertex" order.
    particle_ids = particles["particle_id"].to_numpy(np.int64)
    _check_unique(particle_ids, names["particles"], "particle_id")
    particle_row, known = _lookup(particle_ids, pid)
    if not np.all(known):
        first = int(np.flatnonzero(~known)[0])
        raise InputError(
            f"{names['truth']}: row {int(truth_rows[first]) + 1}: particle_id {int(pid[first])} "
            f"is not in {names['particles']}"
        )
    vertex_all = particles[["vx", "vy", "vz"]].to_numpy(np.float64)
    xyz = hits[["x", "y", "z"]].to_numpy(np.float64)[hit_rows]
    key = hit_order_key(xyz, vertex_all[particle_row], order)

    sort = np.lexsort((hit_ids[hit_rows], key, pid))
    pid, hit_rows, particle_row, xyz = pid[sort], hit_rows[sort], particle_row[sort], xyz[sort]
    n_hits = pid.size
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]]) if n_hits else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n_hits])
    return _FlightOrderedHits(hit_rows, pid, particle_row, xyz, starts, counts, vertex_all)


@dataclass(frozen=True)
class _TrackLayout:
    """Which particle groups become tracks, and where each of their hits goes.

    Attributes
    ----------
    accepted : (P,) bool, whether each particle's group is kept as a track.
    take : (H,) bool, whether each hit is stored (its track is kept and it is within L).
    track : (T,) int, track index of each stored hit (T = ``take.sum()``).
    slot : (T,) int, position of each stored hit in its track, in [0, L).
    n_tracks : number of kept tracks.
    """

    accepted: np.ndarray
    take: np.ndarray
    track: np.ndarray
    slot: np.ndarray
    n_tracks: int

    @staticmethod
    def of(flight: _FlightOrderedHits, selection: Selection) -> _TrackLayout:
        """Apply ``selection``'s hit-count rule to the groups of ``flight``."""
        starts, counts = flight.starts, flight.counts
        position = np.arange(flight.particle_id.size) - np.repeat(starts, counts)
        accepted = counts >= selection.min_hits
        if not selection.truncate_long:
            accepted &= counts <= selection.max_hits
        new_index = np.cumsum(accepted) - 1
        group = np.repeat(np.arange(starts.size), counts)
        take = accepted[group] & (position < selection.max_hits)
        return _TrackLayout(
            accepted=accepted,
            take=take,
            track=new_index[group[take]],
            slot=position[take],
            n_tracks=int(accepted.sum()),
        )


def _encode_modules(
    hits: pd.DataFrame, rows: np.ndarray, vocab: ModuleVocab, source: str
) -> np.ndarray:
    """Token of the module each of the given hits lies on.

    Parameters
    ----------
    hits : TrackML hits table (``volume_id``, ``layer_id``, ``module_id``).
    rows : (T,) int, rows of ``hits`` to encode.
    vocab : module vocabulary.
    source : file name of ``hits``, for the ``InputError`` raised (on the lowest such row) when
        a module is not in ``vocab``.

    Returns
    -------
    (T,) int32 token ids.
    """
    ids = [hits[c].to_numpy()[rows] for c in ("volume_id", "layer_id", "module_id")]
    encoded = vocab.encode(*ids, unknown="unk")
    unknown = np.flatnonzero(encoded == vocab.unk_id)
    if unknown.size:
        first = int(unknown[np.argmin(rows[unknown])])
        triple = tuple(int(a[first]) for a in ids)
        raise InputError(
            f"{source}: row {int(rows[first]) + 1}: module {triple} (volume, layer, module) "
            "is not in the vocabulary"
        )
    return encoded
