"""ONNX export: onnxruntime reproduces the PyTorch model (both graphs); bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.export import (
    ExportedHeads,
    ExportedMaskedHeads,
    GatherAttention,
    export_onnx,
    run_export,
)

from .rounding import encoder_chain, float32_tolerance

MASKED_INPUTS = ["input_ids", "token_type_ids", "attention_mask", "positions"]


def make_vocab(n_modules: int = 40) -> ModuleVocab:
    return ModuleVocab(
        np.stack([np.full(n_modules, 8), np.full(n_modules, 2), np.arange(n_modules)], 1)
    )


def make_inputs(vocab: ModuleVocab, batch: int, width: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Pairs of random tracks of 2 to 4 hits (so they fit ``width``), padded to ``width``."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(vocab.num_special, len(vocab), (2, batch, 4))
    lengths = rng.integers(2, 5, (2, batch))
    enc = encode_pairs(tokens[0], lengths[0], tokens[1], lengths[1], vocab, width)
    return tuple(
        torch.from_numpy(x) for x in (enc.input_ids, enc.token_type_ids, enc.attention_mask)
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vocab = make_vocab()
    torch.manual_seed(0)
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab))).eval()
    directory = tmp_path_factory.mktemp("run") / "model"
    model.save_pretrained(directory, vocab)
    return directory


def logit_chains(model: TrackingBert, width: int) -> tuple[int, int]:
    """Additions behind a masked-module logit and a pair logit (see ``rounding.py``)."""
    chain = encoder_chain(model.config, width)
    return chain + 4 * model.config.hidden_size, chain + 2 * model.config.hidden_size


def test_export_graphs_compute_what_the_model_computes(model_dir) -> None:
    """The traced modules in PyTorch (attention by gathers, prescaled queries): no ONNX needed."""
    model = TrackingBert.from_pretrained(model_dir)
    ids, types, attn = make_inputs(model.vocab, 6, 19, seed=1)
    positions = torch.tensor([[0, 1], [5, 3], [0, 1], [2, 0]])
    with torch.no_grad():
        expected = model(ids, types, attn)
        expected_mlm = model.predict_masked(ids, types, attn, positions)
        full_mlm, full_pair = ExportedHeads(model)(ids, types, attn)
        mlm, pair = ExportedMaskedHeads(model)(ids, types, attn, positions)
    chain, pair_chain = logit_chains(model, 19)
    # other summation orders (gathers, the scale folded into the weights): float32 rounding
    tolerance = float32_tolerance(expected_mlm, chain)
    torch.testing.assert_close(mlm, expected_mlm, **tolerance)
    torch.testing.assert_close(full_mlm[attn], expected.mlm_logits[attn], **tolerance)
    pair_tolerance = float32_tolerance(expected.pair_logits, pair_chain)
    torch.testing.assert_close(pair, expected.pair_logits, **pair_tolerance)
    torch.testing.assert_close(full_pair, expected.pair_logits, **pair_tolerance)
    assert all(
        isinstance(block.attention, GatherAttention) for block in ExportedHeads(model).model.blocks
    )


def _session(path):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    ort = pytest.importorskip(
        "onnxruntime", reason="parity check needs onnxruntime (extra 'export')"
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_default_onnx_graph_scores_given_positions_like_pytorch(model_dir, tmp_path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    out = run_export(model_dir, "onnx", tmp_path / "sub" / "model.onnx")
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == [
        "input_ids", "token_type_ids", "attention_mask", "positions",
    ]  # fmt: skip
    assert [o.name for o in session.get_outputs()] == ["mlm_logits", "pair_logits"]
    model = TrackingBert.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    for batch, width, k in ((7, 19, 11), (3, 12, 3), (4, 19, 0), (5, 19, 4)):
        # other sizes than the export example, with padding (none in the last batch);
        # positions repeat rows, in any order
        ids, types, attn = make_inputs(model.vocab, batch, width, seed=batch)
        if batch == 5:
            attn = torch.ones_like(attn)
        rows = rng.integers(0, batch, k)
        columns = rng.integers(0, attn.sum(1).numpy()[rows].clip(min=1)) if k else rows
        positions = np.stack([rows, columns], 1).astype(np.int64).reshape(k, 2)
        with torch.no_grad():
            expected = model(ids, types, attn)
            expected_mlm = model.predict_masked(ids, types, attn, torch.from_numpy(positions))
        mlm, pair = session.run(
            None,
            {
                "input_ids": ids.numpy(),
                "token_type_ids": types.numpy(),
                "attention_mask": attn.numpy(),
                "positions": positions,
            },
        )
        assert mlm.shape == (k, len(model.vocab)) and pair.shape == (batch,)
        # ONNX Runtime's own kernels sum in their own orders (and the query scale is folded
        # into the weights): float32 rounding along the encoder and head
        chain, pair_chain = logit_chains(model, width)
        tolerance = float32_tolerance(expected_mlm, chain)
        np.testing.assert_allclose(mlm, expected_mlm.numpy(), **tolerance)
        full = expected.mlm_logits.numpy()[positions[:, 0], positions[:, 1]]
        np.testing.assert_allclose(mlm, full, **tolerance)
        pair_tolerance = float32_tolerance(expected.pair_logits, pair_chain)
        np.testing.assert_allclose(pair, expected.pair_logits.numpy(), **pair_tolerance)


def test_full_onnx_graph_matches_pytorch(model_dir, tmp_path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    model = TrackingBert.from_pretrained(model_dir)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    out = export_onnx(model, tmp_path / "full.onnx", head="full")
    # the export folds the attention scale into a copy of the weights, not into the model
    assert not isinstance(model.blocks[0].attention, GatherAttention)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == [
        "input_ids", "token_type_ids", "attention_mask",
    ]  # fmt: skip
    for batch, width in ((7, 19), (3, 12)):
        # another batch size and width than the export example, with padding
        ids, types, attn = make_inputs(model.vocab, batch, width, seed=batch)
        with torch.no_grad():
            expected = model(ids, types, attn)
        mlm, pair = session.run(
            None,
            {
                "input_ids": ids.numpy(),
                "token_type_ids": types.numpy(),
                "attention_mask": attn.numpy(),
            },
        )
        assert mlm.shape == (batch, width, len(model.vocab)) and pair.shape == (batch,)
        real = attn.numpy()
        # ONNX Runtime's kernels: float32 rounding along the encoder and head, as above
        chain, pair_chain = logit_chains(model, width)
        tolerance = float32_tolerance(expected.mlm_logits[attn], chain)
        np.testing.assert_allclose(mlm[real], expected.mlm_logits.numpy()[real], **tolerance)
        pair_tolerance = float32_tolerance(expected.pair_logits, pair_chain)
        np.testing.assert_allclose(pair, expected.pair_logits.numpy(), **pair_tolerance)


def test_export_refuses_unknown_head(model_dir, tmp_path) -> None:
    model = TrackingBert.from_pretrained(model_dir)
    with pytest.raises(InputError, match="head 'logits' is unknown"):
        export_onnx(model, tmp_path / "m.onnx", head="logits")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_bad_model_dir(tmp_path) -> None:
    with pytest.raises(InputError, match="no model directory"):
        run_export(tmp_path / "absent", "onnx", tmp_path / "m.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"config\.json"):
        run_export(tmp_path / "empty", "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- geometry, hits
def ring_geometry(vocab: ModuleVocab) -> np.ndarray:
    """(v, N_GEOMETRY) table of modules on a 50 mm ring, u along phi, v along z; specials zero."""
    from tracklm.models.inputs import N_GEOMETRY

    table = np.zeros((len(vocab), N_GEOMETRY), dtype=np.float32)
    table[:, 12:14] = 1.0
    n = len(vocab) - vocab.num_special
    phi = 2 * np.pi * np.arange(n) / n
    c, s, z = np.cos(phi), np.sin(phi), np.zeros(n)
    rows = slice(vocab.num_special, None)
    table[rows, 0:3] = np.stack([50 * c, 50 * s, 10 * np.arange(n) % 40], axis=1)
    # rotation row-major (x, y, z) by columns (u, v, w): u = (-s, c, 0), v = z, w = (c, s, 0)
    table[rows, 3:12] = np.stack([-s, z, c, c, z, s, z, z + 1, z], axis=1)
    table[rows, 12:15] = (8.0, 32.0, 1.0)
    return table


def hit_positions_of(ids: torch.Tensor, table: np.ndarray, seed: int) -> torch.Tensor:
    """(b, t, 3) float32 positions on the modules of ``ids`` (NaN at special tokens)."""
    rng = np.random.default_rng(seed)
    rows = table[ids.numpy()]  # (b, t, N_GEOMETRY)
    uv = rng.uniform(-1, 1, (*ids.shape, 2)) * rows[..., 12:14]
    rotation = rows[..., 3:12].reshape(*ids.shape, 3, 3)
    xyz = rows[..., 0:3] + np.einsum("...ij,...j->...i", rotation[..., :2], uv)
    xyz[rows[..., 14] < 0.5] = np.nan
    return torch.from_numpy(xyz.astype(np.float32))


@pytest.fixture(scope="module")
def hits_model_dir(tmp_path_factory):
    vocab = make_vocab()
    torch.manual_seed(2)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), inputs="hits")
    model = TrackingBert(config).eval()
    model.set_module_geometry(ring_geometry(vocab))
    directory = tmp_path_factory.mktemp("hits_run") / "model"
    model.save_pretrained(directory, vocab)
    return directory


def _hits_case(model: TrackingBert, batch: int, width: int, seed: int):
    """Inputs with a few hits hidden ([MASK], NaN position), some visible hits without a
    position (NaN), and positions to score at the hidden hits and elsewhere."""
    ids, types, attn = make_inputs(model.vocab, batch, width, seed=seed)
    hits = hit_positions_of(ids, model.module_inputs.module_geometry.numpy(), seed)
    rows = torch.arange(batch)
    ids[rows, 2] = model.vocab.mask_id  # hit 1 of track A hidden: no position
    hits[rows, 2] = float("nan")
    hits[0, 1] = float("nan")  # a visible hit whose position is unknown
    positions = torch.stack([rows, torch.full((batch,), 2)], 1)
    positions = torch.cat([positions, torch.tensor([[0, 1], [batch - 1, 3]])])
    return ids, types, attn, positions, hits


def _expected_hits(model: TrackingBert, ids, types, attn, positions, hits):
    with torch.no_grad():
        heads = model.masked_heads(ids, types, attn, positions, hits)
        is_module = model.module_inputs.module_geometry[:, 14] > 0.5
        best = heads.mlm_logits.masked_fill(~is_module, float("-inf")).argmax(-1)
        pair = model(ids, types, attn, hits=hits).pair_logits
        return heads.mlm_logits, pair, model.locate(heads.rows, best)


def test_hits_export_graphs_compute_what_the_model_computes(hits_model_dir) -> None:
    model = TrackingBert.from_pretrained(hits_model_dir)
    ids, types, attn, positions, hits = _hits_case(model, 5, 15, seed=3)
    mlm_expected, pair_expected, where_expected = _expected_hits(
        model, ids, types, attn, positions, hits
    )
    with torch.no_grad():
        mlm, pair, where = ExportedMaskedHeads(model)(ids, types, attn, positions, hits)
        full_mlm, full_pair, full_where = ExportedHeads(model)(ids, types, attn, hits)
    chain, pair_chain = logit_chains(model, 15)
    tolerance = float32_tolerance(mlm_expected, chain)
    torch.testing.assert_close(mlm, mlm_expected, **tolerance)
    torch.testing.assert_close(
        full_mlm[positions[:, 0], positions[:, 1]], mlm_expected, **tolerance
    )
    pair_tolerance = float32_tolerance(pair_expected, pair_chain)
    torch.testing.assert_close(pair, pair_expected, **pair_tolerance)
    torch.testing.assert_close(full_pair, pair_expected, **pair_tolerance)
    where_tolerance = float32_tolerance(where_expected, chain + 2 * model.config.hidden_size)
    torch.testing.assert_close(where, where_expected, **where_tolerance)
    torch.testing.assert_close(
        full_where[positions[:, 0], positions[:, 1]], where_expected, **where_tolerance
    )
    # the hits reach the graph: without them (all NaN) the logits move
    blind, _, _ = ExportedMaskedHeads(model)(
        ids, types, attn, positions, torch.full_like(hits, float("nan"))
    )
    assert not torch.allclose(blind, mlm, **tolerance)


def test_hits_onnx_graph_reads_hits_and_places_hidden_hits_like_pytorch(hits_model_dir, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    out = run_export(hits_model_dir, "onnx", tmp_path / "hits.onnx")
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == [
        "input_ids", "token_type_ids", "attention_mask", "positions", "hits",
    ]  # fmt: skip
    assert [o.name for o in session.get_outputs()] == ["mlm_logits", "pair_logits", "hit_positions"]
    model = TrackingBert.from_pretrained(hits_model_dir)
    for batch, width in ((6, 19), (3, 12)):
        ids, types, attn, positions, hits = _hits_case(model, batch, width, seed=batch)
        garbage = hits.clone()  # finite values where the model must not read any position
        garbage[:, 0] = 500.0  # [CLS]
        garbage[torch.arange(batch), 2] = 20.0  # the hidden hits, at [MASK]
        expected = _expected_hits(model, ids, types, attn, positions, hits)
        chain, pair_chain = logit_chains(model, width)
        tolerances = (
            float32_tolerance(expected[0], chain),
            float32_tolerance(expected[1], pair_chain),
            float32_tolerance(expected[2], chain + 2 * model.config.hidden_size),
        )
        feeds = {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                 "attention_mask": attn.numpy(), "positions": positions.numpy()}  # fmt: skip
        for given in (hits, garbage):
            got = session.run(None, {**feeds, "hits": given.numpy()})
            assert got[0].shape == (len(positions), len(model.vocab))
            assert got[2].shape == (len(positions), 3) and np.isfinite(got[2]).all()
            for value, reference, tolerance in zip(got, expected, tolerances):
                np.testing.assert_allclose(value, reference.numpy(), **tolerance)
    none = session.run(
        None, {**feeds, "hits": hits.numpy(), "positions": np.zeros((0, 2), np.int64)}
    )
    assert none[0].shape == (0, len(model.vocab)) and none[2].shape == (0, 3)


def test_full_hits_onnx_graph_matches_pytorch(hits_model_dir, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    model = TrackingBert.from_pretrained(hits_model_dir)
    session = _session(export_onnx(model, tmp_path / "full.onnx", head="full"))
    assert [i.name for i in session.get_inputs()][-1] == "hits"
    ids, types, attn, positions, hits = _hits_case(model, 4, 13, seed=8)
    expected = _expected_hits(model, ids, types, attn, positions, hits)
    mlm, pair, where = session.run(
        None,
        {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
         "attention_mask": attn.numpy(), "hits": hits.numpy()},
    )  # fmt: skip
    assert mlm.shape == (4, 13, len(model.vocab)) and where.shape == (4, 13, 3)
    chain, pair_chain = logit_chains(model, 13)
    rows, columns = positions[:, 0].numpy(), positions[:, 1].numpy()
    np.testing.assert_allclose(
        mlm[rows, columns], expected[0].numpy(), **float32_tolerance(expected[0], chain)
    )
    np.testing.assert_allclose(
        pair, expected[1].numpy(), **float32_tolerance(expected[1], pair_chain)
    )
    np.testing.assert_allclose(
        where[rows, columns],
        expected[2].numpy(),
        **float32_tolerance(expected[2], chain + 2 * model.config.hidden_size),
    )


def test_geometry_model_exports_with_the_token_inputs(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    vocab = make_vocab()
    torch.manual_seed(3)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), inputs="geometry")
    model = TrackingBert(config).eval()
    model.set_module_geometry(ring_geometry(vocab))
    model.save_pretrained(tmp_path / "model", vocab)
    session = _session(run_export(tmp_path / "model", "onnx", tmp_path / "geometry.onnx"))
    assert [i.name for i in session.get_inputs()] == MASKED_INPUTS
    assert [o.name for o in session.get_outputs()] == ["mlm_logits", "pair_logits"]
    ids, types, attn = make_inputs(vocab, 5, 16, seed=4)
    positions = torch.tensor([[0, 1], [4, 2], [2, 3]])
    with torch.no_grad():
        expected = model.predict_masked(ids, types, attn, positions)
        # the module geometry is read: without it the logits differ
        bare = TrackingBert(config).eval()
        bare.load_state_dict(model.state_dict())
        bare.set_module_geometry(ring_geometry(vocab) * 0.5)
        assert not torch.allclose(bare.predict_masked(ids, types, attn, positions), expected)
    mlm, _ = session.run(None, {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                                "attention_mask": attn.numpy(), "positions": positions.numpy()})  # fmt: skip
    chain, _ = logit_chains(model, 16)
    np.testing.assert_allclose(mlm, expected.numpy(), **float32_tolerance(expected, chain))


def test_a_causal_model_exports_and_scores_each_position_from_the_one_before(tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' package (extra 'export')")
    vocab = make_vocab()
    torch.manual_seed(5)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), objective="next-module")
    model = TrackingBert(config).eval()
    model.save_pretrained(tmp_path / "model", vocab)
    session = _session(run_export(tmp_path / "model", "onnx", tmp_path / "causal.onnx"))
    for batch, width in ((5, 16), (3, 19)):
        ids, types, attn = make_inputs(vocab, batch, width, seed=batch)
        positions = torch.tensor([[0, 1], [batch - 1, 2], [1, 3]])
        with torch.no_grad():
            expected = model.predict_masked(ids, types, attn, positions)
            pair = model(ids, types, attn).pair_logits
        mlm, got_pair = session.run(None, {
            "input_ids": ids.numpy(), "token_type_ids": types.numpy(),
            "attention_mask": attn.numpy(), "positions": positions.numpy()})  # fmt: skip
        chain, pair_chain = logit_chains(model, width)
        np.testing.assert_allclose(mlm, expected.numpy(), **float32_tolerance(expected, chain))
        np.testing.assert_allclose(got_pair, pair.numpy(), **float32_tolerance(pair, pair_chain))
        # causal in the graph too: what follows a position does not move its scores
        later = ids.clone()
        later[:, 4:] = torch.where(attn[:, 4:], vocab.num_special + 1, later[:, 4:])
        moved, _ = session.run(None, {
            "input_ids": later.numpy(), "token_type_ids": types.numpy(),
            "attention_mask": attn.numpy(), "positions": positions.numpy()})  # fmt: skip
        np.testing.assert_allclose(moved, mlm, rtol=1e-5, atol=1e-5)
