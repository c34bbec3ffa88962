"""Ready-made training batches from a memory-mapped split: pairs, encoding and masking in numpy.

Each batch is a pure function of ``(seed, step)``: the step fixes the data epoch (whose pairs are
drawn from ``(seed, epoch)``), the batch's slice of that epoch's pairs, the mask rate and the
masking generator. Resuming at step ``s`` therefore reproduces the data an uninterrupted run
would have seen, and in distributed runs every rank takes a disjoint slice of each epoch's pairs.

A ``DataLoader`` with ``batch_size=None`` over ``PairBatches`` (indexed by step, see
``StepSampler``) lets worker processes build batches while the model trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tracklm.data.masking import IGNORE_INDEX, MaskSchedule, mask_modules
from tracklm.data.pairs import Pairs, draw_pairs, epoch_rng
from tracklm.data.sequences import encode_pairs, hide_hits, next_module_targets, place_hits
from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import load_split

_MASK_STREAM = 1  # generator stream of the masks (stream 0 draws the pairs)


def input_width(max_length: int, pairing: str) -> int:
    """Model input width for tracks of up to ``max_length`` hits: ``2L + 3`` for pairs, ``L + 2`` single."""
    return max_length + 2 if pairing == "single" else 2 * max_length + 3


def pairs_per_epoch(event_id: np.ndarray, pairing: str) -> int:
    """Number of pairs ``draw_pairs`` gives per epoch (tracks alone in their event cannot pair)."""
    n = int(np.asarray(event_id).shape[0])
    if pairing == "single":
        return n
    if pairing == "any":
        return n if n >= 2 else 0
    # hash counting (memory per event), not np.unique (a sorted copy of every track's id)
    counts = pd.Series(np.asarray(event_id), copy=False).value_counts(sort=False).to_numpy()
    return int(counts[counts >= 2].sum())


class PairBatches(Dataset):
    """Batches of masked track pairs of one split, indexed by optimiser step.

    Parameters
    ----------
    split_dir : split directory (``DATA/train``); opened memory-mapped in each process.
    vocab : the dataset vocabulary.
    batch_size : pairs per batch (per rank).
    seed : run seed.
    pairing, pair_task : see ``tracklm.data.pairs.draw_pairs``.
    mask_schedule : mask rate as a function of the step.
    rank, world_size : this process's rank and the number of ranks; ranks get disjoint batches.
    hits : also give the hit positions (for a model with ``inputs: hits``).
    next_module : targets of the ``next-module`` objective instead of masking: nothing is
        masked, every real position but the last is labelled with the next token, and every hit
        position is visible (``sequences.next_module_targets``).
    clean_fraction : the first ``round(clean_fraction * batch_size)`` pairs of every batch are
        left unmasked (no module label; they train the pair task on clean pairs, as the
        evaluation asks it).
    hidden_masks : every labelled module becomes ``[MASK]`` (``masking.mask_modules``'s
        ``hidden``): validation, where BERT's 10% kept tokens would show the answer.

    Notes
    -----
    ``dataset[step]`` is a dict of tensors: ``input_ids``, ``token_type_ids`` (B, W) int64,
    ``attention_mask`` (B, W) bool, ``labels`` (B, W) int64 (-100 = no label), ``pair_labels``
    (B,) float32 when there is a pair task, ``pair_pt`` (B, 2) float32, the pT in GeV of tracks A
    and B, with the ``pt`` pair task, and ``step`` (a 0-d int64 tensor). With ``hits``,
    also ``hits`` (B, W, 3) float32, the positions in mm of the visible hits (NaN at every
    labelled position, and wherever there is no hit), and ``hit_labels`` (B, W, 3), the true
    positions at the labelled positions (NaN elsewhere).
    """

    def __init__(
        self,
        split_dir: str | os.PathLike[str],
        vocab: ModuleVocab,
        *,
        batch_size: int,
        seed: int,
        pairing: str,
        pair_task: str,
        mask_schedule: MaskSchedule,
        rank: int = 0,
        world_size: int = 1,
        hits: bool = False,
        next_module: bool = False,
        clean_fraction: float = 0.0,
        hidden_masks: bool = False,
    ) -> None:
        self.split_dir = Path(split_dir)
        self.hidden_masks = hidden_masks
        self.clean_rows = round(clean_fraction * batch_size)
        self.hits = hits
        self.next_module = next_module
        self.vocab = vocab
        self.batch_size = batch_size
        self.seed = seed
        self.pairing = pairing
        self.pair_task = pair_task
        self.mask_schedule = mask_schedule
        self.rank = rank
        self.world_size = world_size
        split = load_split(self.split_dir)
        # Per-track scalars are small: keep them in memory; tokens stay memory-mapped.
        self.event_id = np.asarray(split.event_id)
        self.pt = np.asarray(split.pt)
        self.max_length = split.max_length
        self.width = input_width(self.max_length, pairing)
        self.n_pairs = pairs_per_epoch(self.event_id, pairing)
        self.batches_per_epoch = self.n_pairs // (batch_size * world_size)
        self._tokens: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._hits: np.ndarray | None = None
        self._pairs: Pairs | None = None
        self._pairs_epoch = -1

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes reopen the memory maps instead of receiving a copy of the data.
        state = dict(self.__dict__)
        state.update(_tokens=None, _lengths=None, _hits=None, _pairs=None, _pairs_epoch=-1)
        return state

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tokens is None or self._lengths is None:
            split = load_split(self.split_dir)
            self._tokens, self._lengths, self._hits = split.tokens, split.lengths, split.hits
        return self._tokens, self._lengths

    def pairs(self, epoch: int) -> Pairs:
        """All pairs of data epoch ``epoch`` (cached for the current epoch)."""
        if self._pairs is None or self._pairs_epoch != epoch:
            self._pairs = draw_pairs(
                self.event_id,
                self.pt,
                seed=self.seed,
                epoch=epoch,
                pairing=self.pairing,
                pair_task=self.pair_task,
            )
            self._pairs_epoch = epoch
        return self._pairs

    def batch_pairs(self, step: int) -> Pairs:
        """The pairs of this rank's batch at ``step``."""
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{self.split_dir}: {self.n_pairs} pairs cannot fill one batch per rank"
            )
        epoch, index = divmod(int(step), self.batches_per_epoch)
        first = (index * self.world_size + self.rank) * self.batch_size
        return self.pairs(epoch).take(slice(first, first + self.batch_size))

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        step = int(step)
        pairs = self.batch_pairs(step)
        tokens, lengths = self._arrays()
        tokens_a, lengths_a = tokens[pairs.index_a], lengths[pairs.index_a]
        if pairs.index_b is None:
            tokens_b = lengths_b = None
        else:
            tokens_b, lengths_b = tokens[pairs.index_b], lengths[pairs.index_b]
        encoded = encode_pairs(tokens_a, lengths_a, tokens_b, lengths_b, self.vocab, self.width)
        placed = None
        if self.hits:
            assert self._hits is not None
            hits_b = None if pairs.index_b is None else self._hits[pairs.index_b]
            placed = place_hits(encoded, self._hits[pairs.index_a], lengths_a, hits_b, lengths_b)
        if self.next_module:
            input_ids = encoded.input_ids
            labels, targets = next_module_targets(encoded, placed)
            visible = placed
        else:
            epoch, index = divmod(step, self.batches_per_epoch)
            rng = epoch_rng(self.seed, epoch, _MASK_STREAM + index * self.world_size + self.rank)
            masked = mask_modules(
                encoded.input_ids,
                encoded.token_type_ids,
                self.vocab,
                self.mask_schedule.rate_at(step),
                rng,
                hidden=self.hidden_masks,
            )
            input_ids, labels = masked.input_ids, masked.labels
            if self.clean_rows:
                clean = slice(0, self.clean_rows)
                input_ids[clean], labels[clean] = encoded.input_ids[clean], IGNORE_INDEX
            visible, targets = hide_hits(placed, labels) if placed is not None else (None, None)
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(encoded.token_type_ids),
            "attention_mask": torch.from_numpy(encoded.attention_mask),
            "labels": torch.from_numpy(labels),
            "step": torch.tensor(step, dtype=torch.int64),
        }
        if pairs.labels is not None:
            batch["pair_labels"] = torch.from_numpy(pairs.labels)
        if self.pair_task == "pt" and pairs.index_b is not None:
            pt = np.stack([self.pt[pairs.index_a], self.pt[pairs.index_b]], axis=1)
            batch["pair_pt"] = torch.from_numpy(pt.astype(np.float32))
        if visible is not None and targets is not None:
            batch["hits"] = torch.from_numpy(visible)
            batch["hit_labels"] = torch.from_numpy(targets)
        return batch


class StepSampler(Sampler[int]):
    """Yields optimiser steps ``first_step() ... total_steps - 1``: the keys of ``PairBatches``.

    Its length is always ``total_steps``; a resumed run starts at the step it reached, so the
    trainer sees the remaining steps of the same sequence.

    Parameters
    ----------
    total_steps : last step (exclusive).
    first_step : called when iteration starts; returns the step to start from (0 for a new run).
    """

    def __init__(self, total_steps: int, first_step: Callable[[], int] | None = None) -> None:
        self.total_steps = total_steps
        self.first_step = first_step

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self) -> Iterator[int]:
        start = self.first_step() if self.first_step is not None else 0
        return iter(range(start, self.total_steps))


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position is the trainer's step (so it resumes mid-epoch exactly).

    The position is not stored: ``StepSampler`` restarts from the restored step. Declaring the
    (empty) state tells Lightning that mid-epoch checkpoints resume correctly.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"position": "global_step"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def step_loader(
    batches: PairBatches,
    sampler: Sampler[int] | Iterable[int],
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> ResumableDataLoader:
    """DataLoader of ready batches (``batch_size=None``): workers build whole batches."""
    return ResumableDataLoader(
        batches,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
