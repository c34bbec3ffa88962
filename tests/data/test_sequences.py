"""Model inputs: ``[CLS] A [SEP] B [SEP]`` laid out exactly as a hand-written batch."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab

VOCAB = ModuleVocab(np.column_stack([np.full(40, 8), np.full(40, 2), np.arange(1, 41)]))
TOKENS_A = np.array([[10, 11, 12, 0], [20, 21, 0, 0]])
LENGTHS_A = np.array([3, 2])
TOKENS_B = np.array([[30, 31, 0, 0], [40, 41, 42, 43]])
LENGTHS_B = np.array([2, 4])


def test_special_token_ids() -> None:
    assert (VOCAB.pad_id, VOCAB.cls_id, VOCAB.sep_id) == (0, 2, 3)


def test_pair_layout_by_hand() -> None:
    encoded = encode_pairs(TOKENS_A, LENGTHS_A, TOKENS_B, LENGTHS_B, VOCAB, width=10)
    np.testing.assert_array_equal(
        encoded.input_ids,
        [
            [2, 10, 11, 12, 3, 30, 31, 3, 0, 0],
            [2, 20, 21, 3, 40, 41, 42, 43, 3, 0],
        ],
    )
    np.testing.assert_array_equal(
        encoded.token_type_ids,
        [
            [0, 0, 0, 0, 0, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
        ],
    )
    np.testing.assert_array_equal(
        encoded.attention_mask, np.arange(10)[None, :] < np.array([[8], [9]])
    )
    assert encoded.attention_mask.dtype == bool
    np.testing.assert_array_equal(encoded.offset_a, [1, 1])
    np.testing.assert_array_equal(encoded.offset_b, [5, 4])
    assert encoded.input_ids.dtype == np.int64 and encoded.token_type_ids.dtype == np.int64


def test_offsets_locate_every_hit() -> None:
    encoded = encode_pairs(TOKENS_A, LENGTHS_A, TOKENS_B, LENGTHS_B, VOCAB, width=12)
    for row in range(2):
        for k in range(LENGTHS_A[row]):
            assert encoded.input_ids[row, encoded.offset_a[row] + k] == TOKENS_A[row, k]
        for k in range(LENGTHS_B[row]):
            assert encoded.input_ids[row, encoded.offset_b[row] + k] == TOKENS_B[row, k]
    assert not encoded.attention_mask[:, 9:].any()


def test_single_track_layout_by_hand() -> None:
    encoded = encode_pairs(TOKENS_A, LENGTHS_A, None, None, VOCAB, width=6)
    np.testing.assert_array_equal(encoded.input_ids, [[2, 10, 11, 12, 3, 0], [2, 20, 21, 3, 0, 0]])
    assert not encoded.token_type_ids.any()
    np.testing.assert_array_equal(encoded.attention_mask.sum(axis=1), [5, 4])
    np.testing.assert_array_equal(encoded.offset_b, [-1, -1])


def test_too_long_input_raises() -> None:
    with pytest.raises(ValueError, match="needs 9 positions, more than the width 8"):
        encode_pairs(TOKENS_A, LENGTHS_A, TOKENS_B, LENGTHS_B, VOCAB, width=8)
    with pytest.raises(ValueError, match="needs 5 positions, more than the width 4"):
        encode_pairs(TOKENS_A, LENGTHS_A, None, None, VOCAB, width=4)


def test_paper_width_fits_two_tracks_of_eight() -> None:
    full = np.arange(6, 14)[None, :]
    encoded = encode_pairs(full, np.array([8]), full, np.array([8]), VOCAB, width=19)
    assert encoded.attention_mask.all() and encoded.input_ids[0, [0, 9, 18]].tolist() == [2, 3, 3]
