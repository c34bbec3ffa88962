"""Batches: deterministic per step, disjoint across ranks, consistent with the tracks, resumable."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from tracklm.data.batches import PairBatches, StepSampler, input_width, step_loader
from tracklm.data.masking import IGNORE_INDEX, MaskSchedule
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.train.config import preset_config
from tracklm.train.module import PretrainData, PretrainModule


@pytest.fixture(scope="module")
def dataset(toy_data):
    return open_dataset(toy_data)


def batches(dataset, **kwargs) -> PairBatches:
    options = {
        "batch_size": 16, "seed": 3, "pairing": "event", "pair_task": "pt",
        "mask_schedule": MaskSchedule(rates=(0.15, 0.5), boundaries=(40,)),
    }  # fmt: skip
    options.update(kwargs)
    return PairBatches(dataset.path / "train", dataset.vocab, **options)


def test_batch_is_a_function_of_seed_and_step(dataset):
    first, again = batches(dataset), batches(dataset)
    steps_per_epoch = first.batches_per_epoch
    # every toy event holds many tracks, so every training track is track A once per epoch
    assert steps_per_epoch == first.n_pairs // 16
    assert first.n_pairs == len(dataset.split("train")) > 16
    for step in (0, 5, steps_per_epoch + 2, 45):
        a, b = first[step], again[step]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(first[1]["input_ids"], first[2]["input_ids"])
    assert not torch.equal(first[0]["input_ids"], batches(dataset, seed=4)[0]["input_ids"])
    # the next data epoch draws new pairs
    assert not np.array_equal(first.pairs(0).index_a, first.pairs(1).index_a)


def test_batch_contents_follow_the_tracks(dataset):
    data = batches(dataset)
    split = dataset.split("train")
    batch = data[3]
    pairs = data.batch_pairs(3)
    width = input_width(split.max_length, "event")
    assert batch["input_ids"].shape == (16, width) and batch["input_ids"].dtype == torch.int64
    assert (
        batch["attention_mask"].dtype == torch.bool and batch["pair_labels"].dtype == torch.float32
    )
    labels = batch["labels"].numpy()
    ids = batch["input_ids"].numpy()
    for row in range(16):
        a, b = pairs.index_a[row], pairs.index_b[row]
        la, lb = split.lengths[a], split.lengths[b]
        original = np.r_[split.tokens[a, :la], split.tokens[b, :lb]]
        positions = np.r_[1 : 1 + la, la + 2 : la + 2 + lb]
        # labelled positions carry the original module, the others are shown unchanged
        chosen = labels[row, positions] != IGNORE_INDEX
        np.testing.assert_array_equal(labels[row, positions][chosen], original[chosen])
        np.testing.assert_array_equal(ids[row, positions][~chosen], original[~chosen])
        assert chosen[:la].any() and chosen[la:].any()
        assert batch["pair_labels"][row] == float(split.pt[b] > split.pt[a])
        # the tracks' pT, for the in-batch pair loss
        np.testing.assert_array_equal(
            batch["pair_pt"][row].numpy(), np.float32([split.pt[a], split.pt[b]])
        )
    assert int(batch["step"]) == 3
    assert "pair_pt" not in batches(dataset, pair_task="swap")[3]


def test_ranks_take_disjoint_pairs_of_each_epoch(dataset):
    ranks = [batches(dataset, rank=r, world_size=2) for r in range(2)]
    per_epoch = ranks[0].batches_per_epoch
    assert per_epoch == ranks[0].n_pairs // 32
    seen = [
        np.concatenate([data.batch_pairs(step).index_a for step in range(per_epoch)])
        for data in ranks
    ]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0])) == len(seen[0]) == 16 * per_epoch


def test_step_sampler_resumes_where_the_run_stopped_and_loader_keeps_order(dataset):
    assert list(StepSampler(6)) == list(range(6))
    position = {"step": 4}
    sampler = StepSampler(6, first_step=lambda: position["step"])
    assert len(sampler) == 6 and list(sampler) == [4, 5]
    data = batches(dataset)
    loader = step_loader(data, StepSampler(3))
    for step, batch in enumerate(loader):
        torch.testing.assert_close(batch["input_ids"], data[step]["input_ids"])


def test_pickled_batches_reopen_the_memory_map_instead_of_copying(dataset):
    data = batches(dataset)
    data[0]  # opens the memory maps
    clone = pickle.loads(pickle.dumps(data))
    assert clone._tokens is None  # a worker reopens the split itself
    torch.testing.assert_close(clone[7]["input_ids"], data[7]["input_ids"])


def test_training_and_validation_receive_the_configs_schedules(dataset):
    config = dataclasses.replace(preset_config("tiny"), batch_size=16)
    data = PretrainData(dataset.path, dataset.vocab, config, seed=0)
    data.setup("fit")
    assert data.train_batches is not None and data.val_batches is not None
    assert data.train_batches.mask_schedule is config.mask_schedule
    assert data.val_batches.mask_schedule is config.val_mask_schedule
    # validation asks about hidden modules only, as ``tracklm evaluate`` does; training keeps
    # BERT's random and kept tokens
    assert data.val_batches.hidden_masks and not data.train_batches.hidden_masks
    val = data.val_batches[0]
    asked = val["labels"] != IGNORE_INDEX
    assert asked.any() and (val["input_ids"][asked] == dataset.vocab.mask_id).all()
    train = data.train_batches[0]
    asked = train["labels"] != IGNORE_INDEX
    assert (train["input_ids"][asked] != dataset.vocab.mask_id).any()
    model = TrackingBert(
        TrackingBertConfig.preset("tiny", vocab_size=len(dataset.vocab), max_length=64)
    )
    assert PretrainModule(model, config, seed=0).schedule is config.mask_schedule


def test_clean_rows_leave_pairs_unmasked_and_only_in_training(dataset):
    plain, clean = batches(dataset), batches(dataset, clean_fraction=0.25)
    for step in (0, 50):  # at mask rate 0.15 and 0.5
        a, b = plain[step], clean[step]
        torch.testing.assert_close(a["pair_labels"], b["pair_labels"], rtol=0, atol=0)
        # rows 0-3 are the clean pairs: no label, no [MASK]
        assert (b["labels"][:4] == IGNORE_INDEX).all()
        assert not (b["input_ids"][:4] == dataset.vocab.mask_id).any()
        assert torch.equal(b["token_type_ids"], a["token_type_ids"])
        # the other rows are masked exactly as without the option
        assert torch.equal(b["input_ids"][4:], a["input_ids"][4:])
        assert torch.equal(b["labels"][4:], a["labels"][4:])
        assert (a["labels"][:4] != IGNORE_INDEX).any()
    config = dataclasses.replace(preset_config("tiny"), batch_size=16, pair_clean_fraction=0.5)
    data = PretrainData(dataset.path, dataset.vocab, config, seed=0)
    data.setup("fit")
    assert data.train_batches is not None and data.val_batches is not None
    assert (data.train_batches.clean_rows, data.val_batches.clean_rows) == (8, 0)
