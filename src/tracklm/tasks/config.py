"""``FinetuneConfig``: the options of ``tracklm finetune``, with the one set of defaults.

``tracklm finetune --config FILE`` reads a YAML of these keys over the defaults
(``load_finetune_config``); the built-in presets (``src/tracklm/presets/tasks/*.yaml``, loaded with
``tracklm.presets.load_preset("tasks", name)``) hold only the keys they change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from tracklm import config as config_lib
from tracklm.errors import InputError


@dataclass
class FinetuneConfig:
    """Fine-tuning options: these defaults are the one set; ``--config FILE`` (a YAML of these
    keys) and the built-in presets (``tracklm.presets.load_preset("tasks", name)``) override them
    key by key. Unknown keys and out-of-range values are refused with an ``InputError``.

    Attributes
    ----------
    batch_size : tracks per optimiser step.
    learning_rate : AdamW learning rate of the head (and of the encoder in ``scratch`` mode).
    encoder_learning_rate : learning rate of the pre-trained encoder in ``finetune`` mode.
    weight_decay : AdamW weight decay.
    warmup_steps : linear warm-up steps, then linear decay to zero at ``max_steps``.
    max_steps : optimiser steps unless ``--max-steps`` is given.
    val_every : validate every this many steps.
    val_tracks : at most this many ``val`` tracks for validation.
    eval_tracks : at most this many ``test`` tracks for the final scores.
    eval_batch_size : sequences per forward pass when scoring.
    accelerator : Lightning accelerator (``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``, ``tpu``).
    """

    batch_size: int = 256
    learning_rate: float = 1e-3
    encoder_learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 2000
    val_every: int = 250
    val_tracks: int = 5000
    eval_tracks: int = 20000
    eval_batch_size: int = 1024
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "val_every", "val_tracks", "eval_tracks",
                     "eval_batch_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise InputError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise InputError(f"warmup_steps: must be at least 0, got {self.warmup_steps}")
        if not (self.learning_rate > 0 and self.encoder_learning_rate > 0):
            raise InputError("learning_rate and encoder_learning_rate: must be > 0")
        if not self.weight_decay >= 0:
            raise InputError(f"weight_decay: must be >= 0, got {self.weight_decay}")


def load_finetune_config(path: str | os.PathLike[str] | None = None) -> FinetuneConfig:
    """``FinetuneConfig`` defaults, with the keys of the YAML file ``path`` over them.

    Raises
    ------
    InputError
        One line naming the file and the key at fault (unknown key, wrong type, bad value).
    """
    if path is None:
        return FinetuneConfig()
    try:
        return config_lib.load_config(FinetuneConfig, path)
    except InputError as exc:
        message = str(exc)
        raise InputError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
