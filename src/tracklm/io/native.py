"""CSV and Parquet read by pyarrow from Arrow's own memory and files, never from Python objects.

Given a Python file object (``open(path)``, ``io.BytesIO(data)``, which is what
``pandas.read_csv(..., engine="pyarrow")`` and ``pandas.read_parquet(path)`` hand over), pyarrow
reads it from its own threads, and every block it reads is a Python ``bytes`` object wrapped in
an Arrow buffer. When a parse fails, pyarrow returns the error while its worker threads are still
releasing those buffers; releasing one takes the GIL. If the interpreter is already finalizing
(the process is exiting after that very error), the thread is stopped inside a C++ destructor and
the process dies of SIGABRT ("terminate called without an active exception") instead of exiting
with status 2. Arrow-owned memory (``pyarrow.BufferOutputStream``) and native files
(``pyarrow.OSFile``) keep every byte out of Python: pyarrow's threads never touch the
interpreter, and pandas still does the parsing and dtype conversion as before.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa


def read_csv_bytes(data: bytes) -> pd.DataFrame:
    """Parse CSV text with pandas' pyarrow engine from an Arrow-owned copy of ``data``.

    Raises what ``pandas.read_csv`` raises for malformed text (``pandas.errors.ParserError``,
    ``pandas.errors.EmptyDataError``).
    """
    sink = pa.BufferOutputStream()
    sink.write(data)
    with pa.BufferReader(sink.getvalue()) as source:
        return pd.read_csv(source, engine="pyarrow")


def read_parquet(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Parquet file with pandas through a native file (``FileNotFoundError`` when missing)."""
    with pa.OSFile(os.fspath(path)) as source:
        return pd.read_parquet(source)
