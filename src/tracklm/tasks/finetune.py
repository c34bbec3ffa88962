"""``tracklm finetune``: train a downstream task head on a pre-trained TrackingBERT, and score it.

Transfer modes (``--mode``):

* ``finetune``: the pre-trained encoder and a new head are trained together (the encoder at a
  smaller learning rate).
* ``frozen``: the pre-trained encoder is fixed (weights and dropout), only the head is trained.
* ``scratch``: the same architecture, randomly initialised (seeded), trained with the head: what
  the data alone teach, the reference for what pre-training is worth.

Training is a small Lightning loop (AdamW with BERT's weight-decay exclusions, linear warm-up
then linear decay: ``tracklm/train/optim.py``, as in pre-training) on examples made from
the ``train`` split, validated on ``val``; the result is scored on ``test`` beside the task's
classical baseline and its zero-shot use of the pre-trained masked-module head. Output::

    RUN2/metrics.json   {"task", "mode", "train_size", "metrics", "baseline", "baselines",
                         "zero_shot", ...}
    RUN2/model/         encoder (save_pretrained) + head.safetensors + head.json
    RUN2/manifest.json
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from tracklm import config as config_lib
from tracklm._fs import atomic_output_dir, atomic_output_file, write_json
from tracklm.errors import InputError
from tracklm.evaluate.metrics import json_ready
from tracklm.io.dataset import PreparedDataset, open_dataset
from tracklm.manifest import write_manifest
from tracklm.models.bert import TrackingBert
from tracklm.models.inputs import check_hits_present
from tracklm.tasks import candidates, extrapolate, holes, outliers, pt
from tracklm.tasks.common import Examples, TaskContext, TaskSpec
from tracklm.tasks.config import FinetuneConfig, load_finetune_config
from tracklm.train.optim import build_optimizer, parameter_groups

logger = logging.getLogger(__name__)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (holes.SPEC, outliers.SPEC, extrapolate.SPEC, pt.SPEC, candidates.SPEC)
}
TRACK_TASKS = ("holes", "outliers", "extrapolate", "pt")
"""The tasks whose examples come from a prepared dataset's tracks (``candidates`` reads events)."""
MODES = ("finetune", "frozen", "scratch")
ADAM_BETAS = (0.9, 0.999)  # torch's AdamW defaults
HEAD_WEIGHTS_FILE = "head.safetensors"
HEAD_FILE = "head.json"
REFERENCE_KEYS = ("baseline", "baselines", "zero_shot")


# ----------------------------------------------------------------------------- encoder per mode
def load_encoder(model: str | os.PathLike[str], mode: str, seed: int) -> TrackingBert:
    """The encoder a transfer mode starts from: pre-trained, or the same architecture at random
    (with the pre-trained model's module geometry, which is data, not learned).

    Parameters
    ----------
    model : pre-trained model directory.
    mode : ``finetune``, ``frozen`` or ``scratch``.
    seed : seeds the random initialisation in ``scratch`` mode.
    """
    if mode not in MODES:
        raise InputError(f"--mode: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    pretrained = TrackingBert.from_pretrained(model)
    if mode != "scratch":
        return pretrained
    torch.manual_seed(seed)
    fresh = TrackingBert(pretrained.config)
    fresh.vocab = pretrained.vocab
    if pretrained.module_inputs is not None:
        fresh.set_module_geometry(pretrained.module_inputs.module_geometry)
    return fresh


def freeze(encoder: TrackingBert) -> None:
    """Fix the encoder: no gradients, and eval mode (no dropout)."""
    encoder.requires_grad_(False)
    encoder.eval()


# ----------------------------------------------------------------------------- examples
def sample_tracks(dataset: PreparedDataset, split: str, n: int | None, rng: np.random.Generator):
    """At most ``n`` tracks of ``split``, drawn without replacement (all, in order, if n is None)."""
    tracks = dataset.split(split)
    total = len(tracks)
    if n is None or n >= total:
        return tracks.take(slice(None))
    return tracks.take(np.sort(rng.choice(total, size=n, replace=False)))


def trim_inputs(examples: Examples) -> Examples:
    """Drop input columns that are padding in every row (the model's width limit is then honest)."""
    used = examples.inputs["attention_mask"].any(axis=0)
    width = int(np.flatnonzero(used)[-1]) + 1 if used.any() else 1
    examples.inputs = {k: np.ascontiguousarray(v[:, :width]) for k, v in examples.inputs.items()}
    return examples


def check_width(examples: Examples, max_length: int, task: str, split: str) -> None:
    """Refuse examples wider than the model's ``max_length`` input positions."""
    width = examples.inputs["input_ids"].shape[1]
    if width > max_length:
        raise InputError(
            f"--data: {split} tracks need {width} input positions for task {task}, "
            f"but the model knows only {max_length} (max_length)"
        )


class _ExampleBatches(Dataset):
    """Index with a list of rows -> one batch dict of tensors (used with a BatchSampler)."""

    def __init__(self, examples: Examples) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, rows: list[int]) -> dict[str, Tensor]:
        return self.examples.batch(np.asarray(rows))


def example_loader(examples: Examples, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    data = _ExampleBatches(examples)
    if shuffle:
        sampler: Any = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(data)
    return DataLoader(
        data, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None
    )


# ----------------------------------------------------------------------------- training
class FinetuneModule(pl.LightningModule):
    """Encoder + task head trained on one task's loss (see the module docstring for the modes)."""

    def __init__(
        self,
        spec: TaskSpec,
        encoder: TrackingBert,
        head: nn.Module,
        mode: str,
        config: FinetuneConfig,
        total_steps: int,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.head = head
        self.mode = mode
        self.settings = config
        self.total_steps = max(total_steps, 1)
        self.val_history: list[dict[str, float]] = []
        # from_pretrained returns eval mode and Lightning keeps the modes it is given.
        encoder.train()
        head.train()
        if mode == "frozen":
            freeze(encoder)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        return self.spec.loss(self.spec.forward(self.encoder, self.head, batch), batch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.mode == "frozen":
            self.encoder.eval()  # Lightning switches the whole module to train mode
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), batch_size=len(batch["input_ids"]))

    def on_validation_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("val_loss")
        if value is not None:
            self.val_history.append({"step": int(self.global_step), "val_loss": float(value)})

    def configure_optimizers(self) -> Any:
        s = self.settings
        encoder_lr = s.encoder_learning_rate if self.mode == "finetune" else s.learning_rate
        groups = parameter_groups(self.head, s.weight_decay, lr=s.learning_rate)
        groups += parameter_groups(self.encoder, s.weight_decay, lr=encoder_lr)  # none if frozen
        optimizer, scheduler = build_optimizer(
            self,
            lr=s.learning_rate,
            weight_decay=s.weight_decay,
            betas=ADAM_BETAS,
            warmup_steps=s.warmup_steps,
            total_steps=self.total_steps,
            groups=groups,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


@torch.no_grad()
def predict_examples(
    spec: TaskSpec, encoder: TrackingBert, head: nn.Module, examples: Examples, batch_size: int
) -> dict[str, np.ndarray]:
    """The task predictions of a trained encoder + head on every example (numpy, concatenated)."""
    encoder.eval()
    head.eval()
    device = next(encoder.parameters()).device
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(examples), batch_size):
        batch = examples.batch(slice(start, start + batch_size), device)
        parts.append(spec.predict(spec.forward(encoder, head, batch)))
    if not parts:
        raise InputError("--data: no test examples for this task (is the test split empty?)")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ----------------------------------------------------------------------------- saving
def save_finetuned(
    directory: Path,
    spec: TaskSpec,
    encoder: TrackingBert,
    head: nn.Module,
    mode: str,
    card: dict[str, Any],
) -> None:
    """Write the encoder (``save_pretrained``), ``head.safetensors`` and ``head.json``."""
    assert encoder.vocab is not None
    encoder.save_pretrained(directory, encoder.vocab, card=card)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_output_file(directory / HEAD_WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"task": spec.name})
    write_json(
        directory / HEAD_FILE,
        {
            "task": spec.name,
            "head": type(head).__name__,
            "mode": mode,
            "hidden_size": encoder.config.hidden_size,
            "vocab_size": encoder.config.vocab_size,
            "vocab_sha256": encoder.vocab.sha256,
            "note": "module decoders use the encoder's token embedding table (not stored in the head)",
        },
    )


def load_finetuned(directory: str | os.PathLike[str]) -> tuple[TaskSpec, TrackingBert, nn.Module]:
    """Rebuild (task, encoder, head) from a ``RUN2/model`` directory written by ``tracklm finetune``."""
    directory = Path(directory)
    path = directory / HEAD_FILE
    try:
        description = json.loads(path.read_text())
        spec = TASKS[description["task"]]
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a fine-tuned model directory?)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a tracklm task head description ({exc})") from None
    encoder = TrackingBert.from_pretrained(directory)
    head = spec.make_head(encoder)
    head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS_FILE)))
    return spec, encoder, head.eval()


# ----------------------------------------------------------------------------- the command
def run_finetune(
    task: str,
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mode: str = "finetune",
    train_size: int | None = None,
    max_steps: int | None = None,
    max_time: float | None = None,
    seed: int = 0,
    config: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``tracklm finetune``: read the options (``--config FILE`` over the defaults), then ``finetune``.

    Parameters
    ----------
    task, model, data, out, mode, train_size, max_steps, max_time, seed : see ``finetune``.
    config : YAML file of ``FinetuneConfig`` keys, or None for the defaults.

    Returns
    -------
    The content of ``metrics.json``.
    """
    settings = load_finetune_config(config)
    return finetune(
        task, model, data, out, settings, mode=mode, train_size=train_size, max_steps=max_steps,
        max_time=max_time, seed=seed,
    )  # fmt: skip


def finetune(
    task: str,
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: FinetuneConfig | None = None,
    *,
    mode: str = "finetune",
    train_size: int | None = None,
    max_steps: int | None = None,
    max_time: float | None = None,
    seed: int = 0,
    references: bool = True,
) -> dict[str, Any]:
    """Fine-tune (or train from scratch, or train a head on a frozen encoder) and score one task.

    Parameters
    ----------
    task : ``holes``, ``outliers``, ``extrapolate``, ``pt`` or ``candidates``.
    model : pre-trained model directory (``RUN/model``).
    data : prepared dataset directory; its vocabulary must be the model's. For ``candidates``,
        a directory of events with truth (``tracklm.tasks.candidates.finetune_candidates``).
    out : run directory to create (atomically).
    settings : fine-tuning options (``FinetuneConfig()`` when None).
    mode : ``finetune``, ``frozen`` or ``scratch``.
    train_size : training tracks drawn (seeded) from ``train`` (all when None).
    max_steps : optimiser steps (``settings.max_steps`` when None).
    max_time : stop training after this many minutes.
    seed : seeds track sampling, example labels, initialisation and shuffling.
    references : also score the classical baselines (``baseline``, and each by name in
        ``baselines``: ``score_references``) and the zero-shot model (``null`` otherwise; the
        transfer study computes them once per task).

    Returns
    -------
    The content of ``metrics.json``.
    """
    from tracklm.runtime import configure_torch

    configure_torch()
    settings = settings or FinetuneConfig()
    spec = _check_options(task, mode, Path(out))
    if spec is candidates.SPEC:
        return candidates.finetune_candidates(
            model, data, out, settings, mode=mode, train_size=train_size, max_steps=max_steps,
            max_time=max_time, seed=seed, references=references,
        )  # fmt: skip
    steps = int(max_steps or settings.max_steps)
    encoder, dataset, context = open_inputs(model, data, mode, seed)
    examples, n_train_tracks = make_split_examples(
        spec, dataset, context, np.random.default_rng(seed), train_size, settings,
        encoder.config.max_length, data,
    )  # fmt: skip
    return train_score_and_write(
        spec, encoder, examples, context, settings, model, data, out,
        mode=mode, train_size=train_size, steps=steps, max_time=max_time, seed=seed,
        references=references, n_train_tracks=n_train_tracks,
        vocab_sha256=dataset.vocab.sha256,
    )  # fmt: skip


def train_score_and_write(
    spec: TaskSpec,
    encoder: TrackingBert,
    examples: dict[str, Examples],
    context: TaskContext,
    settings: FinetuneConfig,
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mode: str,
    train_size: int | None,
    steps: int,
    max_time: float | None,
    seed: int,
    references: bool,
    n_train_tracks: int,
    vocab_sha256: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The steps ``finetune`` shares with every task once its examples exist: a new head trained
    (``train_head``), scored on the test examples beside the references, and the run written
    (``write_finetune_run``). ``extra`` adds keys to ``metrics.json``.

    Returns
    -------
    The content of ``metrics.json``.
    """
    torch.manual_seed(seed)
    head = spec.make_head(encoder)
    training, device = train_head(
        spec, encoder, head, mode, examples, settings, steps, max_time, seed
    )
    test = examples["test"]
    predictions = predict_examples(spec, encoder, head, test, settings.eval_batch_size)
    result: dict[str, Any] = {
        "task": spec.name,
        "mode": mode,
        "train_size": train_size,
        "metrics": spec.metrics(predictions, test, context),
        **dict.fromkeys(REFERENCE_KEYS),
        "n_train_tracks": n_train_tracks,
        "n_train_examples": len(examples["train"]),
        "n_test_examples": len(test),
        **(extra or {}),
        "training": training,
        "seed": seed,
        "model": str(model),
        "data": str(data),
    }
    if references:
        result.update(
            score_references(spec, model, test, context, settings.eval_batch_size, device)
        )
    result = json_ready(result)
    _log_result(spec, mode, result)
    options = {"task": spec.name, "mode": mode, "train_size": train_size, "max_steps": steps,
               "max_time": max_time, "seed": seed}  # fmt: skip
    write_finetune_run(Path(out), spec, encoder, head, result, settings, options, vocab_sha256)
    return result


def write_finetune_run(
    out: Path,
    spec: TaskSpec,
    encoder: TrackingBert,
    head: nn.Module,
    result: dict[str, Any],
    settings: FinetuneConfig,
    options: dict[str, Any],
    vocab_sha256: str,
) -> None:
    """Write the run directory atomically: ``model/`` (encoder and head), ``metrics.json``
    (``result``) and ``manifest.json`` (the inputs, ``settings`` and the command's ``options``)."""
    with atomic_output_dir(out) as tmp:
        card = {"task": spec.name, "mode": options["mode"], "pretrained_from": result["model"],
                "train_tracks": result["n_train_tracks"], "steps": result["training"]["steps"],
                spec.headline: result["metrics"].get(spec.headline)}  # fmt: skip
        save_finetuned(tmp / "model", spec, encoder.cpu(), head.cpu(), options["mode"], card)
        write_json(tmp / "metrics.json", result)
        write_manifest(
            tmp,
            "finetune",
            inputs={"model": result["model"], "data": result["data"]},
            config=config_lib.to_dict(settings),
            **options,
            vocab_sha256=vocab_sha256,
        )


def open_inputs(
    model: str | os.PathLike[str], data: str | os.PathLike[str], mode: str, seed: int
) -> tuple[TrackingBert, PreparedDataset, TaskContext]:
    """The encoder of ``mode`` (``load_encoder``), the dataset (same vocabulary) and its context."""
    encoder = load_encoder(model, mode, seed)
    dataset = open_dataset(data)
    encoder.check_vocab(dataset.vocab, str(dataset.path / "vocab.json"))
    for split in ("train", "test"):  # a hits model needs positions where it trains and is scored
        where = str(dataset.path / split / "hits.npy")
        check_hits_present(encoder.config.reads_hits, dataset.split(split).hits, where)
    return encoder, dataset, TaskContext.from_dataset(dataset)


def _check_options(task: str, mode: str, out: Path) -> TaskSpec:
    """The task's spec, after refusing an unknown task or mode and an existing output."""
    if task not in TASKS:
        raise InputError(f"--task: unknown task {task!r} (choose from {', '.join(TASKS)})")
    if mode not in MODES:
        raise InputError(f"--mode: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: output already exists (choose another --out or remove it)")
    return TASKS[task]


def make_split_examples(
    spec: TaskSpec,
    dataset: PreparedDataset,
    context: TaskContext,
    rng: np.random.Generator,
    train_size: int | None,
    settings: FinetuneConfig,
    max_length: int,
    data: str | os.PathLike[str],
) -> tuple[dict[str, Examples], int]:
    """The task's examples of the train, val and test splits, drawn in that order from ``rng``.

    Parameters
    ----------
    spec, dataset, context : the task and the prepared dataset.
    rng : draws the tracks and the example labels.
    train_size : training tracks (all when None); val and test take ``settings.val_tracks`` and
        ``settings.eval_tracks``.
    settings : fine-tuning options.
    max_length : the model's input width limit.
    data : the dataset directory, for messages.

    Returns
    -------
    examples by split, and the number of training tracks drawn.
    """
    examples: dict[str, Examples] = {}
    n_train_tracks = 0
    for split, n in (("train", train_size), ("val", settings.val_tracks), ("test", settings.eval_tracks)):  # fmt: skip
        tracks = sample_tracks(dataset, split, n, rng)
        examples[split] = trim_inputs(spec.make_examples(tracks, context, rng))
        if split == "train":
            n_train_tracks = len(tracks)
        if len(examples[split]) == 0:
            raise InputError(f"--data {data}: no {split} tracks usable for task {spec.name}")
        check_width(examples[split], max_length, spec.name, split)
    if train_size is not None and n_train_tracks < train_size:
        logger.warning(
            "--train-size %d: only %d training tracks exist; using all", train_size, n_train_tracks
        )
    return examples, n_train_tracks


def train_head(
    spec: TaskSpec,
    encoder: TrackingBert,
    head: nn.Module,
    mode: str,
    examples: dict[str, Examples],
    settings: FinetuneConfig,
    steps: int,
    max_time: float | None,
    seed: int,
) -> tuple[dict[str, Any], torch.device]:
    """Train ``head`` (and the encoder, per ``mode``) on the train examples, validating on val.

    Returns
    -------
    The ``training`` record of ``metrics.json`` (steps, max_steps, max_time_minutes, seconds,
    val_history, final_val_loss), and the device the encoder and head were left on.
    """
    module = FinetuneModule(spec, encoder, head, mode, settings, steps)
    try:
        trainer = _trainer(settings, steps, max_time)
    except (ValueError, TypeError, MisconfigurationException) as exc:
        text = str(exc).strip().splitlines()
        raise InputError(
            f"accelerator {settings.accelerator!r} (FinetuneConfig): Lightning refused it "
            f"({text[0] if text else type(exc).__name__})"
        ) from None
    started = time.perf_counter()
    trainer.fit(
        module,
        example_loader(examples["train"], settings.batch_size, shuffle=True, seed=seed),
        example_loader(examples["val"], settings.eval_batch_size, shuffle=False, seed=seed),
    )
    train_seconds = time.perf_counter() - started
    device = trainer.strategy.root_device
    encoder.to(device)
    head.to(device)
    final_val = trainer.validate(
        module,
        example_loader(examples["val"], settings.eval_batch_size, False, seed),
        verbose=False,
    )
    record: dict[str, Any] = {
        "steps": int(trainer.global_step),
        "max_steps": steps,
        "max_time_minutes": max_time,
        "seconds": round(train_seconds, 2),
        "val_history": module.val_history,
        "final_val_loss": float(final_val[0]["val_loss"]) if final_val else None,
    }
    return record, device


def _trainer(settings: FinetuneConfig, steps: int, max_time: float | None) -> pl.Trainer:
    """The Lightning ``Trainer`` of a fine-tuning run (one device, no logger or checkpoints)."""
    return pl.Trainer(
        max_steps=steps,
        # Lightning types the minutes as int; it accepts fractions
        max_time={"minutes": max_time} if max_time is not None else None,  # type: ignore[dict-item]
        accelerator=settings.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        val_check_interval=settings.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )


def score_references(
    spec: TaskSpec,
    model: str | os.PathLike[str],
    test: Examples,
    context: TaskContext,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """The reference scores of ``metrics.json`` (``REFERENCE_KEYS``), on the test examples.

    Returns
    -------
    ``baseline``: the metrics of ``spec.baseline``; ``baselines``: the metrics of every classical
    baseline by name (``spec.baseline`` under ``spec.baseline_name``, then
    ``spec.extra_baselines``); ``zero_shot``: those of the pre-trained model used without
    training, None when the task has no zero-shot use.
    """
    methods = {spec.baseline_name: spec.baseline, **spec.extra_baselines}
    baselines = {
        name: spec.metrics(method(test, context), test, context) for name, method in methods.items()
    }
    zero_shot = None
    if spec.zero_shot is not None:
        pretrained = TrackingBert.from_pretrained(model, map_location=device)
        predictions = spec.zero_shot(pretrained, test, context, batch_size)
        zero_shot = spec.metrics(predictions, test, context)
    return {
        "baseline": baselines[spec.baseline_name],
        "baselines": baselines,
        "zero_shot": zero_shot,
    }


def _log_result(spec: TaskSpec, mode: str, result: dict[str, Any]) -> None:
    logger.info(
        "%s (%s, %s training tracks): %s = %s; baseline %s; zero-shot %s",
        spec.name,
        mode,
        result["n_train_tracks"],
        spec.headline,
        result["metrics"].get(spec.headline),
        (result["baseline"] or {}).get(spec.headline),
        (result["zero_shot"] or {}).get(spec.headline),
    )
