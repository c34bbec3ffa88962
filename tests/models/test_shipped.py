"""The pre-trained model shipped with the package: loaded by name, usable at once, nothing downloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tracklm.errors import InputError
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert
from tracklm.pretrained import resolve_model, shipped_names

NAME = "trackml-pixel"
SMALL = "trackml-pixel-small"


def test_the_shipped_model_loads_by_name_with_its_card():
    assert NAME in shipped_names()
    model = TrackingBert.from_pretrained(NAME)
    # the paper's architecture
    c = model.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size) == (64, 12, 8, 512)
    assert (c.inputs, c.objective, c.pair_head) == ("geometry", "masked", "difference")
    directory = resolve_model(NAME)
    card = (directory / "README.md").read_text()
    for needed in ("paper-cpu", "tracklm pretrain", "tracklm evaluate", "accuracy"):
        assert needed in card, needed
    size = (directory / "model.safetensors").stat().st_size
    assert 2e6 < size < 8e6


def test_the_small_shipped_model_loads_by_name_with_its_card():
    assert shipped_names() == (NAME, SMALL)
    model = TrackingBert.from_pretrained(SMALL)
    # the small preset, with the same inputs and heads as the paper's architecture
    c = model.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size) == (64, 4, 8, 256)
    assert (c.inputs, c.objective, c.pair_head) == ("geometry", "masked", "difference")
    card = (resolve_model(SMALL) / "README.md").read_text()
    for needed in ("--preset small", "tracklm pretrain", "tracklm evaluate", "accuracy"):
        assert needed in card, needed
    # one vocabulary: the built-in detector's pixel modules
    same = (resolve_model(SMALL) / "vocab.json").read_bytes()
    assert same == (resolve_model(NAME) / "vocab.json").read_bytes()


def test_the_shipped_vocabulary_is_the_built_in_detectors(toy_data):
    # a dataset prepared from the built-in detector (pixel-4to8) speaks the model's vocabulary
    model = TrackingBert.from_pretrained(NAME)
    model.check_vocab(open_dataset(toy_data).vocab)


@pytest.mark.parametrize("name", [NAME, SMALL])
def test_the_shipped_model_predicts_a_hidden_module_better_than_chance(toy_data, name):
    model = TrackingBert.from_pretrained(name)
    data = open_dataset(toy_data)
    test = data.split("test")
    vocab = data.vocab
    tokens = np.asarray(test.tokens[:200], dtype=np.int64)
    lengths = np.asarray(test.lengths[:200], dtype=np.int64)
    rows = np.arange(len(tokens))
    middle = lengths // 2
    ids = np.zeros((len(tokens), tokens.shape[1] + 2), dtype=np.int64)
    ids[:, 0] = vocab.cls_id
    ids[:, 1 : tokens.shape[1] + 1] = tokens
    ids[rows, lengths + 1] = vocab.sep_id
    truth = ids[rows, middle + 1].copy()
    ids[rows, middle + 1] = vocab.mask_id
    mask = torch.as_tensor(ids != vocab.pad_id)
    with torch.no_grad():
        logits = model(
            torch.as_tensor(ids), torch.zeros_like(mask, dtype=torch.long), mask
        ).mlm_logits
    predicted = logits[torch.as_tensor(rows), torch.as_tensor(middle + 1)].argmax(-1).numpy()
    assert np.mean(predicted == truth) > 0.3  # chance is 1 in thousands of modules


def test_a_name_that_is_neither_path_nor_shipped_is_one_line(tmp_path):
    with pytest.raises(
        InputError, match=r"no shipped model of that name \(shipped: trackml-pixel,"
    ):
        TrackingBert.from_pretrained("trackml-strips")
    # an existing directory of that name wins over the shipped model
    assert resolve_model(tmp_path) == tmp_path


def test_every_verb_takes_the_name(toy_data, tmp_path: Path):
    out = tmp_path / "embedding.parquet"
    command = [sys.executable, "-m", "tracklm", "embed", "--model", NAME, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    bad = [sys.executable, "-m", "tracklm", "evaluate", "--model", "trackml-strips",
           "--data", str(toy_data), "--out", str(tmp_path / "r")]  # fmt: skip
    done = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tracklm evaluate: error: --model trackml-strips: no such model directory, and no "
        "shipped model "
        "of that name (shipped: trackml-pixel, trackml-pixel-small)"
    ]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", [NAME, SMALL])
def test_the_pretrain_preset_of_a_shipped_models_name_builds_its_architecture(name):
    from tracklm.train.config import preset_config
    from tracklm.train.pretrain import _model_config

    shipped = TrackingBert.from_pretrained(name).config
    planned = _model_config(
        preset_config(name), vocab_size=shipped.vocab_size, width=shipped.max_length
    )
    assert planned == shipped
