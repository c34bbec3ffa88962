"""TrackML event files: ``eventNNNNNNNNN-{hits,particles,truth,cells}.csv[.gz]``, and the
challenge's submission files, ``eventNNNNNNNNN-tracks.csv[.gz]`` (part ``tracks``).

Columns and dtypes are fixed (``PART_COLUMNS``); extra columns (``particle_type``, ``weight``) are
kept when present. Errors name the file and the column or row at fault. Writing is deterministic:
the same tables give the same bytes (gzip with a zero timestamp).
"""

from __future__ import annotations

import gzip
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.errors import InputError
from tracklm.io.tables import numeric_column, read_table

PARTS = ("hits", "particles", "truth", "cells")

# Required columns of each part with the dtypes they are read as.
PART_COLUMNS: dict[str, dict[str, type]] = {
    "hits": {
        "hit_id": np.int64,
        "x": np.float32,
        "y": np.float32,
        "z": np.float32,
        "volume_id": np.int32,
        "layer_id": np.int32,
        "module_id": np.int32,
    },
    "particles": {
        "particle_id": np.int64,
        "vx": np.float32,
        "vy": np.float32,
        "vz": np.float32,
        "px": np.float32,
        "py": np.float32,
        "pz": np.float32,
        "q": np.int32,
        "nhits": np.int32,
    },
    "truth": {
        "hit_id": np.int64,
        "particle_id": np.int64,
        "tx": np.float32,
        "ty": np.float32,
        "tz": np.float32,
        "tpx": np.float32,
        "tpy": np.float32,
        "tpz": np.float32,
    },
    "cells": {"hit_id": np.int64, "ch0": np.int32, "ch1": np.int32, "value": np.float32},
    # A track finder's output, in the TrackML submission format (not a part of an event).
    "tracks": {"event_id": np.int64, "hit_id": np.int64, "track_id": np.int64},
}
# Optional columns: read with these dtypes when present.
OPTIONAL_COLUMNS: dict[str, dict[str, type]] = {
    "particles": {"particle_type": np.int32},
    "truth": {"weight": np.float32},
}

# Ids and counts: a negative value is a corrupted file, never data. A submission's track_id is
# no exception: 0 marks a hit left out of every track, and a negative "no track" label (DBSCAN's
# -1) would otherwise be scored as one large track.
NON_NEGATIVE_COLUMNS = frozenset(
    {
        "hit_id",
        "particle_id",
        "volume_id",
        "layer_id",
        "module_id",
        "nhits",
        "ch0",
        "ch1",
        "event_id",
        "track_id",
    }
)

_EVENT_FILE = re.compile(r"^event(\d{9})-hits\.csv(\.gz)?$")
_PART_FILE = re.compile(r"^event(\d{9})-(particles|truth|cells)\.csv(\.gz)?$")


@dataclass
class Event:
    """One event's tables; ``None`` for parts that were not read."""

    event_id: int
    hits: pd.DataFrame | None = None
    particles: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None


def event_prefix(event_id: int) -> str:
    return f"event{event_id:09d}"


def event_path(directory: str | os.PathLike[str], event_id: int, part: str) -> Path:
    """Path of an event part (``.csv.gz`` preferred, then ``.csv``); raises if neither exists."""
    base = Path(directory) / f"{event_prefix(event_id)}-{part}.csv"
    for candidate in (base.with_name(base.name + ".gz"), base):
        if candidate.is_file():
            return candidate
    raise InputError(f"{base}[.gz]: missing {part} file for event {event_id}")


def list_events(directory: str | os.PathLike[str]) -> list[int]:
    """Sorted event ids of the ``eventNNNNNNNNN-hits.csv[.gz]`` files in ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{root}: no such event directory")
    ids = {int(m.group(1)) for path in root.iterdir() if (m := _EVENT_FILE.match(path.name))}
    return sorted(ids)


def events_without_hits(directory: str | os.PathLike[str]) -> list[int]:
    """Sorted ids of the events in ``directory`` that have other parts but no hits file.

    ``list_events`` does not count them (an event is its hits file); a reader that needs every
    part refuses them, since a lost hits file would otherwise drop the event silently.
    """
    root = Path(directory)
    ids = {int(m.group(1)) for path in root.iterdir() if (m := _PART_FILE.match(path.name))}
    return sorted(ids - set(list_events(root)))


def check_hits_files(directory: str | os.PathLike[str]) -> None:
    """Raise ``InputError`` naming the missing hits file of an event that has other parts but
    none (``events_without_hits``), for readers that need every part of every event."""
    orphans = events_without_hits(directory)
    if orphans:
        raise InputError(
            f"{Path(directory) / event_prefix(orphans[0])}-hits.csv[.gz]: missing hits file for "
            f"event {orphans[0]} (its other parts are there)"
        )


def read_part(path: str | os.PathLike[str], part: str) -> pd.DataFrame:
    """Read one TrackML CSV part with column and value checks (``tracklm.io.tables``).

    A file with only a header is an empty table (an event may have no hits). Raises
    ``InputError`` naming the file and the missing or repeated column, or the first row (1-based data row, as a spreadsheet shows it after the header)
    whose value is not a number, not finite, not whole in an integer column, out of the column's
    range, or a negative id or count.
    """
    path = Path(path)
    if part not in PART_COLUMNS:
        raise ValueError(f"unknown event part {part!r}")
    table = read_table(path)
    required = PART_COLUMNS[part]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}")
    columns = {
        **required,
        **{k: v for k, v in OPTIONAL_COLUMNS.get(part, {}).items() if k in table},
    }
    for column, dtype in columns.items():
        minimum = 0 if column in NON_NEGATIVE_COLUMNS else None
        table[column] = numeric_column(table, column, dtype, path, minimum=minimum)
    return table


def read_event(
    directory: str | os.PathLike[str],
    event_id: int,
    parts: tuple[str, ...] = ("hits", "particles", "truth"),
) -> Event:
    """Read the given parts of one event from a TrackML directory."""
    event = Event(event_id=event_id)
    for part in parts:
        setattr(event, part, read_part(event_path(directory, event_id, part), part))
    return event


def _column_order(part: str, table: pd.DataFrame) -> list[str]:
    required = list(PART_COLUMNS[part])
    optional = [c for c in OPTIONAL_COLUMNS.get(part, {}) if c in table.columns]
    if part == "particles" and "particle_type" in optional:
        # TrackML's throughput layout puts particle_type right after particle_id.
        return ["particle_id", "particle_type", *required[1:]]
    return required + optional


def write_part(path: str | os.PathLike[str], part: str, table: pd.DataFrame) -> None:
    """Write one part as TrackML CSV (gzip-compressed if the name ends in ``.gz``), byte-reproducibly."""
    path = Path(path)
    missing = [column for column in PART_COLUMNS[part] if column not in table.columns]
    if missing:
        raise ValueError(f"{part} table lacks column {missing[0]!r}")
    text = table[_column_order(part, table)].to_csv(
        index=False, float_format="%.7g", lineterminator="\n"
    )
    data = text.encode()
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6
        ) as handle:
            handle.write(data)
        data = buffer.getvalue()
    path.write_bytes(data)


def write_event(
    directory: str | os.PathLike[str],
    event_id: int,
    *,
    hits: pd.DataFrame,
    particles: pd.DataFrame,
    truth: pd.DataFrame,
    cells: pd.DataFrame | None = None,
    compress: bool = True,
) -> list[Path]:
    """Write an event's parts into ``directory``; returns the paths written."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".csv.gz" if compress else ".csv"
    tables = {"hits": hits, "particles": particles, "truth": truth, "cells": cells}
    written = []
    for part, table in tables.items():
        if table is None:
            continue
        path = root / f"{event_prefix(event_id)}-{part}{suffix}"
        write_part(path, part, table)
        written.append(path)
    return written
