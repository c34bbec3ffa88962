"""Numeric CSV tables (``tracklm.io.tables``): what a corrupted file is refused for, by row and
column, and the spellings of a sound file that read the same."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.errors import InputError
from tracklm.io.tables import numeric_column, read_table
from tracklm.io.trackml import read_part

HITS = (
    "hit_id,x,y,z,volume_id,layer_id,module_id\n1,31.5,-2.25,100,8,2,17\n2,-40.125,7,-350.5,9,4,3\n"
)


def _hits(tmp_path: Path, text: str = HITS, name: str = "event000000001-hits.csv") -> Path:
    path = tmp_path / name
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def _with(row: int, column: str, value: str) -> str:
    lines = HITS.splitlines()
    header = lines[0].split(",")
    fields = lines[row].split(",")
    fields[header.index(column)] = value
    lines[row] = ",".join(fields)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("x", "inf", "inf is not a finite number"),
        ("z", "-Infinity", "-inf is not a finite number"),
        ("x", "1e39", "1e+39 is out of range for float32"),
        ("hit_id", "2.5", "2.5 is not a whole number"),
        ("hit_id", "100000000000000000000", "1e+20 is out of range for int64"),
        ("module_id", "3000000000", "3e+09 is out of range for int32"),
        ("volume_id", "-8", "-8 is not >= 0"),
        ("layer_id", "true", "not a number"),
    ],
)
def test_bad_values_are_named_by_row_and_column(
    tmp_path: Path, column: str, value: str, problem: str
) -> None:
    path = _hits(tmp_path, _with(2, column, value))
    expected = rf"hits\.csv: row 2, column '{column}': {re.escape(problem)}$"
    with pytest.raises(InputError, match=expected):
        read_part(path, "hits")


def test_a_repeated_column_is_refused(tmp_path: Path) -> None:
    path = _hits(tmp_path, HITS.replace("module_id\n", "x\n", 1))
    with pytest.raises(InputError, match=r"hits\.csv: column 'x' appears twice in the header$"):
        read_part(path, "hits")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("", "empty file"),
        (b"hit_\xff,x\n1,2\n", "the header line is not UTF-8 text"),
    ],
)
def test_files_without_data_are_refused(tmp_path: Path, data: str | bytes, problem: str) -> None:
    path = _hits(tmp_path, data)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=rf"hits\.csv: {problem}"):
        read_part(path, "hits")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (HITS + "3,1,2\n", "row 3: 3 fields, the header has 7"),
        (HITS.replace("\n2,", "\n\n2,0,", 1), "row 2: 8 fields, the header has 7"),
        (HITS.rstrip("\n").rsplit(",", 3)[0], "row 2: 4 fields, the header has 7"),  # cut short
    ],
)
def test_a_row_of_another_width_is_named(tmp_path: Path, text: str, problem: str) -> None:
    # blank lines are skipped, as the reader skips them
    with pytest.raises(InputError, match=rf"hits\.csv: {problem} \(cannot parse CSV\)$"):
        read_part(_hits(tmp_path, text), "hits")


def test_a_header_alone_is_an_empty_table(tmp_path: Path) -> None:
    hits = read_part(_hits(tmp_path, HITS.splitlines()[0] + "\n"), "hits")  # an event without hits
    assert len(hits) == 0 and hits["hit_id"].dtype == np.int64 and hits["x"].dtype == np.float32


def test_a_corrupted_gzip_stream_is_refused(tmp_path: Path) -> None:
    path = _hits(tmp_path, name="event000000001-hits.csv.gz")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the stored length no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"hits\.csv\.gz: unreadable or truncated"):
        read_part(path, "hits")


@pytest.mark.parametrize(
    "spelling",
    [
        lambda text: text.replace("\n", "\r\n"),
        lambda text: "\ufeff" + text,
        lambda text: text.rstrip("\n"),
        lambda text: "\n".join(
            ",".join(f'"{v}"' for v in line.split(",")) for line in text.splitlines()
        ),
    ],
    ids=["crlf", "bom", "no-final-newline", "quoted"],
)
def test_harmless_spellings_read_the_same(tmp_path: Path, spelling) -> None:
    clean = read_part(_hits(tmp_path), "hits")
    other = read_part(_hits(tmp_path, spelling(HITS), name="other-hits.csv"), "hits")
    pd.testing.assert_frame_equal(other, clean)


def test_numeric_column_minimum_can_be_strict(tmp_path: Path) -> None:
    path = _hits(tmp_path)
    table = read_table(path)
    sizes = numeric_column(table, "x", np.float64, path, minimum=-50.0, strict=True)
    assert sizes.dtype == np.float64
    with pytest.raises(InputError, match=r"row 2, column 'x': -40\.125 is not > 0$"):
        numeric_column(table, "x", np.float64, path, minimum=0, strict=True)
