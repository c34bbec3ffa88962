"""``ModuleVocab``: deterministic module tokens saved with every model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracklm.detector import SPECIAL_TOKENS, Detector, ModuleVocab
from tracklm.errors import InputError

MODULES = np.array([[8, 4, 3], [7, 2, 10], [8, 2, 1], [7, 2, 2], [9, 14, 108], [8, 2, 224]])


def test_special_tokens_first_and_modules_sorted():
    vocab = ModuleVocab(MODULES)
    assert vocab.special_tokens == SPECIAL_TOKENS
    assert (vocab.pad_id, vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert vocab.token_id("[HOLE]") == 5
    assert vocab.num_special == 6
    assert len(vocab) == 6 + len(MODULES)
    expected = sorted(map(tuple, MODULES.tolist()))
    assert [tuple(m) for m in vocab.modules.tolist()] == expected
    with pytest.raises(KeyError):
        vocab.token_id("[NOPE]")


def test_deterministic_under_shuffling():
    rng = np.random.default_rng(3)
    first = ModuleVocab(MODULES)
    second = ModuleVocab(MODULES[rng.permutation(len(MODULES))])
    assert first.sha256 == second.sha256
    assert first == second
    assert np.array_equal(first.modules, second.modules)
    different = ModuleVocab(MODULES[:-1])
    assert different.sha256 != first.sha256


def test_from_detector_pixel_volumes():
    detector = Detector.builtin("trackml")
    pixel = ModuleVocab.from_detector(detector, volumes=(7, 8, 9))
    assert len(pixel) == 6 + 4_004
    assert pixel == ModuleVocab(detector.select_volumes([9, 8, 7]).ids)
    assert len(ModuleVocab.from_detector(detector)) == 6 + 18_728


def test_encode_decode_round_trip():
    vocab = ModuleVocab(MODULES)
    tokens = vocab.encode(MODULES[:, 0], MODULES[:, 1], MODULES[:, 2])
    assert tokens.dtype == np.int32
    assert np.all(tokens >= vocab.num_special)
    assert len(np.unique(tokens)) == len(MODULES)
    np.testing.assert_array_equal(vocab.decode(tokens), MODULES)
    assert vocab.is_module(tokens).all()
    # The smallest triple gets the first module token.
    assert vocab.encode(np.array([7]), np.array([2]), np.array([2]))[0] == vocab.num_special


def test_specials_decode_to_minus_one():
    vocab = ModuleVocab(MODULES)
    specials = np.arange(vocab.num_special).reshape(2, 3)
    np.testing.assert_array_equal(vocab.decode(specials), -np.ones((2, 3, 3), dtype=int))
    assert not vocab.is_module(specials).any()
    assert not vocab.is_module(np.array([len(vocab)]))[0]


def test_unknown_module():
    vocab = ModuleVocab(MODULES)
    with pytest.raises(KeyError, match=r"\(8, 2, 2\)"):
        vocab.encode(np.array([7, 8]), np.array([2, 2]), np.array([2, 2]))
    tokens = vocab.encode(
        np.array([7, 8, 99]), np.array([2, 2, 2]), np.array([2, 2, 1]), unknown="unk"
    )
    assert tokens[0] == vocab.num_special
    assert list(tokens[1:]) == [vocab.unk_id, vocab.unk_id]


def test_bad_construction():
    with pytest.raises(InputError, match="listed twice"):
        ModuleVocab(np.concatenate([MODULES, MODULES[:1]]))
    with pytest.raises(InputError, match=r"\[PAD\]"):
        ModuleVocab(MODULES, special_tokens=("[UNK]", "[PAD]"))


def test_save_load_round_trip(tmp_path):
    vocab = ModuleVocab(MODULES)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = ModuleVocab.load(path)
    assert loaded == vocab
    assert loaded.special_tokens == vocab.special_tokens
    np.testing.assert_array_equal(loaded.modules, vocab.modules)
    assert json.loads(path.read_text())["sha256"] == vocab.sha256


def test_tampered_vocab_rejected(tmp_path):
    path = tmp_path / "vocab.json"
    ModuleVocab(MODULES).save(path)
    data = json.loads(path.read_text())
    data["modules"][0][2] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"vocab\.json: recorded sha256 does not match"):
        ModuleVocab.load(path)


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="no vocabulary file"):
        ModuleVocab.load(tmp_path / "absent.json")
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"modules": []}))
    with pytest.raises(InputError, match="not a tracklm vocabulary"):
        ModuleVocab.load(path)
