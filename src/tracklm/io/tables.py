"""Numeric CSV tables (TrackML event parts, ``detectors.csv``): read them with every check.

One home for what such a file is checked for, so event files and detector files fail the same
way. The file is read whole (gunzipped when its name ends in ``.gz``: a cut or corrupted stream
is caught by gzip's length and checksum), its header must name each column once, and each numeric
column must hold finite numbers that fit the dtype it is read as (whole numbers for integer
columns). A UTF-8 byte-order mark, Windows line endings and quoted fields read as plain CSV.

Errors are ``InputError`` naming the file, and where there is one the row (data rows counted from
1, the header excluded) and the column.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tracklm.errors import InputError
from tracklm.io.native import read_csv_bytes


def read_table(path: str | os.PathLike[str], *, what: str = "file") -> pd.DataFrame:
    """Read a CSV file (gzip-compressed if its name ends in ``.gz``) into a DataFrame.

    Parameters
    ----------
    path : the file.
    what : what the file is, for the message when it does not exist (``"no such WHAT"``).

    Returns
    -------
    The table as the pyarrow CSV engine types it; possibly without rows (header only).

    Raises
    ------
    InputError
        When the file is missing, unreadable, cut short, empty, not UTF-8 text, has a column
        name twice, or does not parse as CSV (a row with too few or too many fields).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"{path}: unreadable or truncated ({exc})") from None
    if not data.strip():
        raise InputError(f"{path}: empty file (no header)")
    _check_header(path, data)
    try:
        table = read_csv_bytes(data)
    except Exception as exc:  # pyarrow's parse errors quote the row, but do not number it
        raise InputError(f"{path}: {_parse_problem(data, exc)}") from None
    return table


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_problem(data: bytes, exc: BaseException) -> str:
    """Why ``data`` does not parse as CSV: the first data row (counted from 1 after the header,
    blank lines skipped as the reader skips them) with another number of fields than the header,
    else the parser's own message."""
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""))
    try:
        width = len(next(rows, []))
        number = 0
        for fields in rows:
            if not fields:
                continue
            number += 1
            if len(fields) != width:
                count = f"{len(fields)} field{'s' if len(fields) != 1 else ''}"
                return f"row {number}: {count}, the header has {width} (cannot parse CSV)"
    except csv.Error:
        pass
    return f"cannot parse CSV ({_first_line(exc)})"


def _check_header(path: Path, data: bytes) -> None:
    """Refuse a header that is not UTF-8 text or that names a column twice.

    pandas would rename a repeated name (``x``, ``x.1``) and read the first column silently,
    whichever of the two the file meant.
    """
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    try:
        text = line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header line is not UTF-8 text") from None
    names = next(csv.reader([text]), [])
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)


def numeric_column(
    table: pd.DataFrame,
    column: str,
    dtype: Any,
    path: str | os.PathLike[str],
    *,
    minimum: float | None = None,
    strict: bool = False,
) -> pd.Series:
    """Column ``column`` of ``table`` as ``dtype``, after checking every value fits.

    Parameters
    ----------
    table : a table from ``read_table``.
    column : the column's name (present in ``table``).
    dtype : numpy dtype to read the column as (an integer or float type).
    path : the file, for messages.
    minimum : smallest value allowed (none when None).
    strict : the values must exceed ``minimum`` rather than reach it.

    Returns
    -------
    The column converted to ``dtype``.

    Raises
    ------
    InputError
        Naming the first row whose value is not a number (text, empty, NaN, true/false), not
        finite, not a whole number for an integer column, outside the range of ``dtype``, or
        below ``minimum``.
    """
    values = table[column]
    where = f"{path}: row {{}}, column {column!r}"
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"{where.format(1)}: not a number ({values.iloc[0]})")
    if not pd.api.types.is_numeric_dtype(values) or values.isna().any():
        numeric = pd.to_numeric(values, errors="coerce")
        row = _first(numeric.isna().to_numpy())
        if row is not None:
            raise InputError(f"{where.format(row + 1)}: not a number")
        values = numeric
    array = values.to_numpy()
    target = np.dtype(dtype)
    problems: list[tuple[np.ndarray, str]] = []
    if array.dtype.kind == "f":
        problems.append((~np.isfinite(array), "{} is not a finite number"))
    if target.kind in "iu":
        if array.dtype.kind == "f":
            problems.append((array != np.trunc(array), "{:g} is not a whole number"))
        limits = np.iinfo(target)
        problems.append(
            ((array < limits.min) | (array > limits.max), f"{{:g}} is out of range for {target}")
        )
    elif target == np.float32:
        problems.append(
            (np.abs(array) > np.finfo(np.float32).max, "{:g} is out of range for float32")
        )
    if minimum is not None:
        low = array <= minimum if strict else array < minimum
        problems.append((low, f"{{:g}} is not {'>' if strict else '>='} {minimum:g}"))
    for bad, problem in problems:
        row = _first(bad)
        if row is not None:
            raise InputError(f"{where.format(row + 1)}: {problem.format(array[row])}")
    return values.astype(target)


def _first(mask: np.ndarray) -> int | None:
    """Index of the first True of ``mask``, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None
