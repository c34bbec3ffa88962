"""``PretrainConfig``: every option of a pre-training run, with the ``tiny|small|paper`` presets.

The presets live here in code and are mirrored by ``configs/pretrain/{tiny,small,paper}.yaml``
(a test keeps the two equal). A user's ``--config FILE`` overrides a preset key by key; unknown
keys and wrong types are refused with an ``InputError`` naming the file and key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tracklm import config as config_lib
from tracklm.data.masking import MaskSchedule
from tracklm.errors import InputError

PRESETS = ("tiny", "small", "paper")


@dataclass
class PretrainConfig:
    """Options of ``tracklm pretrain``.

    Attributes
    ----------
    model : model preset name (``TrackingBertConfig.preset``): ``tiny``, ``small`` or ``paper``.
    model_overrides : fields of ``TrackingBertConfig`` to change, e.g. ``{num_layers: 6}``.
        ``vocab_size`` and ``max_length`` are always set from the dataset.
    batch_size : pairs per batch per device.
    lr : peak learning rate of AdamW.
    weight_decay : AdamW weight decay (not applied to biases, LayerNorms and embeddings).
    adam_betas : AdamW (beta1, beta2).
    warmup_steps : steps of linear warm-up from 0 to ``lr``; then linear decay to 0 at ``max_steps``.
    max_steps : optimiser steps of the run.
    gradient_clip : maximum gradient norm.
    mask_rates : mask rate of each stage of the schedule (paper: 0.15 -> 0.30 -> 0.50).
    mask_rate_steps : first step of each later stage; one fewer entry than ``mask_rates``.
    pairing : ``event`` (A and B from the same event), ``any`` (any two tracks) or ``single``.
    pair_task : ``pt`` (label pT(B) > pT(A), the paper's task), ``swap`` (the public code's
        replaced-B task, for reproduction) or ``none``.
    val_every : optimiser steps between validations on the held-out ``val`` split.
    val_batches : batches per validation (fixed pairs and masks, so numbers compare across steps).
    val_mask_rate : mask rate of the validation batches.
    checkpoint_every : optimiser steps between ``checkpoints/last.ckpt`` saves.
    early_stopping_patience : validations without improvement of ``val/loss`` before stopping;
        None turns early stopping off.
    num_workers : DataLoader worker processes building batches.
    precision : Lightning precision; ``auto`` means ``bf16-mixed`` on CUDA and ``32-true`` on CPU.
    """

    model: Literal["tiny", "small", "paper"] = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 10_000
    max_steps: int = 200_000
    gradient_clip: float = 1.0
    mask_rates: tuple[float, ...] = (0.15, 0.30, 0.50)
    mask_rate_steps: tuple[int, ...] = (50_000, 100_000)
    pairing: Literal["event", "any", "single"] = "event"
    pair_task: Literal["pt", "swap", "none"] = "pt"
    val_every: int = 1000
    val_batches: int = 20
    val_mask_rate: float = 0.15
    checkpoint_every: int = 1000
    early_stopping_patience: int | None = 10
    num_workers: int = 2
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model_overrides, dict):
            raise InputError("pretrain config: model_overrides must be a mapping of model fields")
        for name in ("batch_size", "max_steps", "val_every", "val_batches", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"pretrain config: {name} must be at least 1, got {getattr(self, name)}"
                )
        for name in ("warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise InputError(
                    f"pretrain config: {name} must be at least 0, got {getattr(self, name)}"
                )
        if not self.lr > 0 or self.weight_decay < 0 or not self.gradient_clip > 0:
            raise InputError("pretrain config: lr and gradient_clip must be > 0, weight_decay >= 0")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise InputError(
                f"pretrain config: adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}"
            )
        if self.pairing == "single" and self.pair_task != "none":
            raise InputError(
                f"pretrain config: pair_task {self.pair_task!r} needs pairs; use pair_task: none with pairing: single"
            )
        if not 0.0 < self.val_mask_rate <= 1.0:
            raise InputError(
                f"pretrain config: val_mask_rate must lie in (0, 1], got {self.val_mask_rate}"
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise InputError(
                "pretrain config: early_stopping_patience must be at least 1 (or null for none)"
            )
        try:
            self.mask_schedule()
        except ValueError as exc:
            raise InputError(f"pretrain config: mask_rates/mask_rate_steps: {exc}") from None

    def mask_schedule(self) -> MaskSchedule:
        """The training mask-rate schedule."""
        return MaskSchedule(rates=tuple(self.mask_rates), boundaries=tuple(self.mask_rate_steps))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly data."""
        return config_lib.to_dict(self)


_PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on a laptop CPU: for tests and for trying the pipeline.
    "tiny": {
        "model": "tiny", "batch_size": 64, "lr": 5e-3, "warmup_steps": 20, "max_steps": 300,
        "mask_rate_steps": (100, 200), "val_every": 50, "val_batches": 4, "checkpoint_every": 100,
        "early_stopping_patience": None, "num_workers": 0,
    },
    # Minutes to an hour: a quick but useful model.
    "small": {
        "model": "small", "batch_size": 512, "lr": 5e-4, "warmup_steps": 1000, "max_steps": 30_000,
        "mask_rate_steps": (10_000, 20_000), "val_every": 500, "val_batches": 20,
        "checkpoint_every": 1000, "early_stopping_patience": 10, "num_workers": 2,
    },
    # arXiv:2402.10239: batch 5,000 pairs, lr 1e-4, 10k warm-up steps then linear decay.
    "paper": {
        "model": "paper", "batch_size": 5000, "lr": 1e-4, "warmup_steps": 10_000,
        "max_steps": 200_000, "mask_rate_steps": (50_000, 100_000), "val_every": 2000,
        "val_batches": 20, "checkpoint_every": 2000, "early_stopping_patience": 10, "num_workers": 4,
    },
}  # fmt: skip


def preset_config(name: str) -> PretrainConfig:
    """The built-in preset ``name`` (``tiny``, ``small`` or ``paper``)."""
    if name not in _PRESETS:
        raise InputError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return dataclasses.replace(PretrainConfig(), **_PRESETS[name])


def load_pretrain_config(
    preset: str, path: str | None = None, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """A preset, then the YAML file ``path`` over it, then ``overrides`` (e.g. from options).

    Parameters
    ----------
    preset : built-in preset name.
    path : YAML file of ``PretrainConfig`` keys, or None.
    overrides : final values, e.g. ``{"max_steps": 100}`` from ``--max-steps``; None values skipped.
    """
    config = preset_config(preset)
    if path is not None:
        config = config_lib.merge(config, config_lib.read_yaml(path), where=str(path))
    extra = {key: value for key, value in (overrides or {}).items() if value is not None}
    if extra:
        config = config_lib.merge(config, extra, where="options")
    return config
