"""Track finders' output in the TrackML submission format: one ``eventNNNNNNNNN-tracks.csv[.gz]``
per event, columns ``event_id, hit_id, track_id``, one row per hit.

Read through the TrackML reader (part ``tracks`` of ``tracklm.io.trackml``) and checked against the
event: every hit of the evaluated volumes in exactly one row (hits of other volumes may be present
and are ignored), no hit the event does not have, and an ``event_id`` column that agrees with the
file name. ``track_id`` 0 marks a hit left out of every track; ids are never negative (a
negative "no track" label would otherwise be scored as one large track).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.errors import InputError
from tracklm.io.trackml import event_path, event_prefix, list_events, read_part, write_part
from tracklm.score.trackml import UNASSIGNED

TRACKS_PART = "tracks"
_TRACKS_FILE = re.compile(rf"^event(\d{{9}})-{TRACKS_PART}\.csv(\.gz)?$")


def tracks_path(directory: str | os.PathLike[str], event_id: int) -> Path:
    """The submission file of one event (``.csv.gz`` preferred, then ``.csv``); ``InputError``
    naming the expected file when there is neither."""
    try:
        return event_path(directory, event_id, TRACKS_PART)
    except InputError:
        expected = Path(directory) / f"{event_prefix(event_id)}-{TRACKS_PART}.csv"
        raise InputError(f"{expected}: no tracks file for event {event_id}") from None


def submission_table(event_id: int, hit_id: np.ndarray, track_id: np.ndarray) -> pd.DataFrame:
    """A submission as a table with the TrackML columns and dtypes.

    Parameters
    ----------
    event_id : the event.
    hit_id : (H,) int64, hit ids of the event.
    track_id : (H,) int64, the track of each hit (``UNASSIGNED`` for none).
    """
    hit_id = np.asarray(hit_id, dtype=np.int64)
    return pd.DataFrame(
        {
            "event_id": np.full(hit_id.size, event_id, dtype=np.int64),
            "hit_id": hit_id,
            "track_id": np.asarray(track_id, dtype=np.int64),
        }
    )


def truth_submission(event_id: int, truth: pd.DataFrame) -> pd.DataFrame:
    """The perfect submission of an event: each particle's hits one track (``track_id`` =
    ``particle_id``), noise hits left out (``UNASSIGNED``).

    Parameters
    ----------
    event_id : the event.
    truth : its TrackML truth table (``hit_id``, ``particle_id``).
    """
    # Noise has particle_id 0, which is UNASSIGNED: the ids carry over unchanged.
    assert UNASSIGNED == 0
    return submission_table(event_id, truth["hit_id"].to_numpy(), truth["particle_id"].to_numpy())


def write_submission(
    directory: str | os.PathLike[str], table: pd.DataFrame, event_id: int | None = None
) -> Path:
    """Write one event's submission as ``directory/eventNNNNNNNNN-tracks.csv``; returns its path.

    Parameters
    ----------
    directory : created if needed.
    table : ``event_id, hit_id, track_id`` of one event (``submission_table``).
    event_id : the event; needed when ``table`` is empty (an event without hits), else read from it.
    """
    event_ids = np.unique(table["event_id"].to_numpy())
    if event_id is not None:
        event_ids = np.union1d(event_ids, [event_id])
    if event_ids.size != 1:
        raise ValueError(f"a submission file holds one event, got {event_ids.size}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{event_prefix(int(event_ids[0]))}-{TRACKS_PART}.csv"
    write_part(path, TRACKS_PART, table)
    return path


def read_submission(
    path: str | os.PathLike[str],
    event_id: int,
    hit_id: np.ndarray,
    evaluated: np.ndarray,
    hits_source: str | os.PathLike[str] = "hits",
    volumes_label: str = "the evaluated volumes",
) -> np.ndarray:
    """The submitted track of every hit of one event, checked against the event.

    Parameters
    ----------
    path : the event's submission file.
    event_id : the event the file must describe.
    hit_id : (N,) int64, every hit id of the event (unique).
    evaluated : (N,) bool, which of those hits are scored; each needs exactly one row.
    hits_source : the event's hits file, named in messages.
    volumes_label : the evaluated volumes, as messages name them.

    Returns
    -------
    (N,) int64 track id of every hit; hits of other volumes missing from the file get
    ``UNASSIGNED``.

    Raises
    ------
    InputError naming the file (and the row, counted from 1 after the header) of the first
    problem: a missing or non-integer column, an ``event_id`` other than ``event_id``, a hit id
    the event does not have, a hit in two rows, or an evaluated hit in none.
    """
    path = Path(path)
    table = read_part(path, TRACKS_PART)
    rows_event = table["event_id"].to_numpy()
    wrong = np.flatnonzero(rows_event != event_id)
    if wrong.size:
        row = int(wrong[0])
        raise InputError(
            f"{path}: row {row + 1}: event_id {int(rows_event[row])}, but the file is event {event_id}'s"
        )
    submitted = table["hit_id"].to_numpy(np.int64)
    hit_index = pd.Index(np.asarray(hit_id, dtype=np.int64))
    where = hit_index.get_indexer(pd.Index(submitted))
    unknown = np.flatnonzero(where < 0)
    if unknown.size:
        row = int(unknown[0])
        raise InputError(
            f"{path}: row {row + 1}: hit_id {int(submitted[row])} is not a hit of event {event_id} "
            f"({hits_source})"
        )
    repeated = np.flatnonzero(pd.Index(submitted).duplicated())
    if repeated.size:
        row = int(repeated[0])
        first = int(np.flatnonzero(submitted == submitted[row])[0])
        raise InputError(
            f"{path}: row {row + 1}: hit_id {int(submitted[row])} again (first in row {first + 1}); "
            "each hit belongs to one track"
        )
    track_of_hit = np.full(hit_index.size, UNASSIGNED, dtype=np.int64)
    track_of_hit[where] = table["track_id"].to_numpy(np.int64)
    present = np.zeros(hit_index.size, dtype=bool)
    present[where] = True
    missing = np.flatnonzero(np.asarray(evaluated, dtype=bool) & ~present)
    if missing.size:
        raise InputError(
            f"{path}: no row for hit_id {int(hit_index[missing[0]])} of event {event_id} "
            f"({missing.size} hits of {volumes_label} have none; each needs exactly one row)"
        )
    return track_of_hit


def check_no_stray_files(
    directory: str | os.PathLike[str], event_ids: Sequence[int], events_source: str
) -> None:
    """Raise ``InputError`` naming a tracks file in ``directory`` for an event not in ``event_ids``
    (a submission for another event set is a mistake, not something to skip silently)."""
    known = set(event_ids)
    for path in sorted(Path(directory).iterdir()):
        match = _TRACKS_FILE.match(path.name)
        if match and int(match.group(1)) not in known:
            raise InputError(f"{path}: event {int(match.group(1))} is not in {events_source}")


def write_truth_tracks(
    events: str | os.PathLike[str], tracks: str | os.PathLike[str]
) -> list[Path]:
    """Write the perfect submission (``truth_submission``) of every event of ``events`` into
    ``tracks``; it scores 1 by construction. Returns the paths written."""
    written = []
    for event_id in list_events(events):
        truth = read_part(event_path(events, event_id, "truth"), "truth")
        written.append(write_submission(tracks, truth_submission(event_id, truth)))
    return written
