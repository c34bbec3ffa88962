"""Masking: module tokens only, at least one per track, 80/10/10, labels, rate schedule."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.data.masking import IGNORE_INDEX, MaskSchedule, mask_modules
from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab
from tracklm.train.config import PretrainConfig


@pytest.fixture(scope="module")
def vocab() -> ModuleVocab:
    ids = np.stack(
        [np.full(500, 8), np.repeat(np.arange(2, 12, 2), 100), np.tile(np.arange(100), 5)], 1
    )
    return ModuleVocab(ids)


def encoded_pairs(vocab: ModuleVocab, n: int, seed: int = 0, pairs: bool = True):
    """Random pairs of tracks with 1 to 8 hits, laid out with ``encode_pairs`` (width 19)."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(1, 9, n), rng.integers(1, 9, n)
    ta = rng.integers(vocab.num_special, len(vocab), (n, 8))
    tb = rng.integers(vocab.num_special, len(vocab), (n, 8))
    ta[np.arange(8)[None, :] >= la[:, None]] = vocab.pad_id
    tb[np.arange(8)[None, :] >= lb[:, None]] = vocab.pad_id
    if pairs:
        return encode_pairs(ta, la, tb, lb, vocab, 19)
    return encode_pairs(ta, la, None, None, vocab, 10)


def test_only_module_tokens_are_selected_and_others_untouched(vocab):
    enc = encoded_pairs(vocab, 4000)
    masked = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.5, np.random.default_rng(0))
    selected = masked.labels != IGNORE_INDEX
    assert not np.any(selected & ~vocab.is_module(enc.input_ids))  # never CLS, SEP or padding
    np.testing.assert_array_equal(masked.input_ids[~selected], enc.input_ids[~selected])
    np.testing.assert_array_equal(masked.labels[selected], enc.input_ids[selected])
    assert masked.input_ids.dtype == np.int64 and masked.labels.dtype == np.int64


def test_every_track_a_and_b_has_at_least_one_selected_hit(vocab):
    enc = encoded_pairs(vocab, 4000, seed=1)
    masked = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.01, np.random.default_rng(1))
    selected = masked.labels != IGNORE_INDEX
    module = vocab.is_module(enc.input_ids)
    for segment in (0, 1):
        per_track = (selected & (enc.token_type_ids == segment)).sum(1)
        assert np.all(per_track >= 1)
        # with a 1% rate, one hit per track (8 hits x 1% rounds stochastically to 1 at most)
        assert np.all(per_track <= 1)
    single = encoded_pairs(vocab, 500, pairs=False)
    masked = mask_modules(
        single.input_ids, single.token_type_ids, vocab, 0.01, np.random.default_rng(2)
    )
    assert np.all((masked.labels != IGNORE_INDEX).sum(1) == 1)
    # the per-track counts above saw every hit: all real tokens but [CLS] and two [SEP] are modules
    np.testing.assert_array_equal(module.sum(1), enc.attention_mask.sum(1) - 3)


def test_selected_fraction_follows_the_rate(vocab):
    enc = encoded_pairs(vocab, 20000, seed=2)
    module = vocab.is_module(enc.input_ids)
    lengths = (module & (enc.token_type_ids == 0)).sum(1)
    long_tracks = lengths == 8
    for rate in (0.15, 0.3, 0.5):
        masked = mask_modules(
            enc.input_ids, enc.token_type_ids, vocab, rate, np.random.default_rng(3)
        )
        selected = (masked.labels != IGNORE_INDEX) & (enc.token_type_ids == 0)
        fraction = selected[long_tracks].sum() / (8 * long_tracks.sum())
        assert (
            abs(fraction - rate) < 0.01
        )  # tracks of 8 hits: no "at least one" floor at these rates


def test_hidden_masks_select_the_same_positions_and_hide_every_one(vocab):
    enc = encoded_pairs(vocab, 4000, seed=5)
    bert = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(5))
    hidden = mask_modules(
        enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(5), hidden=True
    )
    np.testing.assert_array_equal(hidden.labels, bert.labels)  # same positions, same answers
    selected = hidden.labels != IGNORE_INDEX
    assert np.all(hidden.input_ids[selected] == vocab.mask_id)  # no answer left readable
    np.testing.assert_array_equal(hidden.input_ids[~selected], enc.input_ids[~selected])
    # BERT's masks leave about 10% of the answers in place, which validation must not count
    kept = np.mean(bert.input_ids[selected] == enc.input_ids[selected])
    assert 0.08 < kept < 0.13


def test_replacement_is_80_percent_mask_10_random_10_unchanged(vocab):
    enc = encoded_pairs(vocab, 40000, seed=4)
    masked = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(4))
    selected = masked.labels != IGNORE_INDEX
    new, old = masked.input_ids[selected], enc.input_ids[selected]
    n = selected.sum()
    assert n > 100_000
    as_mask = np.mean(new == vocab.mask_id)
    unchanged = np.mean(new == old)
    random_module = np.mean((new != vocab.mask_id) & (new != old))
    tolerance = 4 * np.sqrt(0.1 * 0.9 / n)
    assert abs(as_mask - 0.8) < tolerance
    # a random module equals the original with probability 1/500: counted as unchanged
    assert abs(unchanged - (0.1 + 0.1 / 500)) < tolerance
    assert abs(random_module - (0.1 - 0.1 / 500)) < tolerance
    replaced = new[(new != vocab.mask_id) & (new != old)]
    assert np.all(vocab.is_module(replaced))
    # random replacements are spread over the whole module vocabulary
    assert np.unique(replaced).size > 450


def test_masking_is_reproducible_from_the_generator(vocab):
    enc = encoded_pairs(vocab, 300, seed=5)
    first = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(9))
    again = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(9))
    other = mask_modules(enc.input_ids, enc.token_type_ids, vocab, 0.3, np.random.default_rng(10))
    np.testing.assert_array_equal(first.input_ids, again.input_ids)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, other.labels)


def test_mask_schedule_steps_up_at_the_boundaries():
    schedule = MaskSchedule(rates=(0.15, 0.3, 0.5), boundaries=(100, 200))
    assert [schedule.rate_at(s) for s in (0, 99, 100, 199, 200, 10**6)] == [
        0.15,
        0.15,
        0.3,
        0.3,
        0.5,
        0.5,
    ]
    assert PretrainConfig().mask_schedule.rates == (0.15, 0.30, 0.50)  # the one set of defaults
    assert MaskSchedule(rates=(0.2,), boundaries=()).rate_at(5) == 0.2
    with pytest.raises(ValueError, match="one rate more"):
        MaskSchedule(rates=(0.15, 0.3), boundaries=())
    with pytest.raises(ValueError, match="increase"):
        MaskSchedule(rates=(0.15, 0.3, 0.5), boundaries=(200, 100))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MaskSchedule(rates=(0.0,), boundaries=())
