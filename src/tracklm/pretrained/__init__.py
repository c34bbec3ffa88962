"""Pre-trained models shipped with the package, loaded by name; nothing is downloaded.

Each model is a folder beside this module written by ``TrackingBert.save_pretrained``
(``config.json``, ``vocab.json``, ``model.safetensors``, ``README.md``: the model card with its
data, recipe, figures and the commands that made it). ``TrackingBert.from_pretrained(NAME)`` and
``--model NAME`` on every verb that takes a model accept a shipped name wherever a model
directory is expected; an existing directory of that name wins.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from tracklm.errors import InputError


def shipped_names() -> tuple[str, ...]:
    """Names of the models shipped with the package, sorted."""
    folder = resources.files(__package__)
    return tuple(
        sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.is_dir() and entry.joinpath("config.json").is_file()
        )
    )


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """The model directory ``model`` names: the path itself when it exists, else the shipped
    model of that name, else the path (whose loading then fails naming it).

    Raises
    ------
    InputError
        When ``model`` is neither an existing path nor a shipped name but looks like a name (no
        path separator): one line listing the shipped models.
    """
    path = Path(model)
    if path.exists():
        return path
    text = os.fspath(model)
    names = shipped_names()
    if text in names:
        return Path(str(resources.files(__package__).joinpath(text)))
    if os.sep not in text and "/" not in text:
        known = ", ".join(names) or "none"
        raise InputError(
            f"--model {text}: no such model directory, and no shipped model of that name "
            f"(shipped: {known})"
        )
    return path
