"""Typed configs: dataclasses filled from YAML (``yaml.safe_load``); unknown keys are errors.

Every stage's options live in a dataclass. Presets are YAML files under ``configs/`` (and the
package's own defaults); a user file overrides them key by key. Nested dataclasses nest in YAML.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tracklm.errors import InputError

T = TypeVar("T")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (a config is UTF-8 YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}:{where} invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config must be a mapping of keys to values")
    return data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except InputError:
                continue
        raise InputError(f"{where}: {value!r} does not fit {annotation}")
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping")
        return from_dict(annotation, value, where=where)
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(item, inner, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ``InputError``."""
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except InputError as exc:
        # The dataclass's own range checks do not know the file: name it.
        message = str(exc)
        if message.startswith(where):
            raise
        raise InputError(f"{where}: {message}") from None


def merge(base: T, overrides: dict[str, Any], *, where: str = "config") -> T:
    """Return a copy of dataclass ``base`` with ``overrides`` applied (nested mappings merge)."""
    current = to_dict(base)
    return from_dict(type(base), _deep_update(current, overrides), where=where)


def _deep_update(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_update(result[key], value)
        else:
            result[key] = value
    return result


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-friendly data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read YAML file ``path`` into dataclass ``cls``."""
    return from_dict(cls, read_yaml(path), where=str(path))
