"""A training budget is a schedule: fit a preset's step-counted schedule to ``--max-steps`` or
``--max-time``.

A preset sizes its warm-up, mask-rate stages, validation and checkpoint intervals for its own
``max_steps`` (hours on a CPU, a GPU-day for ``paper``). ``tracklm pretrain --max-steps N`` on a
new run rescales each of them in proportion to N (``fit_schedule``), so a short run still warms
up, raises the mask rate and decays the learning rate to zero. ``--max-time M`` first measures
this machine's pace on a few throw-away training steps (``measure_pace``), then fits the
schedule to the steps that M minutes hold (``steps_for_minutes``); the timer still stops the run
at M minutes if the machine slows down. Keys that the user's ``--config`` file sets itself are
kept as written; a file that sets ``max_steps`` turns the fitting off (the budget is then a cap).

The throw-away steps miss Lightning's own work per step, and on a shared machine the pace they
measure is that of their few seconds. So a run fitted to ``--max-time`` re-fits its schedule
twice on the way (``refit_schedule``, at 20% and 60% of its steps), to the pace of the steps it
made since the start or the previous point, validations and checkpoints included, and to the
time its timer has left: the learning rate still reaches zero and the mask-rate stages keep
their share of the run when the machine turns out slower or faster than it looked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from tracklm.models import TrackingBert
from tracklm.train.config import PretrainConfig
from tracklm.train.module import forward_batch
from tracklm.train.optim import build_optimizer, warmup_linear_decay

log = logging.getLogger(__name__)

SCHEDULE_KEYS = ("warmup_steps", "mask_rate_steps", "val_every", "checkpoint_every")
"""The step-counted keys ``fit_schedule`` rescales with ``max_steps``."""

FORWARD_FRACTION = 0.35
"""Cost of a validation batch (forward only) relative to a training step (forward, backward,
optimiser), for the time a run's validations take."""


def unreached_mask_stages(config: PretrainConfig) -> list[tuple[float, int]]:
    """(rate, first step) of each mask-rate stage that starts at or after ``config.max_steps``.

    Such a stage never runs: the run ends at the rate before it. ``fit_schedule`` keeps stage
    boundaries below the run's end unless the user set them (``keep``).
    """
    return [
        (float(rate), int(step))
        for rate, step in zip(config.mask_rates[1:], config.mask_rate_steps)
        if step >= config.max_steps
    ]


def fit_schedule(
    config: PretrainConfig, max_steps: int, keep: tuple[str, ...] | frozenset[str] = ()
) -> PretrainConfig:
    """``config`` run for ``max_steps`` with its schedule rescaled in proportion.

    Parameters
    ----------
    config : the schedule as sized for ``config.max_steps``.
    max_steps : the new number of optimiser steps.
    keep : keys of ``SCHEDULE_KEYS`` to leave as they are (set by the user).

    Returns
    -------
    The config with ``max_steps`` and each rescaled key; mask-rate stage boundaries stay strictly
    increasing and below ``max_steps`` (a stage too short to exist is squeezed to one step).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    scale = max_steps / config.max_steps
    changes: dict[str, Any] = {"max_steps": max_steps}
    if "warmup_steps" not in keep:
        changes["warmup_steps"] = min(round(config.warmup_steps * scale), max_steps - 1)
    if "mask_rate_steps" not in keep:
        boundaries: list[int] = []
        for step in config.mask_rate_steps:
            floor = boundaries[-1] + 1 if boundaries else 1
            boundaries.append(max(floor, round(step * scale)))
        changes["mask_rate_steps"] = tuple(boundaries)
    for key in ("val_every", "checkpoint_every"):
        if key not in keep:
            changes[key] = max(1, round(getattr(config, key) * scale))
    if config.decay_start is not None and "decay_start" not in keep:
        changes["decay_start"] = min(round(config.decay_start * scale), max_steps - 1)
    return dataclasses.replace(config, **changes)


REFIT_AT = (0.2, 0.6)
"""Fractions of its (latest) fitted steps at which a ``--max-time`` run re-fits its schedule."""

REFIT_MARGIN = 0.97
"""Share of the time left that a re-fit fills: the pace it uses already holds validations,
checkpoints and Lightning's work, so only the pace's own drift needs room."""

REFIT_MIN_CHANGE = 0.02
"""A re-fit that would move the last step by less than this fraction leaves the schedule alone."""


def refit_schedule(
    config: PretrainConfig, step: int, max_steps: int, keep: tuple[str, ...] | frozenset[str] = ()
) -> PretrainConfig:
    """``config``, already trained ``step`` steps, re-fitted to end at ``max_steps``.

    What lies behind ``step`` stays as it was: a warm-up or mask-rate boundary already passed
    keeps its step, and the ones still ahead scale with ``max_steps / config.max_steps`` (at
    least one step ahead, strictly increasing). So the schedule of the steps still to come is a
    function of the new config alone, which a resumed run rebuilds from ``run.json``. The
    validation and checkpoint intervals stay (they decide nothing of the training), as do the
    keys in ``keep`` (set by the user's ``--config`` file).

    Parameters
    ----------
    config : the schedule in force.
    step : optimiser steps made so far.
    max_steps : the new last step (more than ``step``).
    keep : keys of ``SCHEDULE_KEYS`` not to move.

    Returns
    -------
    The re-fitted config. Past the warm-up, the learning-rate decay goes on from the factor in
    force at ``step`` to 0 at ``max_steps`` (``decay_start`` moves to where the new decay line
    stands at 1), so the rate does not jump.
    """
    if max_steps <= step:
        raise ValueError(f"max_steps must exceed the {step} steps made, got {max_steps}")
    scale = max_steps / config.max_steps
    in_force = warmup_linear_decay(config.warmup_steps, config.max_steps, config.decay_start)(step)

    def ahead(boundary: int, floor: int) -> int:
        if boundary <= step:
            return boundary
        return max(floor, step + 1, round(boundary * scale))

    changes: dict[str, Any] = {"max_steps": max_steps}
    if "warmup_steps" not in keep:
        changes["warmup_steps"] = min(ahead(config.warmup_steps, 0), max_steps - 1)
    if "mask_rate_steps" not in keep:
        boundaries: list[int] = []
        for boundary in config.mask_rate_steps:
            boundaries.append(ahead(boundary, boundaries[-1] + 1 if boundaries else 1))
        changes["mask_rate_steps"] = tuple(boundaries)
    if step >= config.warmup_steps and in_force > 0 and "decay_start" not in keep:
        # (max_steps - step) / (max_steps - decay_start) == the factor in force
        changes["decay_start"] = round(max_steps - (max_steps - step) / in_force)
    return dataclasses.replace(config, **changes)


def refit_steps(step: int, made: int, seconds: float, seconds_left: float) -> int:
    """The last step of a run now at ``step``, whose last ``made`` steps took ``seconds``, with
    ``seconds_left`` to go (``REFIT_MARGIN`` of them filled at that pace; one step at least)."""
    pace = seconds / max(made, 1)
    return step + max(1, int(max(seconds_left, 0.0) * REFIT_MARGIN / pace))


@dataclass(frozen=True)
class Pace:
    """Seconds per training step measured on this machine, and how they were measured."""

    seconds_per_step: float
    steps_timed: int
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def steps_for_minutes(
    config: PretrainConfig, minutes: float, pace: Pace, margin: float = 0.92
) -> int:
    """Optimiser steps that fit in ``minutes`` of training at ``pace``, validations included.

    The validation intervals scale with the steps, so the fraction of time they take is the
    config's own: ``val_batches`` forward passes every ``val_every`` steps. ``margin`` leaves
    room for start-up, checkpoints, the final validation and Lightning's own work per step,
    which the throw-away steps of ``measure_pace`` skip: at 0.95, runs of 10 and 60 minutes
    were stopped by their timer at 96% and 98% of the fitted steps.
    """

    def seconds_per_step(schedule: PretrainConfig) -> float:
        validation = FORWARD_FRACTION * schedule.val_batches / max(schedule.val_every, 1)
        return pace.seconds_per_step * (1.0 + validation)

    steps = max(1, int(minutes * 60.0 * margin / seconds_per_step(config)))
    # The validation share depends on val_every, which scales with the steps: settle it once.
    fitted = fit_schedule(config, steps)
    return max(1, int(minutes * 60.0 * margin / seconds_per_step(fitted)))


def measure_pace(
    model: TrackingBert,
    batches: Any,
    config: PretrainConfig,
    *,
    device: torch.device | None = None,
    seconds: float = 12.0,
    max_steps: int = 200,
    warm_steps: int = 5,
) -> Pace:
    """Seconds per training step of ``model`` on ``batches`` (a ``PairBatches``), measured on
    throw-away steps.

    The model is trained on a copy of its weights with the run's optimiser (``build_optimizer``),
    so nothing of the run changes. The batches of steps 0, 1, ... are built in the timed loop, as a run without
    DataLoader workers builds them. Timing starts after ``warm_steps`` and stops after
    ``seconds`` or ``max_steps`` timed steps.
    """
    import copy

    device = device or torch.device("cpu")
    trial = copy.deepcopy(model).to(device).train()
    optimizer, _ = build_optimizer(
        trial, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999),
        warmup_steps=0, total_steps=1,
    )  # fmt: skip
    autocast = device.type == "cuda" and config.precision in ("auto", "bf16-mixed")
    timed, start = 0, 0.0
    step = 0
    while True:
        if step == warm_steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        batch = {key: value.to(device) for key, value in batches[step].items() if key != "step"}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = forward_batch(trial, batch)
        assert out.loss is not None  # the batch holds labels
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        step += 1
        if step > warm_steps:
            timed += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or timed >= max_steps:
                break
    pace = Pace(seconds_per_step=elapsed / timed, steps_timed=timed, seconds=elapsed)
    log.info("pretrain: measured %.4f s per step over %d steps", pace.seconds_per_step, timed)
    return pace
