"""Atomic outputs: an interrupted stage leaves either nothing or a complete result."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracklm.errors import InputError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def make_parent(final: Path) -> None:
    """Create the directory an output goes into; ``InputError`` naming it where that fails (a
    file in the way, no permission)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{final}: cannot create the output's directory {final.parent} ({exc.strerror})"
        ) from None


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` that becomes ``path`` only on success.

    On any exception the temporary directory is removed and ``path`` is left untouched.

    Parameters
    ----------
    path : the final output directory.
    overwrite : replace an existing ``path``; otherwise an existing non-empty ``path`` is an error.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        else:
            raise InputError(f"{final}: output already exists (choose another --out or remove it)")
    make_parent(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    # mkdtemp makes the directory private (0700); the result should get the usual permissions.
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` that is renamed to ``path`` on success."""
    final = Path(path)
    make_parent(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
