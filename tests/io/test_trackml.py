"""TrackML event files: the real event round-trips, writes are byte-reproducible, errors are named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.errors import InputError
from tracklm.io.trackml import (
    PART_COLUMNS,
    PARTS,
    event_path,
    list_events,
    read_event,
    read_part,
    write_event,
    write_part,
)


@pytest.fixture(scope="module")
def real_event(real_event_dir: Path):
    return read_event(real_event_dir, 1, parts=PARTS)


def test_real_event_reads_with_fixed_columns_and_dtypes(real_event) -> None:
    assert len(real_event.hits) == len(real_event.truth) == 5527
    assert len(real_event.particles) == 548
    for part in PARTS:
        table = getattr(real_event, part)
        for column, dtype in PART_COLUMNS[part].items():
            assert table[column].dtype == np.dtype(dtype), (part, column)
    # Throughput-phase extras are kept.
    assert real_event.particles["particle_type"].dtype == np.int32
    assert "weight" in real_event.truth.columns
    np.testing.assert_array_equal(real_event.hits["hit_id"], real_event.truth["hit_id"])


@pytest.mark.parametrize("compress", [True, False])
def test_real_event_round_trip_is_equal_and_byte_reproducible(
    real_event, tmp_path: Path, compress: bool
) -> None:
    tables = {part: getattr(real_event, part) for part in PARTS}
    first = write_event(tmp_path / "a", 1, **tables, compress=compress)
    assert [p.name for p in first] == [
        f"event000000001-{part}.csv{'.gz' if compress else ''}" for part in PARTS
    ]
    again = read_event(tmp_path / "a", 1, parts=PARTS)
    for part in PARTS:
        pd.testing.assert_frame_equal(getattr(again, part), tables[part], check_exact=True)
    # Writing the same tables twice, or the read-back tables, gives the same bytes.
    second = write_event(tmp_path / "b", 1, **tables, compress=compress)
    third = write_event(
        tmp_path / "c", 1, **{part: getattr(again, part) for part in PARTS}, compress=compress
    )
    for a, b, c in zip(first, second, third):
        assert a.read_bytes() == b.read_bytes() == c.read_bytes(), a.name
    if compress:
        header = gzip.decompress(first[1].read_bytes()).split(b"\n", 1)[0]
        assert header.startswith(b"particle_id,particle_type,vx")


def test_list_events_and_event_path(tmp_path: Path, real_event) -> None:
    tables = {"hits": real_event.hits, "particles": real_event.particles, "truth": real_event.truth}
    write_event(tmp_path, 12, **tables, compress=False)
    write_event(tmp_path, 3, **tables)
    (tmp_path / "event000000099-particles.csv").write_text("no hits file: not an event")
    (tmp_path / "notes.txt").write_text("")
    assert list_events(tmp_path) == [3, 12]
    assert event_path(tmp_path, 3, "hits").name == "event000000003-hits.csv.gz"
    assert event_path(tmp_path, 12, "hits").name == "event000000012-hits.csv"
    with pytest.raises(
        InputError, match=r"event000000012-cells\.csv\[\.gz\]: missing cells file for event 12"
    ):
        event_path(tmp_path, 12, "cells")
    with pytest.raises(InputError, match="no such event directory"):
        list_events(tmp_path / "absent")


def _written(tmp_path: Path, real_event, part: str, name: str | None = None) -> Path:
    path = tmp_path / (name or f"event000000001-{part}.csv")
    write_part(path, part, getattr(real_event, part))
    return path


def test_missing_column_is_named(tmp_path: Path, real_event) -> None:
    path = tmp_path / "event000000001-hits.csv"
    real_event.hits.drop(columns=["layer_id"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"event000000001-hits\.csv: missing column 'layer_id'$"):
        read_part(path, "hits")


@pytest.mark.parametrize("text", ["x1", "", "nan"])
def test_bad_value_is_named_by_row_and_column(tmp_path: Path, real_event, text: str) -> None:
    path = _written(tmp_path, real_event, "particles")
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("pz")
    fields = lines[25].split(",")
    fields[column] = text
    lines[25] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"particles\.csv: row 25, column 'pz': not a number$"):
        read_part(path, "particles")


def test_truncated_gzip_is_named(tmp_path: Path, real_event) -> None:
    path = _written(tmp_path, real_event, "hits", "event000000001-hits.csv.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=r"event000000001-hits\.csv\.gz: unreadable or truncated"):
        read_part(path, "hits")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"event000000001-truth\.csv: no such file"):
        read_part(tmp_path / "event000000001-truth.csv", "truth")
