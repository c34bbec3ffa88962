"""Lightning pieces of pre-training: the ``LightningModule`` around ``TrackingBert`` and its data.

``PretrainModule`` trains both heads (masked modules and the pair task), logs losses, the mask
rate and throughput, and validates on the held-out ``val`` split with fixed pairs and masks
(``val/masked_accuracy``, ``val/pair_accuracy``, ``val/loss``). Validation hides every module it
asks about behind ``[MASK]`` (no BERT random or kept tokens: a kept token is a readable answer),
so its accuracy is the honest one that ``tracklm evaluate`` reports on test. ``PretrainData``
serves batches keyed by the optimiser step, sharded by rank, so resuming reproduces the data
order exactly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from tracklm.data.batches import PairBatches, StepSampler, step_loader
from tracklm.data.masking import IGNORE_INDEX
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models import TrackingBert
from tracklm.models.heads import TrackingBertOutput, in_batch_pair_loss
from tracklm.train.config import PretrainConfig
from tracklm.train.optim import build_optimizer

log = logging.getLogger(__name__)

_SEED_MODULUS = 2**31 - 1


def forward_batch(model: TrackingBert, batch: dict[str, torch.Tensor]) -> TrackingBertOutput:
    """The model on one ``PairBatches`` batch, with every label the batch holds."""
    out: TrackingBertOutput = model(
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        labels=batch["labels"],
        pair_labels=batch.get("pair_labels"),
        hits=batch.get("hits"),
        hit_labels=batch.get("hit_labels"),
    )
    return out


def step_seed(seed: int, step: int, rank: int) -> int:
    """Torch seed of one training step on one rank (dropout is then a function of the step)."""
    return (
        int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1)[0])
        % _SEED_MODULUS
    )


class PretrainModule(pl.LightningModule):
    """Masked-module + pair-task pre-training of a ``TrackingBert``.

    Parameters
    ----------
    model : the network to train.
    config : the run's options (optimiser, schedule).
    seed : run seed; dropout at step ``s`` is seeded from ``(seed, s, rank)`` so that a resumed
        run repeats an uninterrupted one.
    """

    def __init__(self, model: TrackingBert, config: PretrainConfig, seed: int) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.seed = seed
        self.schedule = config.mask_schedule
        self._val_sums: torch.Tensor | None = None
        self._last_time: float | None = None
        self._train_pairs = 0
        self._train_seconds = 0.0

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The batch of step s is batch["step"] == global_step; reading the counter avoids a device sync.
        torch.manual_seed(step_seed(self.seed, self.trainer.global_step, self.global_rank))
        if self._last_time is None:
            self._last_time = time.perf_counter()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = forward_batch(self.model, batch)
        loss = self._weighted_loss(out)
        in_batch = None
        if self.config.pair_in_batch_weight > 0:
            in_batch = self._in_batch_loss(out, batch)
            loss = loss + self.config.pair_in_batch_weight * in_batch
        step = self.trainer.global_step
        # Only on the steps the loggers write: self.log costs as much as a tiny model's forward.
        # (set on the Trainer at run time, unknown to its type stubs)
        if (step + 1) % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            assert out.loss is not None and out.mlm_loss is not None  # labels were given
            metrics = {"train/loss": out.loss.detach(), "train/mlm_loss": out.mlm_loss.detach()}
            if out.pair_loss is not None:
                metrics["train/pair_loss"] = out.pair_loss.detach()
            if out.position_loss is not None:
                metrics["train/position_loss"] = out.position_loss.detach()
            if in_batch is not None:
                metrics["train/pair_in_batch_loss"] = in_batch.detach()
            self.log_dict(metrics, batch_size=batch["input_ids"].shape[0])
            self.log("train/mask_rate", self.schedule.rate_at(step))
            self.log("lr", self._learning_rate())
        return loss

    def _weighted_loss(self, out: TrackingBertOutput) -> torch.Tensor:
        """The training loss: ``out.loss`` with the masked-module and pair losses reweighted
        (``mlm_loss_weight``, ``pair_loss_weight``)."""
        assert out.loss is not None
        c = self.config
        if c.mlm_loss_weight == 1.0 and c.pair_loss_weight == 1.0:
            return out.loss
        loss = out.loss
        if out.mlm_loss is not None:
            loss = loss + (c.mlm_loss_weight - 1.0) * out.mlm_loss
        if out.pair_loss is not None:
            loss = loss + (c.pair_loss_weight - 1.0) * out.pair_loss
        return loss

    @staticmethod
    def _in_batch_loss(out: TrackingBertOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``in_batch_pair_loss`` of the batch's tracks (A rows, then B rows, as the scores)."""
        if out.pair_scores is None or "pair_pt" not in batch:
            raise InputError(
                "pretrain config: pair_in_batch_weight needs a model with pair_head: difference "
                "(model_overrides) and pair_task: pt"
            )
        pt = batch["pair_pt"]
        return in_batch_pair_loss(out.pair_scores, torch.cat([pt[:, 0], pt[:, 1]]))

    def _learning_rate(self) -> float:
        """The learning rate in force (from the one step-wise scheduler ``configure_optimizers`` sets)."""
        scheduler = self.lr_schedulers()
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        return float(scheduler.get_last_lr()[0])

    def on_train_batch_end(
        self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_time is not None:
            # Time from one batch end to the next, so batch loading and logging are included.
            self._train_seconds += now - self._last_time
            self._train_pairs += batch["input_ids"].shape[0]
        self._last_time = now

    def on_validation_start(self) -> None:
        self._last_time = None  # validation time is not training throughput

    @property
    def pairs_per_second(self) -> float:
        """Training throughput of this rank so far (pairs per second of training wall time)."""
        return self._train_pairs / self._train_seconds if self._train_seconds > 0 else float("nan")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        betas = (float(self.config.adam_betas[0]), float(self.config.adam_betas[1]))
        optimizer, schedule = build_optimizer(
            self.model,
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            betas=betas,
            warmup_steps=self.config.warmup_steps,
            total_steps=self.config.max_steps,
            decay_start=self.config.decay_start,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        # loss sum, batches, masked correct, masked total, pair correct, pair total,
        # position loss sum, batches with a position loss
        self._val_sums = torch.zeros(8, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        labels = batch["labels"]
        pair_labels = batch.get("pair_labels")
        out = forward_batch(self.model, batch)
        assert out.loss is not None  # labels were given
        targets = labels[labels != IGNORE_INDEX]
        correct = (out.mlm_logits.argmax(dim=-1) == targets).sum()
        sums = [out.loss.detach().double(), 1.0, correct.double(), float(targets.numel()), 0.0, 0.0]
        sums += [0.0, 0.0]
        if pair_labels is not None:
            sums[4] = ((out.pair_logits > 0) == (pair_labels > 0.5)).sum().double()
            sums[5] = float(pair_labels.numel())
        if out.position_loss is not None:
            sums[6], sums[7] = out.position_loss.detach().double(), 1.0
        assert self._val_sums is not None
        self._val_sums += torch.stack(
            [torch.as_tensor(s, dtype=torch.float64, device=self.device) for s in sums]
        )

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is None:
            return
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        metrics = validation_metrics(sums.cpu().numpy())
        for name, value in metrics.items():
            self.log(
                f"val/{name}", value, prog_bar=name in ("loss", "masked_accuracy"), sync_dist=True
            )
        # The training wall time that reached this model (validations excluded): the
        # time-to-accuracy curve of a run is its CSV log.
        self.log("time/train_seconds", self._train_seconds, sync_dist=True)
        self._val_sums = None


def validation_metrics(sums: np.ndarray) -> dict[str, float]:
    """Validation numbers from summed (loss, batches, correct, masked, pair correct, pairs[,
    position loss, batches with one])."""
    loss, batches, correct, masked, pair_correct, pairs = (float(x) for x in sums[:6])
    metrics = {
        "loss": loss / max(batches, 1.0),
        "masked_accuracy": correct / max(masked, 1.0),
    }
    if pairs > 0:
        metrics["pair_accuracy"] = pair_correct / pairs
    if len(sums) > 7 and float(sums[7]) > 0:
        metrics["position_loss"] = float(sums[6]) / float(sums[7])
    return metrics


class PretrainData(pl.LightningDataModule):
    """Training and validation batches of a prepared dataset, sharded by rank.

    Parameters
    ----------
    data : dataset directory.
    vocab : its vocabulary.
    config : the run's options.
    seed : run seed (pairs and masks of step ``s`` depend only on ``seed`` and ``s``).
    hits : serve hit positions too (a model with ``inputs: hits``).
    next_module : serve the ``next-module`` objective's targets instead of masked tokens.
    """

    def __init__(
        self,
        data: Path,
        vocab: ModuleVocab,
        config: PretrainConfig,
        seed: int,
        hits: bool = False,
        next_module: bool = False,
    ) -> None:
        super().__init__()
        self.hits = hits
        self.next_module = next_module
        self.data = Path(data)
        self.vocab = vocab
        self.config = config
        self.seed = seed
        self.train_batches: PairBatches | None = None
        self.train_sampler: StepSampler | None = None
        self.val_batches: PairBatches | None = None
        self.n_val_batches = 0

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        c = self.config
        common: dict[str, Any] = {
            "pairing": c.pairing,
            "pair_task": c.pair_task,
            "rank": rank,
            "world_size": world,
            "hits": self.hits,
            "next_module": self.next_module,
        }
        self.train_batches = PairBatches(
            self.data / "train", self.vocab, batch_size=c.batch_size, seed=self.seed,
            mask_schedule=c.mask_schedule, clean_fraction=c.pair_clean_fraction, **common,
        )  # fmt: skip
        if self.train_batches.batches_per_epoch < 1:
            raise InputError(
                f"--batch-size: {c.batch_size} pairs x {world} devices exceed the "
                f"{self.train_batches.n_pairs} training pairs of {self.data / 'train'}"
            )
        val = PairBatches(
            self.data / "val", self.vocab, batch_size=c.batch_size, seed=self.seed,
            mask_schedule=c.val_mask_schedule, hidden_masks=True, **common,
        )  # fmt: skip
        if val.batches_per_epoch < 1 and val.n_pairs >= world:
            # A small validation split still validates, with smaller batches.
            val = PairBatches(
                self.data / "val", self.vocab, batch_size=val.n_pairs // world, seed=self.seed,
                mask_schedule=val.mask_schedule, hidden_masks=True, **common,
            )  # fmt: skip
        self.val_batches = val
        self.n_val_batches = min(c.val_batches, val.batches_per_epoch)
        if self.n_val_batches == 0:
            log.warning(
                "%s: too few pairs to validate; training without validation", self.data / "val"
            )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.train_batches is not None
        trainer = self.trainer
        sampler = StepSampler(
            self.config.max_steps,
            first_step=(lambda: trainer.global_step) if trainer is not None else None,
        )
        self.train_sampler = sampler  # a schedule re-fit moves its last step
        return step_loader(
            self.train_batches,
            sampler,
            num_workers=self.config.num_workers,
            pin_memory=_on_cuda(trainer),
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.val_batches is not None
        # Always the same first batches of data epoch 0: fixed pairs and masks.
        sampler = range(self.n_val_batches)
        return step_loader(
            self.val_batches,
            sampler,
            num_workers=min(self.config.num_workers, 1),
            pin_memory=_on_cuda(self.trainer),
        )


def _on_cuda(trainer: pl.Trainer | None) -> bool:
    return trainer is not None and isinstance(trainer.accelerator, pl.accelerators.CUDAAccelerator)
