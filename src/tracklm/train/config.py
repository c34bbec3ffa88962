"""``PretrainConfig``: every option of a pre-training run, and the ``tiny|small|paper`` presets.

The dataclass holds the one set of defaults. A preset is package data,
``src/tracklm/presets/pretrain/NAME.yaml``, holding only the keys it sets; a user's
``--config FILE`` overrides it key by key. Unknown keys and wrong types are refused with an
``InputError`` naming the file and key. The config builds its mask-rate schedules once
(``mask_schedule``, ``val_mask_schedule``); the training module and the data receive them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from tracklm import config as config_lib
from tracklm.data.masking import MaskSchedule
from tracklm.errors import InputError
from tracklm.presets import load_preset


@dataclass(frozen=True)
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
    decay_start : the step at which the linear decay would stand at ``lr`` (None: at the end of
        the warm-up). Set by a schedule re-fitted mid-run, so the decay goes on from the rate in
        force to 0 at the new ``max_steps`` (``train/schedule.py: refit_schedule``).
    gradient_clip : maximum gradient norm.
    mask_rates : mask rate of each stage of the schedule (paper: 0.15 -> 0.30 -> 0.50).
    mask_rate_steps : first step of each later stage; one fewer entry than ``mask_rates``.
    pairing : ``event`` (A and B from the same event), ``any`` (any two tracks) or ``single``.
    pair_task : ``pt`` (label pT(B) > pT(A), the paper's task), ``swap`` (the public code's
        replaced-B task, for reproduction) or ``none``.
    mlm_loss_weight, pair_loss_weight : weights of the masked-module and the pair losses in
        the training loss (the position loss keeps the model's ``position_loss_weight``);
        validation's ``val/loss`` is always their plain sum, so runs compare.
    pair_in_batch_weight : weight of the pair task asked of every two tracks of a training
        batch, not only of its pairs (``in_batch_pair_loss``: 32,640 comparisons in a batch of
        128 pairs instead of 128); needs ``pair_task: pt`` and a model with
        ``pair_head: difference``, whose per-track scores it compares. 0 (default) turns it off.
    pair_clean_fraction : fraction of each training batch's pairs left unmasked, training the
        pair task on clean pairs (as the evaluation asks it) at the cost of their module labels;
        validation batches stay as configured.
    val_every : optimiser steps between validations on the held-out ``val`` split.
    val_batches : batches per validation (fixed pairs and masks, so numbers compare across steps).
    val_mask_rate : mask rate of the validation batches (every selected module hidden behind
        ``[MASK]``: no random or kept tokens, as in ``tracklm evaluate``).
    checkpoint_every : optimiser steps between ``checkpoints/last.ckpt`` saves.
    early_stopping_patience : validations without improvement of ``val/loss`` before stopping;
        None turns early stopping off.
    num_workers : DataLoader worker processes building batches.
    precision : Lightning precision (one of the names Lightning accepts); ``auto`` means
        ``bf16-mixed`` on CUDA and ``32-true`` on CPU.
    """

    model: Literal["tiny", "small", "paper"] = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 10_000
    max_steps: int = 200_000
    decay_start: int | None = None
    gradient_clip: float = 1.0
    mask_rates: tuple[float, ...] = (0.15, 0.30, 0.50)
    mask_rate_steps: tuple[int, ...] = (50_000, 100_000)
    pairing: Literal["event", "any", "single"] = "event"
    pair_task: Literal["pt", "swap", "none"] = "pt"
    mlm_loss_weight: float = 1.0
    pair_loss_weight: float = 1.0
    pair_in_batch_weight: float = 0.0
    pair_clean_fraction: float = 0.0
    val_every: int = 1000
    val_batches: int = 20
    val_mask_rate: float = 0.15
    checkpoint_every: int = 1000
    early_stopping_patience: int | None = 10
    num_workers: int = 2
    precision: Literal[
        "auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
        "64-true", "64", "transformer-engine", "transformer-engine-float16",
    ] = "auto"  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.model_overrides, dict):
            raise InputError("pretrain config: model_overrides must be a mapping of model fields")
        for name in ("batch_size", "max_steps", "val_every", "val_batches", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"pretrain config: {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.decay_start is not None and self.decay_start >= self.max_steps:
            raise InputError(
                f"pretrain config: decay_start must lie below max_steps ({self.max_steps}), "
                f"got {self.decay_start}"
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
        if not (self.mlm_loss_weight >= 0 and self.pair_loss_weight >= 0) or not (
            self.mlm_loss_weight + self.pair_loss_weight > 0
        ):
            raise InputError(
                "pretrain config: mlm_loss_weight and pair_loss_weight must be >= 0, not both 0"
            )
        if not self.pair_in_batch_weight >= 0:
            raise InputError(
                f"pretrain config: pair_in_batch_weight must be >= 0, got {self.pair_in_batch_weight}"
            )
        if self.pair_in_batch_weight > 0 and self.pair_task != "pt":
            raise InputError(
                f"pretrain config: pair_in_batch_weight compares the tracks' pT; it needs "
                f"pair_task: pt, not {self.pair_task!r}"
            )
        if not 0.0 <= self.pair_clean_fraction < 1.0:
            raise InputError(
                f"pretrain config: pair_clean_fraction must lie in [0, 1), got {self.pair_clean_fraction}"
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
            _ = self.mask_schedule  # built once, now: a bad schedule fails when the config is read
        except ValueError as exc:
            raise InputError(f"pretrain config: mask_rates/mask_rate_steps: {exc}") from None

    @cached_property
    def mask_schedule(self) -> MaskSchedule:
        """The training mask-rate schedule (``mask_rates`` switching at ``mask_rate_steps``)."""
        return MaskSchedule(rates=tuple(self.mask_rates), boundaries=tuple(self.mask_rate_steps))

    @cached_property
    def val_mask_schedule(self) -> MaskSchedule:
        """The validation schedule: ``val_mask_rate`` at every step."""
        return MaskSchedule(rates=(self.val_mask_rate,), boundaries=())

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly data."""
        return config_lib.to_dict(self)


def preset_config(name: str) -> PretrainConfig:
    """The built-in preset ``name`` (``src/tracklm/presets/pretrain/NAME.yaml``) over the defaults.

    Raises
    ------
    InputError
        When no such preset exists (one line naming ``--preset`` and the known presets).
    """
    keys = load_preset("pretrain", name, option="--preset")
    return config_lib.from_dict(PretrainConfig, keys, where=f"pretrain preset {name}")


def apply_overrides(
    config: PretrainConfig,
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> PretrainConfig:
    """``config`` with the YAML file ``path`` applied over it key by key, then ``overrides``.

    Parameters
    ----------
    config : the starting point (a preset, or a resumed run's config).
    path : YAML file of ``PretrainConfig`` keys, or None.
    overrides : final values, e.g. ``{"max_steps": 100}`` from ``--max-steps``; None values skipped.
    """
    if path is not None:
        config = config_lib.merge(config, config_lib.read_yaml(path), where=str(path))
    extra = {key: value for key, value in (overrides or {}).items() if value is not None}
    if extra:
        config = config_lib.merge(config, extra, where="options")
    return config


def load_pretrain_config(
    preset: str,
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> PretrainConfig:
    """A preset, then the YAML file ``path`` over it, then ``overrides`` (e.g. from options).

    Parameters
    ----------
    preset : built-in preset name (``tiny``, ``small`` or ``paper``).
    path : YAML file of ``PretrainConfig`` keys, or None.
    overrides : final values, e.g. ``{"max_steps": 100}`` from ``--max-steps``; None values skipped.
    """
    return apply_overrides(preset_config(preset), path, overrides)
