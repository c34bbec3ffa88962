"""``tracklm pretrain``: train TrackingBERT on a prepared dataset and write the run directory.

Run directory::

    RUN/run.json            the resolved config, seed, dataset and vocabulary hash (for --resume)
    RUN/checkpoints/last.ckpt   Lightning checkpoint, every ``checkpoint_every`` steps and at the end,
                            replaced in one rename (``train/checkpoint.py``)
    RUN/logs/               CSV logs (and TensorBoard logs where tensorboard is installed)
    RUN/model/              the final model (``TrackingBert.from_pretrained``), written atomically
    RUN/metrics.json        final validation metrics and training throughput
    RUN/manifest.json       stage "pretrain": inputs, config, metrics, versions, file hashes

``--resume`` continues from ``checkpoints/last.ckpt`` with the step count, learning-rate schedule,
optimiser state and data order of the interrupted run; an uninterrupted run and an interrupted
and resumed one of the same length give the same weights. A run killed at any moment (SIGKILL
included) loses at most the steps since its last checkpoint: ``run.json``, the checkpoint, the
model, ``metrics.json`` and the manifest each appear or are replaced in one rename, so none is
ever half-written (the CSV logs grow as training goes; a resumed run logs to a new version).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, Logger

from tracklm import config as config_lib
from tracklm._fs import atomic_output_dir, write_json
from tracklm.data.batches import input_width
from tracklm.errors import InputError
from tracklm.io.dataset import PreparedDataset, open_dataset
from tracklm.manifest import write_manifest
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.config import INPUT_MODES, OBJECTIVES
from tracklm.models.inputs import module_geometry_table
from tracklm.train.checkpoint import AtomicCheckpointIO
from tracklm.train.config import PretrainConfig, apply_overrides, load_pretrain_config
from tracklm.train.module import PretrainData, PretrainModule
from tracklm.train.optim import warmup_linear_decay
from tracklm.train.schedule import (
    REFIT_AT,
    REFIT_MIN_CHANGE,
    Pace,
    fit_schedule,
    measure_pace,
    refit_schedule,
    refit_steps,
    steps_for_minutes,
    unreached_mask_stages,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_DIR = "model"


def run_pretrain(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    preset: str = "tiny",
    config: str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
    max_time: float | None = None,
    batch_size: int | None = None,
    devices: str = "1",
    num_nodes: int = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
    resume: bool = False,
    seed: int = 0,
    inputs: str | None = None,
    objective: str | None = None,
) -> Path:
    """Pre-train TrackingBERT (the ``tracklm pretrain`` verb).

    Parameters
    ----------
    data : dataset directory from ``tracklm prepare``.
    out : run directory; must be new (or empty) unless ``resume``.
    preset : ``tiny``, ``small`` or ``paper`` (ignored with ``resume``: the run keeps its config).
    config : YAML file of ``PretrainConfig`` keys overriding the preset (or the resumed run's config).
    max_steps : optimiser steps of the run (overrides the config; may extend a resumed run). On a
        new run the preset's warm-up, mask-rate stages and intervals are rescaled to it
        (``train/schedule.py``), except those the ``config`` file sets.
    max_time : wall-clock minutes for this invocation; training stops then and the model is
        written. On a new run without ``max_steps`` (from the option or the ``config`` file),
        the schedule is fitted to the steps this machine runs in that time, measured first.
    batch_size : pairs per batch per device (overrides the config).
    devices, num_nodes, strategy, accelerator : passed to ``lightning.pytorch.Trainer``
        (e.g. ``devices="2", strategy="ddp"`` for data-parallel training).
    resume : continue the run in ``out`` from ``checkpoints/last.ckpt``.
    seed : random seed of a new run (a resumed run keeps its own).
    inputs : what the model reads of each hit, ``tokens``, ``geometry`` or ``hits``
        (``TrackingBertConfig.inputs``); overrides the preset's and the config's choice. A
        resumed run keeps its own (a different one is refused).
    objective : ``masked`` (the paper's) or ``next-module`` (causal attention, each position
        predicting the next token; ``TrackingBertConfig.objective``); overrides the preset's and
        the config's choice. A resumed run keeps its own (a different one is refused).

    Returns
    -------
    The run directory.
    """
    dataset = open_dataset(data)
    if len(dataset.split("train")) == 0:
        raise InputError(
            f"{dataset.path / 'train'}: the train split holds no tracks (prepared with "
            "--test-fraction/--val-fraction summing to 1?); pretrain needs training tracks"
        )
    run = Path(out)
    overrides: dict[str, Any] = {"max_steps": max_steps, "batch_size": batch_size}
    first_process = _process_rank() == 0
    checkpoint: Path | None
    fitted: dict[str, Any] | None = None
    file_keys: frozenset[str] = frozenset()
    if resume:
        cfg, seed = _resumed_settings(run, dataset, config, overrides)
        checkpoint = run / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not checkpoint.is_file():
            log.warning("%s: no checkpoint yet; starting the run again from step 0", checkpoint)
            checkpoint = None
    else:
        # --max-steps on a new run rescales the preset's schedule (train/schedule.py).
        cfg = load_pretrain_config(preset, config, {**overrides, "max_steps": None})
        checkpoint = None
        chosen = {"inputs": (inputs, INPUT_MODES), "objective": (objective, OBJECTIVES)}
        for name, (value, known) in chosen.items():
            if value is None:
                continue
            if value not in known:
                raise InputError(f"--{name}: {value!r} is not one of {', '.join(known)}")
            cfg = dataclasses.replace(cfg, model_overrides={**cfg.model_overrides, name: value})
        file_keys = frozenset(config_lib.read_yaml(config)) if config is not None else frozenset()
        if max_steps is not None:
            cfg = fit_schedule(cfg, max_steps, keep=file_keys)
            fitted = {"to": "max_steps", "max_steps": max_steps}
    # Refuse bad model_overrides now, before a new run directory exists.
    source = config if config is not None else f"--preset {preset}"
    try:
        planned = _model_config(
            cfg,
            vocab_size=len(dataset.vocab),
            width=input_width(dataset.split("train").max_length, cfg.pairing),
        )
    except InputError as exc:
        raise InputError(f"{source}: model_overrides: {exc}") from None
    if cfg.pair_in_batch_weight > 0 and planned.pair_head != "difference":
        raise InputError(
            f"{source}: pair_in_batch_weight compares per-track scores; it needs "
            "model_overrides: {pair_head: difference}"
        )
    if resume and inputs is not None and inputs != planned.inputs:
        raise InputError(
            f"--inputs: the run in {run} trains a model with inputs {planned.inputs!r}, not "
            f"{inputs!r}; start a new run to change what the model reads"
        )
    if resume and objective is not None and objective != planned.objective:
        raise InputError(
            f"--objective: the run in {run} trains a model with objective "
            f"{planned.objective!r}, not {objective!r}; start a new run to change it"
        )
    if not resume and first_process and run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise InputError(
            f"--out: {run} already exists and is not empty (use --resume to continue it)"
        )
    fit_time = not resume and max_steps is None and max_time is not None
    # A schedule fitted to the time is re-fitted on the way, to the pace the run really makes.
    refit_keep = file_keys if fit_time and "max_steps" not in file_keys else None
    if fit_time and "max_steps" not in file_keys and not first_process:
        # Ranks started by rank 0 take the schedule it measured and wrote (run.json).
        cfg = _fitted_by_rank_zero(run, cfg)
    elif fit_time and "max_steps" not in file_keys:
        assert max_time is not None
        started = time.perf_counter()
        # About 12 s of timing, at most a tenth of a short budget.
        pace = _measure_pace(dataset, cfg, seed, accelerator, min(12.0, max(1.0, 6.0 * max_time)))
        left = max(max_time - (time.perf_counter() - started) / 60.0, 0.0)
        cfg = fit_schedule(cfg, steps_for_minutes(cfg, left, pace), keep=file_keys)
        fitted = {"to": "max_time", "max_time_minutes": max_time, "pace": pace.to_dict(),
                  "max_steps": cfg.max_steps}  # fmt: skip
        max_time = left
        log.info("pretrain: %.1f minutes fit %d steps at this pace", left, cfg.max_steps)
    new_run = not resume and first_process
    unreached = unreached_mask_stages(cfg)
    if new_run and unreached:
        stages = ", ".join(f"{rate:g} from step {step}" for rate, step in unreached)
        log.warning(
            "pretrain: %s: mask-rate stage(s) %s start at or after the run's %d steps and never "
            "run (mask_rate_steps set in a --config file are kept as given; leave them out to "
            "have them fitted to the run)",
            source, stages, cfg.max_steps,
        )  # fmt: skip
    # Other ranks of a distributed run start after (or beside) rank 0, which owns the directory.
    if new_run:
        try:
            # The run directory appears with its run.json: a kill at any moment leaves either no
            # run (start it again) or one that --resume continues.
            with atomic_output_dir(run) as tmp:
                write_json(tmp / RUN_FILE, _run_record(dataset, cfg, seed, fitted))
        except OSError as exc:
            raise InputError(
                f"--out {run}: cannot create the run directory ({exc.strerror})"
            ) from None
    try:
        return train(
            dataset,
            run,
            cfg,
            seed=seed,
            checkpoint=checkpoint,
            max_time=max_time,
            refit_keep=refit_keep,
            trainer_options={
                "devices": _parse_devices(devices),
                "num_nodes": num_nodes,
                "strategy": strategy,
                "accelerator": accelerator,
            },
        )
    except InputError:
        # Bad input found once training was set up: a new run leaves no directory behind (an
        # interrupted run keeps its checkpoints for --resume; only input errors land here).
        if new_run:
            shutil.rmtree(run, ignore_errors=True)
        raise


def train(
    dataset: PreparedDataset,
    run: Path,
    config: PretrainConfig,
    *,
    seed: int,
    checkpoint: Path | None = None,
    max_time: float | None = None,
    refit_keep: frozenset[str] | None = None,
    trainer_options: dict[str, Any] | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train in ``run`` (which holds ``run.json``) and write the model, metrics and manifest.

    Parameters
    ----------
    dataset : the opened dataset.
    run : run directory.
    config : resolved options.
    seed : run seed.
    checkpoint : Lightning checkpoint to resume from, or None.
    max_time : wall-clock minutes of this invocation, or None.
    refit_keep : re-fit the schedule to the time left at ``REFIT_AT`` of the steps
        (``_ScheduleRefit``), keeping these keys; None (default) leaves the schedule as it is.
        Needs ``max_time``; off with DataLoader workers, whose copies of the mask-rate schedule
        a re-fit cannot reach.
    trainer_options : extra ``Trainer`` arguments (devices, num_nodes, strategy, accelerator).
    callbacks : extra Lightning callbacks.
    """
    from tracklm.runtime import configure_torch

    configure_torch()
    options: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",
        "num_nodes": 1,
        **(trainer_options or {}),
    }
    model_config, module, data = _build_module_and_data(dataset, config, seed)
    stops = _StopCallbacks.build(config, max_time)
    extra = list(callbacks or [])
    if refit_keep is not None and stops.timer is not None:
        if config.num_workers == 0:
            extra.append(_ScheduleRefit(run, stops.timer, refit_keep))
        else:
            log.info("pretrain: no schedule re-fit with %d DataLoader workers", config.num_workers)
    trainer = _build_trainer(run, config, options, [*stops.callbacks(run, config), *extra])
    started = time.perf_counter()
    # Our checkpoints hold tensors and plain data only: load them without unpickling code.
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    wall_seconds = time.perf_counter() - started
    config = module.config  # as re-fitted on the way, if it was
    trainer.save_checkpoint(run / CHECKPOINT_DIR / LAST_CHECKPOINT, weights_only=False)
    val_metrics = _final_validation(trainer, module, data)
    if not trainer.is_global_zero:
        return run
    metrics = _run_metrics(trainer, module, config, stops, val_metrics, wall_seconds)
    _write_outputs(run, dataset, config, model_config, module, metrics, seed)
    log.info(
        "pretrain: %d steps, val %s, model in %s", trainer.global_step, val_metrics, run / MODEL_DIR
    )
    return run


def _build_module_and_data(
    dataset: PreparedDataset, config: PretrainConfig, seed: int
) -> tuple[TrackingBertConfig, PretrainModule, PretrainData]:
    """The model (initialised under ``seed``), its training module and the data module."""
    width = input_width(dataset.split("train").max_length, config.pairing)
    model_config = _model_config(config, vocab_size=len(dataset.vocab), width=width)
    pl.seed_everything(seed, verbose=False)
    model = TrackingBert(model_config)
    if model_config.reads_geometry:
        model.set_module_geometry(module_geometry_table(dataset.frames()))
    module = PretrainModule(model, config, seed)
    data = PretrainData(
        dataset.path,
        dataset.vocab,
        config,
        seed,
        hits=model_config.reads_hits,
        next_module=model_config.causal,
    )
    return model_config, module, data


@dataclass
class _StopCallbacks:
    """The callbacks that may end a run early: ``--max-time`` and early stopping (None when off)."""

    timer: Timer | None
    stopper: EarlyStopping | None

    @classmethod
    def build(cls, config: PretrainConfig, max_time: float | None) -> _StopCallbacks:
        timer = None
        if max_time is not None:
            timer = _InvocationTimer(
                duration=_dt.timedelta(minutes=max_time), interval="step", verbose=False
            )
        stopper = None
        if config.early_stopping_patience is not None:
            stopper = EarlyStopping(
                monitor="val/loss", mode="min", patience=config.early_stopping_patience,
                check_on_train_epoch_end=False, strict=False,
            )  # fmt: skip
        return cls(timer=timer, stopper=stopper)

    def callbacks(self, run: Path, config: PretrainConfig) -> list[Callback]:
        """Checkpointing, then the timer and the early stopper where present."""
        checkpointing = ModelCheckpoint(
            dirpath=run / CHECKPOINT_DIR,
            every_n_train_steps=config.checkpoint_every,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
        return [checkpointing, *(c for c in (self.timer, self.stopper) if c is not None)]

    def stopped_by(self, trainer: pl.Trainer, config: PretrainConfig) -> str:
        """Why training ended: ``max_steps``, ``early_stopping``, ``max_time`` or ``interrupted``."""
        if trainer.global_step >= config.max_steps:
            return "max_steps"
        if self.stopper is not None and self.stopper.wait_count >= self.stopper.patience:
            return "early_stopping"
        if self.timer is not None and (self.timer.time_remaining() or 0.0) <= 0:
            return "max_time"
        return "interrupted"


def _build_trainer(
    run: Path, config: PretrainConfig, options: dict[str, Any], callbacks: list[Callback]
) -> pl.Trainer:
    """The Lightning ``Trainer`` of the run: step-based validation, clipping, CSV/TensorBoard logs."""
    try:
        return _trainer(run, config, options, callbacks)
    except (ValueError, TypeError, MisconfigurationException) as exc:
        settings = ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in options.items())
        raise InputError(f"{settings}: Lightning refused them ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trainer(
    run: Path, config: PretrainConfig, options: dict[str, Any], callbacks: list[Callback]
) -> pl.Trainer:
    return pl.Trainer(
        **options,
        precision=_precision(config.precision, options["accelerator"]),
        max_steps=config.max_steps,
        max_epochs=-1,
        val_check_interval=config.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        gradient_clip_val=config.gradient_clip,
        callbacks=callbacks,
        logger=_loggers(run),
        log_every_n_steps=max(1, min(50, config.val_every // 5)),
        use_distributed_sampler=False,
        default_root_dir=run,
        plugins=[AtomicCheckpointIO()],
    )


def _final_validation(
    trainer: pl.Trainer, module: PretrainModule, data: PretrainData
) -> dict[str, float]:
    """Validation metrics of the final weights (``loss``, ``masked_accuracy``, ...); {} without val."""
    if data.n_val_batches == 0:
        return {}
    results = trainer.validate(module, datamodule=data, verbose=False)
    return {
        key.removeprefix("val/"): float(value)
        for key, value in results[0].items()
        if key.startswith("val/")
    }


def _run_metrics(
    trainer: pl.Trainer,
    module: PretrainModule,
    config: PretrainConfig,
    stops: _StopCallbacks,
    val_metrics: dict[str, float],
    wall_seconds: float,
) -> dict[str, Any]:
    """The content of ``RUN/metrics.json``: steps, why training stopped, validation, throughput."""
    world = trainer.world_size
    return {
        "step": trainer.global_step,
        "stopped_by": stops.stopped_by(trainer, config),
        "val": val_metrics,
        "train": {
            "pairs_seen": trainer.global_step * config.batch_size * world,
            "pairs_per_second": module.pairs_per_second * world,
            "wall_seconds": wall_seconds,
            "devices": world,
            "precision": str(trainer.precision),
        },
    }


def _write_outputs(
    run: Path,
    dataset: PreparedDataset,
    config: PretrainConfig,
    model_config: TrackingBertConfig,
    module: PretrainModule,
    metrics: dict[str, Any],
    seed: int,
) -> None:
    """Write ``RUN/model/`` (atomically, with its card), ``metrics.json`` and the manifest, in that order."""
    card = {
        "data": str(dataset.path),
        "selection": dataset.manifest.get("selection"),
        "order": dataset.manifest.get("order"),
        "steps": metrics["step"],
        "pairs_seen": metrics["train"]["pairs_seen"],
        "pairing": config.pairing,
        "pair_task": config.pair_task,
        "validation": metrics["val"],
    }
    with atomic_output_dir(run / MODEL_DIR, overwrite=True) as tmp:
        module.model.to("cpu")
        module.model.save_pretrained(tmp, dataset.vocab, card=card)
    write_json(run / "metrics.json", metrics)
    write_manifest(
        run,
        "pretrain",
        inputs={
            "data": str(dataset.path),
            # Where evaluate finds the training data again from another directory.
            "data_absolute": str(dataset.path.resolve()),
            "data_manifest_created": dataset.manifest.get("created"),
        },
        vocab_sha256=dataset.vocab.sha256,
        seed=seed,
        config=config.to_dict(),
        model=model_config.to_dict(),
        metrics=metrics,
    )


class _ScheduleRefit(Callback):
    """Re-fits a ``--max-time`` run's schedule to the pace it really makes (``refit_schedule``).

    At ``REFIT_AT`` of its (latest) fitted steps the run's recent pace (wall time over the steps
    made since the first step or the previous re-fit point, validations and checkpoints
    included) and the time its timer has left give a new last step (``refit_steps``; rank 0
    decides for every rank). Unless it moves by less than ``REFIT_MIN_CHANGE``, the trainer's
    step limit, the learning-rate schedule, the mask-rate stages and the sampler follow it, a
    checkpoint is saved, and ``run.json`` records the new config (what ``--resume`` rebuilds)
    and the re-fit under ``schedule_fitted.refits``.
    """

    def __init__(self, run: Path, timer: Timer, keep: frozenset[str]) -> None:
        self.run = run
        self.timer = timer
        self.keep = keep
        self.done = 0
        self.clock: tuple[int, float] | None = None  # (step, time) at the end of the first step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        assert isinstance(pl_module, PretrainModule)
        config, step = pl_module.config, trainer.global_step
        if self.clock is None:
            # Paced from the end of the first step: its start-up is not the run's pace.
            self.clock = (step, time.perf_counter())
            return
        if self.done >= len(REFIT_AT):
            return
        if step < max(self.clock[0] + 1, round(REFIT_AT[self.done] * config.max_steps)):
            return
        self.done += 1
        now = time.perf_counter()
        seconds, made = now - self.clock[1], step - self.clock[0]
        # The next re-fit paces the steps made after this one: a slow spell that has passed
        # does not size the rest of the run twice.
        self.clock = (step, now)
        target = refit_steps(step, made, seconds, self.timer.time_remaining() or 0.0)
        target = int(trainer.strategy.broadcast(target, src=0))
        if abs(target - config.max_steps) < REFIT_MIN_CHANGE * config.max_steps:
            log.info("pretrain: step %d keeps its schedule of %d steps", step, config.max_steps)
            return
        refitted = refit_schedule(config, step, target, keep=self.keep)
        self._apply(trainer, pl_module, refitted)
        log.info(
            "pretrain: step %d at %.4f s per step: schedule re-fitted from %d to %d steps",
            step, seconds / made, config.max_steps, target,
        )  # fmt: skip
        # A checkpoint at the re-fit, then the new schedule in run.json: --resume never runs
        # steps made under the old schedule again under the new one (a kill between the two
        # resumes on the old schedule, as if the re-fit had not happened).
        trainer.save_checkpoint(self.run / CHECKPOINT_DIR / LAST_CHECKPOINT, weights_only=False)
        if trainer.is_global_zero:
            record = json.loads((self.run / RUN_FILE).read_text())
            record["config"] = refitted.to_dict()
            record.setdefault("schedule_fitted", {}).setdefault("refits", []).append(
                {"step": step, "seconds_per_step": seconds / made, "max_steps": target}
            )
            write_json(self.run / RUN_FILE, record)

    @staticmethod
    def _apply(trainer: pl.Trainer, module: PretrainModule, config: PretrainConfig) -> None:
        trainer.fit_loop.epoch_loop.max_steps = config.max_steps
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
        factor = warmup_linear_decay(config.warmup_steps, config.max_steps, config.decay_start)
        groups = scheduler.optimizer.param_groups
        scheduler.lr_lambdas = [factor] * len(groups)
        # The rate of the next step, as a run resumed from here computes it.
        for group, base in zip(groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports
        module.config = config
        module.schedule = config.mask_schedule
        data = getattr(trainer, "datamodule", None)  # set by fit(), unknown to the stubs
        assert isinstance(data, PretrainData)
        data.config = config
        assert data.train_batches is not None and data.train_sampler is not None
        data.train_batches.mask_schedule = config.mask_schedule
        data.train_sampler.total_steps = config.max_steps


class _InvocationTimer(Timer):
    """``Timer`` that limits this invocation: a resumed run gets its full ``--max-time`` again."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def _model_config(config: PretrainConfig, *, vocab_size: int, width: int) -> TrackingBertConfig:
    overrides = dict(config.model_overrides)
    overrides["vocab_size"] = vocab_size
    overrides["max_length"] = max(width, int(overrides.get("max_length", width)))
    return TrackingBertConfig.preset(config.model, **overrides)


def _run_record(
    dataset: PreparedDataset,
    config: PretrainConfig,
    seed: int,
    fitted: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record = {
        "data": str(dataset.path),
        "vocab_sha256": dataset.vocab.sha256,
        "seed": seed,
        "config": config.to_dict(),
    }
    if fitted is not None:
        record["schedule_fitted"] = fitted  # how --max-steps/--max-time sized the schedule
    return record


def _fitted_by_rank_zero(run: Path, config: PretrainConfig) -> PretrainConfig:
    """The config rank 0 fitted to ``--max-time`` (its ``run.json``), or ``config`` without one."""
    try:
        record = json.loads((run / RUN_FILE).read_text())
        return config_lib.from_dict(PretrainConfig, record["config"], where=str(run / RUN_FILE))
    except (OSError, ValueError, KeyError):
        return config


def _measure_pace(
    dataset: PreparedDataset, config: PretrainConfig, seed: int, accelerator: str, seconds: float
) -> Pace:
    """This machine's seconds per training step for the run about to start (``measure_pace``),
    on the model and training batches the run builds (``_build_module_and_data``)."""
    from tracklm.runtime import configure_torch

    configure_torch()
    _, module, data = _build_module_and_data(dataset, config, seed)
    data.setup("fit")  # refuses a batch larger than the training split, as training does
    assert data.train_batches is not None
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    return measure_pace(module.model, data.train_batches, config, device=device, seconds=seconds)


def _resumed_settings(
    run: Path,
    dataset: PreparedDataset,
    config_path: str | os.PathLike[str] | None,
    overrides: dict[str, Any],
) -> tuple[PretrainConfig, int]:
    record_path = run / RUN_FILE
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"--resume: {record_path} not found (not a tracklm pretrain run)"
        ) from None
    except (OSError, ValueError):  # ValueError: bad JSON, or bytes that are not UTF-8
        raise InputError(f"{record_path}: not valid JSON") from None
    if not isinstance(record, dict):
        raise InputError(f"{record_path}: expected a JSON object")
    if record.get("vocab_sha256") != dataset.vocab.sha256:
        raise InputError(
            f"{dataset.path / 'vocab.json'}: vocabulary sha256 {dataset.vocab.sha256[:12]} differs from "
            f"the run's {str(record.get('vocab_sha256'))[:12]} ({record_path}); resume with the run's dataset"
        )
    cfg = config_lib.from_dict(PretrainConfig, record.get("config", {}), where=str(record_path))
    return apply_overrides(cfg, config_path, overrides), int(record.get("seed", 0))


def _process_rank() -> int:
    """Global rank of this process as launchers announce it (0 outside distributed launches)."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    # Lightning's own launcher starts the other local ranks with LOCAL_RANK (and NODE_RANK).
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


def _parse_devices(devices: str | int) -> str | int:
    text = str(devices).strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _precision(precision: str, accelerator: str) -> Any:
    """Lightning's precision name (``auto``: bf16-mixed on CUDA, 32-true elsewhere); Lightning
    itself checks a name given in the config."""
    if precision != "auto":
        return precision
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if cuda else "32-true"


def _loggers(run: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=run, name="logs")]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return loggers
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers.append(TensorBoardLogger(save_dir=run / "logs", name="tensorboard"))
    return loggers
