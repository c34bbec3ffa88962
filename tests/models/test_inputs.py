"""Model inputs (issue 13): tokens, module geometry, measured hits; the hidden hit never leaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tracklm.data.batches import PairBatches
from tracklm.data.masking import IGNORE_INDEX, MaskSchedule
from tracklm.data.sequences import encode_pairs, hide_hits, place_hits
from tracklm.errors import InputError
from tracklm.evaluate.masked import mask_inputs, rank_and_locate
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.inputs import (
    N_GEOMETRY,
    known_hits,
    module_geometry_table,
    to_global,
    to_local,
)

MODES = ("tokens", "geometry", "hits")


def build(data: Path, mode: str, seed: int = 7) -> TrackingBert:
    dataset = open_dataset(data)
    torch.manual_seed(seed)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(dataset.vocab), inputs=mode)
    model = TrackingBert(config)
    if config.reads_geometry:
        model.set_module_geometry(module_geometry_table(dataset.frames()))
    model.vocab = dataset.vocab
    return model.eval()


def pair_batch(data: Path, n: int = 8):
    """Clean pairs of the first ``n`` test tracks with their laid-out hit positions."""
    dataset = open_dataset(data)
    split = dataset.split("test")
    tokens, lengths = np.asarray(split.tokens[:n]), np.asarray(split.lengths[:n])
    hits = np.asarray(split.hits[:n])
    partner = np.roll(np.arange(n), 1)
    encoded = encode_pairs(tokens, lengths, tokens[partner], lengths[partner], dataset.vocab, 19)
    placed = place_hits(encoded, hits, lengths, hits[partner], lengths[partner])
    return dataset, encoded, placed, tokens, lengths, hits


def test_the_geometry_table_places_every_hit_on_its_module(toy_data: Path) -> None:
    """A hit's local coordinates lie inside its module (|u|, |v| <= 1, w ~ 0) and map back."""
    dataset = open_dataset(toy_data)
    table = torch.as_tensor(module_geometry_table(dataset.frames()))
    assert table.shape == (len(dataset.vocab), N_GEOMETRY)
    assert torch.all(table[: dataset.vocab.num_special, 14] == 0)
    assert torch.all(table[dataset.vocab.num_special :, 14] == 1)
    split = dataset.split("train")
    real = np.arange(split.max_length)[None, :] < np.asarray(split.lengths)[:, None]
    tokens = torch.as_tensor(np.asarray(split.tokens)[real].astype(np.int64))
    xyz = torch.as_tensor(np.asarray(split.hits)[real].astype(np.float64))
    rows = table.double()[tokens]
    local = to_local(rows, xyz)
    assert float(local[:, :2].abs().max()) <= 1.0 + 1e-3  # inside the module (trapezoids too)
    assert float(local[:, 2].abs().max()) < 1.0  # within the sensor's thickness (mm)
    back = to_global(rows, local[:, :2])
    assert float((back - xyz).norm(dim=1).max()) < 1.0  # only w is dropped
    assert bool(known_hits(rows, xyz).all())


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_heads_their_shapes_and_round_trips(
    toy_data: Path, tmp_path: Path, mode: str
) -> None:
    model = build(toy_data, mode)
    dataset, encoded, placed, *_ = pair_batch(toy_data)
    ids = torch.as_tensor(encoded.input_ids)
    types = torch.as_tensor(encoded.token_type_ids)
    attn = torch.as_tensor(encoded.attention_mask)
    hits = torch.as_tensor(placed) if mode == "hits" else None
    with torch.no_grad():
        out = model(ids, types, attn, hits=hits)
    assert out.mlm_logits.shape == (8, 19, len(dataset.vocab))
    assert out.pair_logits.shape == (8,)
    model.save_pretrained(tmp_path / "model", dataset.vocab)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["inputs"] == mode
    loaded = TrackingBert.from_pretrained(tmp_path / "model")
    assert loaded.config.inputs == mode
    if mode != "tokens":  # the geometry travels inside the weights
        assert loaded.module_inputs is not None and model.module_inputs is not None
        torch.testing.assert_close(
            loaded.module_inputs.module_geometry, model.module_inputs.module_geometry
        )
    with torch.no_grad():
        again = loaded(ids, types, attn, hits=hits)
    torch.testing.assert_close(again.mlm_logits, out.mlm_logits)
    torch.testing.assert_close(again.pair_logits, out.pair_logits)


def test_a_hits_model_refuses_to_run_without_hits(toy_data: Path) -> None:
    model = build(toy_data, "hits")
    _, encoded, *_ = pair_batch(toy_data)
    with pytest.raises(ValueError, match="pass hits"):
        model(torch.as_tensor(encoded.input_ids))


def test_the_hits_change_the_outputs_of_a_hits_model_only(toy_data: Path) -> None:
    """Positions matter to a hits model; a geometry model ignores them."""
    _, encoded, placed, *_ = pair_batch(toy_data)
    ids = torch.as_tensor(encoded.input_ids)
    moved = torch.as_tensor(placed) + 3.0
    for mode, changes in (("hits", True), ("geometry", False)):
        model = build(toy_data, mode)
        with torch.no_grad():
            a = model(ids, hits=torch.as_tensor(placed)).mlm_logits
            b = model(ids, hits=moved).mlm_logits
        assert (not torch.equal(a, b)) == changes


def test_a_masked_hit_position_never_reaches_the_model(toy_data: Path) -> None:
    """Changing the true position of a hidden hit leaves every output unchanged, through the
    evaluation's path (mask, hide, rank and locate) and even when passed at a [MASK] token."""
    model = build(toy_data, "hits")
    dataset, encoded, placed, tokens, lengths, _ = pair_batch(toy_data)
    hit = lengths // 2
    true = tokens[np.arange(8), hit]
    input_ids, labels = mask_inputs(
        encoded, "A", hit[:, None], true[:, None], dataset.vocab.mask_id, "masked"
    )
    moved = placed.copy()
    rows, cols = np.nonzero(labels != IGNORE_INDEX)
    moved[rows, cols] += np.float32(25.0)  # the hidden hits move 43 mm
    first = rank_and_locate(
        model, encoded, input_ids, labels, dataset.vocab.num_special, placed, 4, "x"
    )
    second = rank_and_locate(
        model, encoded, input_ids, labels, dataset.vocab.num_special, moved, 4, "x"
    )
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] is not None and second[1] is not None
    np.testing.assert_array_equal(first[1], second[1])
    # at the model itself: a position passed at a [MASK] token is not read
    with torch.no_grad():
        a = model(torch.as_tensor(input_ids), hits=torch.as_tensor(placed)).mlm_logits
        b = model(torch.as_tensor(input_ids), hits=torch.as_tensor(moved)).mlm_logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_batches_hide_every_labelled_position(toy_data: Path) -> None:
    """Labelled hits ([MASK], random or kept) carry no position; their truth is in hit_labels."""
    dataset = open_dataset(toy_data)
    batches = PairBatches(
        toy_data / "train", dataset.vocab, batch_size=16, seed=3, pairing="event",
        pair_task="pt", mask_schedule=MaskSchedule((0.5,), ()), hits=True,
    )  # fmt: skip
    batch = batches[2]
    labelled = batch["labels"] != IGNORE_INDEX
    hits, targets = batch["hits"], batch["hit_labels"]
    assert hits.shape == (*batch["input_ids"].shape, 3)
    assert bool(torch.isnan(hits[labelled]).all())
    assert bool(torch.isfinite(targets[labelled]).all())
    assert bool(torch.isnan(targets[~labelled]).all())
    module = batch["input_ids"] >= dataset.vocab.num_special
    assert bool(torch.isfinite(hits[module & ~labelled]).all())
    # the same step without hits is the same batch otherwise
    plain = PairBatches(
        toy_data / "train", dataset.vocab, batch_size=16, seed=3, pairing="event",
        pair_task="pt", mask_schedule=MaskSchedule((0.5,), ()),
    )[2]  # fmt: skip
    for key in ("input_ids", "labels", "token_type_ids"):
        assert torch.equal(plain[key], batch[key])
    assert "hits" not in plain


def test_the_position_head_learns_where_a_hidden_hit_lies(toy_data: Path) -> None:
    """A few steps on one batch bring the position loss down (the head and the hit inputs train)."""
    model = build(toy_data, "hits").train()
    dataset = open_dataset(toy_data)
    batch = PairBatches(
        toy_data / "train", dataset.vocab, batch_size=32, seed=1, pairing="event",
        pair_task="pt", mask_schedule=MaskSchedule((0.3,), ()), hits=True,
    )[0]  # fmt: skip
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        out = model(
            batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
            labels=batch["labels"], hits=batch["hits"], hit_labels=batch["hit_labels"],
        )  # fmt: skip
        assert out.position_loss is not None
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.position_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::20]


def test_hide_hits_splits_visible_from_targets() -> None:
    hits = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    labels = np.array([[IGNORE_INDEX, 5, IGNORE_INDEX], [IGNORE_INDEX] * 3])
    visible, targets = hide_hits(hits, labels)
    assert np.isnan(visible[0, 1]).all() and np.array_equal(targets[0, 1], hits[0, 1])
    assert np.array_equal(visible[1], hits[1]) and np.isnan(targets[1]).all()


def test_resuming_with_other_inputs_is_refused(toy_data: Path, tmp_path: Path) -> None:
    from tracklm.train.pretrain import run_pretrain

    run = run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_steps=2, inputs="geometry")
    assert json.loads((run / "model" / "config.json").read_text())["inputs"] == "geometry"
    with pytest.raises(InputError, match=r"--inputs: .* inputs 'geometry', not 'hits'"):
        run_pretrain(toy_data, run, resume=True, max_steps=3, inputs="hits")


def test_an_unknown_input_mode_is_refused_before_a_run_exists(
    toy_data: Path, tmp_path: Path
) -> None:
    from tracklm.train.pretrain import run_pretrain

    with pytest.raises(InputError, match="--inputs: 'pixels' is not one of tokens, geometry, hits"):
        run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_steps=2, inputs="pixels")
    assert not (tmp_path / "run").exists()


def test_a_hits_model_refuses_a_dataset_without_positions(toy_data: Path, tmp_path: Path) -> None:
    """A dataset whose hit positions are all zero cannot serve a hits model (one clear line)."""
    import shutil

    from tracklm.evaluate.report import run_evaluate

    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    hits = np.load(data / "test" / "hits.npy")
    np.save(data / "test" / "hits.npy", np.zeros_like(hits))
    model = build(toy_data, "hits")
    model.save_pretrained(tmp_path / "model", open_dataset(toy_data).vocab)
    with pytest.raises(InputError, match=r"test/hits.npy: holds no hit positions, but the model"):
        run_evaluate(tmp_path / "model", data, tmp_path / "report")
    assert not (tmp_path / "report").exists()
    from tracklm.tasks.finetune import run_finetune

    with pytest.raises(InputError, match=r"test/hits.npy: holds no hit positions, but the model"):
        run_finetune("pt", tmp_path / "model", data, tmp_path / "pt", max_steps=1)
    assert not (tmp_path / "pt").exists()
    # a tokens model evaluates the same data
    build(toy_data, "tokens").save_pretrained(tmp_path / "tokens", open_dataset(toy_data).vocab)
    run_evaluate(tmp_path / "tokens", data, tmp_path / "report", max_tracks=50)
    assert (tmp_path / "report" / "metrics.json").is_file()
