"""Atomic outputs: an interrupted stage leaves either nothing or a complete result.

Every output is written under a hidden temporary name beside its final path,
``.NAME.tmp-HOST-PID-XXXXXXXX``, and renamed to ``NAME`` in one step once complete, so ``NAME``
never exists half-written. An exception removes the temporary. A process killed outright
(SIGKILL, power loss) cannot clean up; its temporary stays behind, hidden, and the next write of
the same ``NAME`` on the same host removes the temporaries whose process is gone. Temporaries of
other hosts (a shared file system) are left alone: their processes cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracklm.errors import InputError

log = logging.getLogger(__name__)

# Temporaries this process has made and not yet published or removed: a stale temporary of a
# dead process that happened to have this process's PID must not pass for one of these.
_LIVE_TEMPORARIES: set[Path] = set()


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


def _host() -> str:
    """This host's name as it may appear in a file name (no path separators)."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "host"


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.tmp-{_host()}-{os.getpid()}-"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``final`` left by dead processes of this host.

    Parameters
    ----------
    final : an output path written through ``atomic_output_dir`` or ``atomic_output_file``.

    Returns
    -------
    The temporaries removed.
    """
    final = Path(final)
    pattern = re.compile(
        rf"^\.{re.escape(final.name)}\.tmp-{re.escape(_host())}-(?P<pid>\d+)-[A-Za-z0-9_]+$"
    )
    removed: list[Path] = []
    try:
        siblings = list(final.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in siblings:
        match = pattern.match(path.name)
        if match is None or path in _LIVE_TEMPORARIES:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _process_exists(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted process (%d)", path, pid)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` that becomes ``path`` only on success.

    On any exception the temporary directory is removed and ``path`` is left untouched. A
    replaced ``path`` (``overwrite``) is first renamed aside, so a kill at any moment leaves either
    the old or the new directory complete, or (between the two renames) neither.

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
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
    _LIVE_TEMPORARIES.add(tmp)
    try:
        # mkdtemp makes the directory private (0700); the result should get the usual permissions.
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
            _LIVE_TEMPORARIES.add(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
            _LIVE_TEMPORARIES.discard(old)
        else:
            if final.exists() or final.is_symlink():
                final.unlink()
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE_TEMPORARIES.discard(tmp)


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` that is renamed to ``path`` on success.

    Parameters
    ----------
    path : the final file.
    durable : flush the file to the disk before the rename (``fsync``), so that ``path`` is
        complete after a power loss too, not only after a killed process.
    """
    final = Path(path)
    make_parent(final)
    remove_stale_temporaries(final)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(final), dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    _LIVE_TEMPORARIES.add(tmp)
    try:
        tmp.chmod(0o666 & ~_umask())
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
        if durable:
            _fsync_directory(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _LIVE_TEMPORARIES.discard(tmp)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
