"""Built-in presets, shipped as package data and loaded by name.

Each kind of config has a folder of YAML files beside this module: ``model/`` (architectures,
``TrackingBertConfig``), ``pretrain/`` (training recipes, ``PretrainConfig``) and ``tasks/``
(fine-tuning, ``FinetuneConfig``). A preset file holds only the keys it sets; every other key
keeps the dataclass default, so each default lives in one place. Files are read with
``yaml.safe_load``; the dataclass that receives them refuses unknown keys.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tracklm import config as config_lib
from tracklm.errors import InputError

KINDS = ("model", "pretrain", "tasks")


def preset_names(kind: str) -> tuple[str, ...]:
    """Names of the built-in presets of ``kind`` (``model``, ``pretrain`` or ``tasks``), sorted."""
    if kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r} (known: {', '.join(KINDS)})")
    folder = resources.files(__package__).joinpath(kind)
    return tuple(
        sorted(
            entry.name[: -len(".yaml")]
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml")
        )
    )


def load_preset(kind: str, name: str, option: str = "--preset") -> dict[str, Any]:
    """The keys set by the built-in preset ``name`` of ``kind``.

    Parameters
    ----------
    kind : ``model``, ``pretrain`` or ``tasks``.
    name : preset name, e.g. ``small``.
    option : the option or field that named the preset, for the error message.

    Raises
    ------
    InputError
        When no such preset exists (the message lists the known ones).
    """
    names = preset_names(kind)
    if name not in names:
        raise InputError(
            f"{option}: unknown {kind} preset {name!r} (choose from {', '.join(names)})"
        )
    with resources.as_file(
        resources.files(__package__).joinpath(kind).joinpath(f"{name}.yaml")
    ) as path:
        return config_lib.read_yaml(path)
