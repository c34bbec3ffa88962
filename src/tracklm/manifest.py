"""``manifest.json``: what made a stage's output (inputs, config, versions, content hashes)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from pathlib import Path
from typing import Any

from tracklm._fs import write_json


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes a stage's output (read without importing them)."""
    from importlib import metadata

    import tracklm

    versions = {"tracklm": tracklm.__version__, "python": platform.python_version()}
    for name in ("numpy", "pandas", "pyarrow", "torch", "lightning"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_hashes(directory: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of every file below ``directory`` (relative POSIX paths), manifest excluded."""
    root = Path(directory)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }


def write_manifest(directory: str | os.PathLike[str], stage: str, **fields: Any) -> dict[str, Any]:
    """Write ``directory/manifest.json`` with the stage, ``fields``, versions, time and hashes.

    Call it last, once every other file of the stage is in ``directory``.
    """
    manifest: dict[str, Any] = {"stage": stage, **fields}
    if "versions" not in manifest:
        manifest["versions"] = library_versions()
    manifest.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    manifest["files"] = file_hashes(directory)
    write_json(Path(directory) / "manifest.json", manifest)
    return manifest
