"""Downstream tasks with models that read module geometry or hit positions (``config.inputs``).

Every task runs end to end (fine-tuning, zero-shot, from scratch) with an ``inputs: hits`` and an
``inputs: geometry`` model; a hit the task hides or asks about never shows its position.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tracklm.detector.frames import ModuleFrames
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import TrackingBert, TrackingBertConfig
from tracklm.models.inputs import module_geometry_table
from tracklm.tasks import extrapolate, holes, outliers, pt
from tracklm.tasks.common import TaskContext, delete_hit, insert_token, track_mask
from tracklm.tasks.embed import run_embed
from tracklm.tasks.finetune import (
    TASKS,
    TRACK_TASKS,
    FinetuneConfig,
    finetune,
    load_encoder,
    load_finetuned,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
FAST = FinetuneConfig(batch_size=32, max_steps=2, val_every=2, warmup_steps=1, val_tracks=60,
                      eval_tracks=80, eval_batch_size=128, accelerator="cpu")  # fmt: skip


def _model_dir(toy_data: Path, root: Path, inputs: str) -> Path:
    dataset = open_dataset(toy_data)
    torch.manual_seed(4321)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(dataset.vocab), max_length=19, inputs=inputs
    )
    model = TrackingBert(config)
    model.set_module_geometry(module_geometry_table(dataset.frames()))
    directory = root / f"{inputs}_model"
    model.save_pretrained(directory, dataset.vocab)
    return directory


@pytest.fixture(scope="module")
def hits_model(toy_data, tmp_path_factory) -> Path:
    return _model_dir(toy_data, tmp_path_factory.mktemp("hits"), "hits")


@pytest.fixture(scope="module")
def geometry_model(toy_data, tmp_path_factory) -> Path:
    return _model_dir(toy_data, tmp_path_factory.mktemp("geometry"), "geometry")


@pytest.fixture(scope="module")
def setup(toy_data):
    dataset = open_dataset(toy_data)
    return dataset.split("test").take(slice(0, 300)), TaskContext.from_dataset(dataset)


def _forward(spec, encoder, examples) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    head = spec.make_head(encoder).eval()
    with torch.no_grad():
        outputs = spec.forward(encoder.eval(), head, examples.batch(slice(None)))
    return {k: v.numpy() for k, v in outputs.items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _moved(tracks, where: np.ndarray):
    """A copy of ``tracks`` whose hits at the (N, L) mask ``where`` moved by 30 mm in x."""
    moved = tracks.take(slice(None))
    moved.hits = np.array(tracks.hits, copy=True)
    moved.hits[where] += np.float32([30.0, 0.0, 0.0])
    return moved


def test_positions_follow_the_tokens_when_hits_are_deleted_and_inserted():
    hits = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    deleted = delete_hit(hits, np.array([0, 2]), np.nan)
    np.testing.assert_array_equal(deleted[0, :2], hits[0, 1:])
    np.testing.assert_array_equal(deleted[1, :2], hits[1, :2])
    assert np.isnan(deleted[:, 2]).all() and deleted.dtype == np.float32
    inserted = insert_token(hits, np.array([1, 3]), np.nan)
    assert inserted.shape == (2, 4, 3) and inserted.dtype == np.float32
    assert np.isnan(inserted[0, 1]).all() and np.isnan(inserted[1, 3]).all()
    np.testing.assert_array_equal(inserted[0, [0, 2, 3]], hits[0])
    np.testing.assert_array_equal(inserted[1, :3], hits[1])


def test_examples_show_the_visible_hits_positions_only(setup):
    tracks, context = setup
    for spec in (pt.SPEC, holes.SPEC, outliers.SPEC, extrapolate.SPEC):
        ex = spec.make_examples(tracks, context, np.random.default_rng(5))
        placed = ex.inputs["hits"]
        assert placed.shape == (*ex.inputs["input_ids"].shape, 3)
        known = np.isfinite(placed).all(axis=-1)
        assert (np.isnan(placed).all(axis=-1) | known).all(), spec.name
        # positions exactly at the hits the input shows as modules, none at [CLS], [SEP], [MASK]
        shown = context.vocab.is_module(ex.inputs["input_ids"])
        np.testing.assert_array_equal(known, shown, err_msg=spec.name)


def test_outlier_sits_on_its_replacement_module(setup):
    tracks, context = setup
    ex = outliers.make_examples(tracks, context, np.random.default_rng(2))
    assert context.frames is not None and isinstance(context.frames, ModuleFrames)
    rows = np.flatnonzero(ex.labels["has_outlier"] > 0.5)
    position = ex.labels["position"][rows]
    module, xyz = ex.tokens[rows, position], ex.hits[rows, position]
    local = context.frames.to_local(module, xyz)
    assert context.frames.within_bounds(module, local, tolerance_mm=1e-3).all()
    assert np.abs(local[:, 2]).max() < 5.0  # on the module's plane (within a sensor's depth)
    # the other hits keep their measured positions
    long = np.asarray(tracks.lengths) >= outliers.MIN_HITS
    real = track_mask(ex.lengths, ex.tokens.shape[1])
    real[rows, position] = False
    np.testing.assert_array_equal(ex.hits[real], np.asarray(tracks.hits)[long][real])


def test_no_leak_holes_the_deleted_hits_position_changes_nothing(setup, hits_model):
    tracks, context = setup
    encoder = TrackingBert.from_pretrained(hits_model)
    ex = holes.make_examples(tracks, context, np.random.default_rng(7))
    # which hit of each kept track was removed: the gap's hit for a hole, else the last one
    lengths = np.asarray(tracks.lengths)
    keep = np.isin(np.arange(len(tracks)), _kept_rows(tracks, context))
    removed = np.where(ex.labels["gap"] >= 0, ex.labels["gap"], ex.lengths)
    where = np.zeros(np.asarray(tracks.tokens).shape, dtype=bool)
    where[np.flatnonzero(keep), removed] = True
    assert where.sum() == len(ex) and np.all(lengths[keep] == ex.lengths + 1)
    again = holes.make_examples(_moved(tracks, where), context, np.random.default_rng(7))
    np.testing.assert_array_equal(again.inputs["hits"], ex.inputs["hits"])
    _assert_same(_forward(holes.SPEC, encoder, again), _forward(holes.SPEC, encoder, ex))
    small = ex.take(slice(0, 40))
    _assert_same(
        holes.zero_shot(encoder, again.take(slice(0, 40)), context, 16),
        holes.zero_shot(encoder, small, context, 16),
    )
    # a visible hit's position does reach the model
    visible = _moved(tracks, ~where & track_mask(lengths, where.shape[1]))
    moved = holes.make_examples(visible, context, np.random.default_rng(7))
    assert not np.array_equal(
        _forward(holes.SPEC, encoder, moved)["hole_logit"],
        _forward(holes.SPEC, encoder, ex)["hole_logit"],
    )


def _kept_rows(tracks, context) -> np.ndarray:
    """Rows of the tracks that ``holes.make_examples`` keeps (an interior hit alone on its layer)."""
    tokens, lengths = np.asarray(tracks.tokens, dtype=np.int64), np.asarray(tracks.lengths)
    real = track_mask(lengths, tokens.shape[1])
    layer = np.where(real, context.layer_of(tokens), -1)
    alone = ((layer[:, :, None] == layer[:, None, :]) & real[:, None, :]).sum(axis=2) == 1
    j = np.arange(tokens.shape[1])[None, :]
    interior = (j >= 1) & (j <= lengths[:, None] - 2) & (lengths[:, None] >= holes.MIN_HITS)
    return np.flatnonzero((real & interior & alone).any(axis=1))


def test_no_leak_extrapolate_the_asked_hits_positions_change_nothing(setup, hits_model):
    tracks, context = setup
    encoder = TrackingBert.from_pretrained(hits_model)
    ex = extrapolate.make_examples(tracks, context, np.random.default_rng(3))
    keep = np.flatnonzero(np.asarray(tracks.lengths) >= extrapolate.MIN_HITS)
    where = np.zeros(np.asarray(tracks.tokens).shape, dtype=bool)
    where[keep] = ~track_mask(ex.labels["cut"], where.shape[1])  # the hits after the cut
    again = extrapolate.make_examples(_moved(tracks, where), context, np.random.default_rng(3))
    np.testing.assert_array_equal(again.inputs["hits"], ex.inputs["hits"])
    spec = extrapolate.SPEC
    _assert_same(_forward(spec, encoder, again), _forward(spec, encoder, ex))
    _assert_same(
        extrapolate.zero_shot(encoder, again, context, 64),
        extrapolate.zero_shot(encoder, ex, context, 64),
    )


def test_outliers_zero_shot_reads_the_other_hits_positions(setup, hits_model):
    tracks, context = setup
    encoder = TrackingBert.from_pretrained(hits_model)
    ex = outliers.make_examples(tracks, context, np.random.default_rng(2)).take(slice(0, 30))
    scores = outliers.zero_shot(encoder, ex, context, 32)
    # Each hit is scored with itself masked and the others' positions shown.
    moved = ex.take(slice(None))
    moved.hits = ex.hits.copy()
    moved.hits[:, 0] += np.float32([30.0, 0.0, 0.0])
    again = outliers.zero_shot(encoder, moved, context, 32)
    assert np.all(np.isfinite(scores["outlier_score"]))
    assert not np.array_equal(again["outlier_score"], scores["outlier_score"])


@pytest.mark.parametrize("inputs", ["hits", "geometry"])
@pytest.mark.parametrize("task", TRACK_TASKS)
def test_task_runs_end_to_end_with_model_inputs(
    task, inputs, toy_data, hits_model, geometry_model, tmp_path
):
    model = hits_model if inputs == "hits" else geometry_model
    out = tmp_path / "run"
    result = finetune(task, model, toy_data, out, FAST, train_size=100, seed=1)
    assert result["training"]["steps"] == 2
    assert (result["zero_shot"] is None) == (task == "pt")
    headline = TASKS[task].headline
    assert np.isfinite(result["metrics"][headline])
    if result["zero_shot"] is not None:
        assert np.isfinite(result["zero_shot"][headline])
    _, encoder, _ = load_finetuned(out / "model")
    assert encoder.config.inputs == inputs
    pretrained = TrackingBert.from_pretrained(model)
    assert encoder.module_inputs is not None and pretrained.module_inputs is not None
    torch.testing.assert_close(
        encoder.module_inputs.module_geometry, pretrained.module_inputs.module_geometry
    )
    assert json.loads((out / "metrics.json").read_text())["task"] == task


@pytest.mark.parametrize("mode", ["scratch", "frozen"])
def test_other_modes_with_a_hits_model(mode, toy_data, hits_model, tmp_path):
    result = finetune("holes", hits_model, toy_data, tmp_path / mode, FAST, mode=mode, seed=2)
    assert np.isfinite(result["metrics"]["auc"])


def test_scratch_keeps_the_module_geometry(hits_model):
    pretrained = TrackingBert.from_pretrained(hits_model)
    fresh = load_encoder(hits_model, "scratch", seed=3)
    assert fresh.config == pretrained.config
    assert fresh.module_inputs is not None and pretrained.module_inputs is not None
    torch.testing.assert_close(
        fresh.module_inputs.module_geometry, pretrained.module_inputs.module_geometry
    )
    assert not torch.equal(
        fresh.module_inputs.geometry[0].weight, pretrained.module_inputs.geometry[0].weight
    )


@pytest.mark.parametrize("inputs", ["hits", "geometry"])
def test_embed_writes_the_token_table_of_geometry_and_hits_models(
    inputs, hits_model, geometry_model, tmp_path
):
    model = hits_model if inputs == "hits" else geometry_model
    stats = run_embed(model, tmp_path / "emb.parquet", detector="trackml")
    encoder = TrackingBert.from_pretrained(model)
    assert stats["embedding"] == "token"
    assert stats["inputs"] == inputs
    assert stats["dimension"] == encoder.config.hidden_size
    assert 0.0 <= stats["neighbour_fraction"] <= 1.0


@pytest.fixture(scope="module")
def causal_model(toy_data, tmp_path_factory) -> Path:
    """A tiny untrained next-module (causal) model that reads hits."""
    dataset = open_dataset(toy_data)
    torch.manual_seed(99)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(dataset.vocab), inputs="hits", objective="next-module"
    )
    model = TrackingBert(config)
    model.set_module_geometry(module_geometry_table(dataset.frames()))
    directory = tmp_path_factory.mktemp("causal") / "model"
    model.save_pretrained(directory, dataset.vocab)
    return directory


@pytest.mark.parametrize("task", TRACK_TASKS)
def test_every_task_serves_a_causal_model(task, toy_data, causal_model, tmp_path):
    """Fine-tuned, zero-shot and saved: a next-module model serves every task."""
    result = finetune(task, causal_model, toy_data, tmp_path / "run", FAST, train_size=100, seed=1)
    headline = TASKS[task].headline
    assert np.isfinite(result["metrics"][headline])
    if result["zero_shot"] is not None:
        assert np.isfinite(result["zero_shot"][headline])
    _, encoder, _ = load_finetuned(tmp_path / "run" / "model")
    assert encoder.config.causal


def test_a_causal_models_track_head_reads_the_whole_track(setup, causal_model):
    """The track-level head of a causal model reads the last token, which sees every hit: moving
    the first hit's position moves the track score (on [CLS] it would not)."""
    tracks, context = setup
    encoder = load_encoder(causal_model, "finetune", seed=0).eval()
    spec = TASKS["outliers"]
    examples = spec.make_examples(tracks, context, np.random.default_rng(0))
    torch.manual_seed(0)
    head = spec.make_head(encoder).eval()
    batch = {k: torch.as_tensor(v[:16]) for k, v in examples.inputs.items()}
    with torch.no_grad():
        first = spec.forward(encoder, head, batch)["outlier_logit"]
        moved = dict(batch)
        moved["hits"] = batch["hits"].clone()
        moved["hits"][:, 1] += 25.0  # the first hit (position 1)
        second = spec.forward(encoder, head, moved)["outlier_logit"]
    assert not torch.allclose(first, second)
