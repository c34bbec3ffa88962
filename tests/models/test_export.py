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
