"""TrackingBert: shapes, heads, padding, tying, save/load, vocabulary checks, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracklm.data.sequences import encode_pairs
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.models import TrackingBert, TrackingBertConfig, TrackingBertOutput
from tracklm.presets import load_preset, preset_names

from .rounding import encoder_chain, float32_tolerance

N_MODULES = 40


def make_vocab(n_modules: int = N_MODULES, volume: int = 8) -> ModuleVocab:
    ids = np.stack(
        [np.full(n_modules, volume), np.repeat([2, 4], n_modules // 2), np.arange(n_modules)], 1
    )
    return ModuleVocab(ids)


def make_batch(vocab: ModuleVocab, batch: int = 6, width: int = 19, seed: int = 0):
    """Encoded pairs of random tracks with 4 to 8 hits."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(4, 9, batch), rng.integers(4, 9, batch)
    ta = rng.integers(vocab.num_special, len(vocab), (batch, 8))
    tb = rng.integers(vocab.num_special, len(vocab), (batch, 8))
    enc = encode_pairs(ta, la, tb, lb, vocab, width)
    return (
        torch.from_numpy(enc.input_ids),
        torch.from_numpy(enc.token_type_ids),
        torch.from_numpy(enc.attention_mask),
    )


def mask_some(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab: ModuleVocab, seed: int = 0
):
    """Replace ~30% of module tokens by [MASK]; labels hold the originals there, -100 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    is_module = input_ids >= vocab.num_special
    chosen = is_module & attention_mask & (torch.rand(input_ids.shape, generator=g) < 0.3)
    chosen[0, 1] = True  # at least one
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, vocab.mask_id), input_ids)
    return masked, labels


@pytest.fixture(scope="module")
def vocab() -> ModuleVocab:
    return make_vocab()


@pytest.fixture
def model(vocab: ModuleVocab) -> TrackingBert:
    torch.manual_seed(0)
    return TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab))).eval()


def test_presets_and_config_round_trip() -> None:
    paper = TrackingBertConfig.preset("paper", vocab_size=4010)
    assert (paper.num_layers, paper.hidden_size, paper.num_heads, paper.intermediate_size) == (
        12,
        64,
        8,
        512,
    )
    assert paper.max_length == 19 and paper.dropout == 0.05
    assert TrackingBertConfig.from_dict(paper.to_dict()) == paper
    encoder = TrackingBert(paper)
    n_encoder = sum(p.numel() for n, p in encoder.named_parameters() if n.startswith("blocks"))
    assert 0.5e6 < n_encoder < 1.5e6  # "about 1 M encoder parameters"
    with pytest.raises(InputError, match="preset 'huge'"):
        TrackingBertConfig.preset("huge")
    with pytest.raises(InputError, match="unknown key 'hidden'"):
        TrackingBertConfig.from_dict({"hidden": 3})
    with pytest.raises(InputError, match="num_heads"):
        TrackingBertConfig(hidden_size=30, num_heads=4)
    with pytest.raises(InputError, match="position_embedding"):
        TrackingBertConfig.from_dict({"position_embedding": "rotary"})


@pytest.mark.parametrize("name", preset_names("model"))
def test_every_preset_loads_and_builds_a_model(name: str, vocab: ModuleVocab) -> None:
    keys = load_preset("model", name)
    config = TrackingBertConfig.preset(name, vocab_size=len(vocab))
    assert {k: getattr(config, k) for k in keys if k != "vocab_size"} == {
        k: v for k, v in keys.items() if k != "vocab_size"
    }  # the file sets these; every other field keeps its default
    torch.manual_seed(0)
    model = TrackingBert(config).eval()
    ids, types, attn = make_batch(vocab)
    out = model(ids, types, attn)
    assert out.mlm_logits.shape == (*ids.shape, len(vocab)) and torch.isfinite(out.mlm_logits).all()


def test_presets_are_the_three_architectures() -> None:
    assert preset_names("model") == ("paper", "small", "tiny")


def test_shapes_with_and_without_labels(model: TrackingBert, vocab: ModuleVocab) -> None:
    ids, types, attn = make_batch(vocab)
    b, t = ids.shape
    out = model(ids, types, attn)
    assert isinstance(out, TrackingBertOutput)
    assert out.mlm_logits.shape == (b, t, len(vocab))
    assert out.pair_logits.shape == (b,)
    assert out.hidden_states.shape == (b, t, 32)
    assert out.loss is None and out.mlm_loss is None and out.pair_loss is None

    masked, labels = mask_some(ids, attn, vocab)
    pair = torch.tensor([0, 1, 1, 0, 1, 0])
    out = model(masked, types, attn, labels=labels, pair_labels=pair)
    k = int((labels != -100).sum())
    assert out.mlm_logits.shape == (k, len(vocab))
    assert out.hidden_states is None  # with labels the last block skips what no head reads
    assert out.loss is not None and out.mlm_loss is not None and out.pair_loss is not None
    # the same float32 operations on the same inputs: equal to the last bit
    torch.testing.assert_close(out.loss, out.mlm_loss + out.pair_loss, atol=0, rtol=0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.pair_logits, pair.float())
    torch.testing.assert_close(out.pair_loss, expected, atol=0, rtol=0)
    # only one of the two tasks
    assert model(masked, types, attn, pair_labels=pair).mlm_loss is None
    only_mlm = model(masked, types, attn, labels=labels)
    assert only_mlm.pair_loss is None
    torch.testing.assert_close(only_mlm.loss, out.mlm_loss, atol=0, rtol=0)


def test_labelled_logits_are_rows_of_full_logits(model: TrackingBert, vocab: ModuleVocab) -> None:
    ids, types, attn = make_batch(vocab)
    masked, labels = mask_some(ids, attn, vocab)
    full = model(masked, types, attn).mlm_logits  # (b, t, v)
    rows, cols = (labels != -100).nonzero(as_tuple=True)  # row-major
    out = model(masked, types, attn, labels=labels)
    # the last block on k rows instead of all: other matrix shapes, other summation orders
    chain = encoder_chain(model.config, ids.shape[1], heads=True)
    expected = full[rows, cols]
    torch.testing.assert_close(out.mlm_logits, expected, **float32_tolerance(expected, chain))
    expected_loss = torch.nn.functional.cross_entropy(expected, labels[rows, cols])
    # plus the log-sum-exp over the vocabulary
    loss_tolerance = float32_tolerance(expected_loss, chain + len(vocab))
    torch.testing.assert_close(out.mlm_loss, expected_loss, **loss_tolerance)
    picked = model.predict_masked(masked, types, attn, torch.stack([rows, cols], 1).flip(0))
    torch.testing.assert_close(picked, expected.flip(0), **float32_tolerance(expected, chain))


def test_padding_does_not_change_real_positions(vocab: ModuleVocab) -> None:
    torch.manual_seed(0)
    model = TrackingBert(
        TrackingBertConfig.preset("tiny", vocab_size=len(vocab), max_length=24)
    ).eval()
    ids, types, attn = make_batch(vocab, width=19)
    short = model(ids, types, attn)
    pad = torch.zeros(ids.shape[0], 5, dtype=ids.dtype)
    wide = model(
        torch.cat([ids, pad], 1), torch.cat([types, pad], 1), torch.cat([attn, pad.bool()], 1)
    )
    real = attn
    # a wider grid: softmax and attention sums over 24 keys instead of 19 (5 of them zero)
    chain = encoder_chain(model.config, 24)
    expected = short.hidden_states[real]
    tolerance = float32_tolerance(expected, chain)
    torch.testing.assert_close(wide.hidden_states[:, :19][real], expected, **tolerance)
    pair_tolerance = float32_tolerance(short.pair_logits, chain + 2 * model.config.hidden_size)
    torch.testing.assert_close(wide.pair_logits, short.pair_logits, **pair_tolerance)
    assert torch.all(short.hidden_states[~real] == 0)  # padded positions are left out, as zeros
    # the tokens under the padding do not matter either (they are never computed: exact)
    noisy = ids.clone()
    noisy[~attn] = vocab.mask_id
    torch.testing.assert_close(
        model(noisy, types, attn).hidden_states[real], expected, atol=0, rtol=0
    )
    # ...whereas without the mask the padding would matter (by far more than any rounding)
    assert not torch.allclose(
        model(ids, types, None).hidden_states[real], short.hidden_states[real]
    )


def test_decoder_is_tied_to_token_embeddings(model: TrackingBert, vocab: ModuleVocab) -> None:
    ids, types, attn = make_batch(vocab)
    assert model.embedding_table() is model.embeddings.token.weight
    assert model.embedding_table().shape == (len(vocab), 32)
    names = [name for name, _ in model.named_parameters()]
    assert sum(p.shape == (len(vocab), 32) for p in model.parameters()) == 1, names
    with torch.no_grad():
        before = model(ids, types, attn).mlm_logits
        model.embeddings.token.weight[vocab.mask_id] += torch.randn(32)
        after = model(ids, types, attn).mlm_logits
    # the change moves the [MASK] logit at every real position through the decoder
    assert torch.all((after - before)[attn][:, vocab.mask_id].abs() > 1e-3)


def test_save_load_round_trip(model: TrackingBert, vocab: ModuleVocab, tmp_path) -> None:
    ids, types, attn = make_batch(vocab)
    model.save_pretrained(tmp_path / "model", vocab, card={"data": "simulated", "steps": 12})
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert vocab.sha256 in card and "steps: 12" in card and f"{model.num_parameters():,}" in card
    loaded = TrackingBert.from_pretrained(tmp_path / "model")
    assert loaded.vocab == vocab and not loaded.training
    a, b = model(ids, types, attn), loaded(ids, types, attn)
    # the same weights through the same operations: equal to the last bit
    torch.testing.assert_close(b.mlm_logits, a.mlm_logits, rtol=0, atol=0)
    torch.testing.assert_close(b.pair_logits, a.pair_logits, rtol=0, atol=0)
    assert loaded.embedding_table() is loaded.embeddings.token.weight  # still tied after loading


def test_loading_refuses_bad_directories(model: TrackingBert, vocab: ModuleVocab, tmp_path) -> None:
    with pytest.raises(InputError, match="no model directory"):
        TrackingBert.from_pretrained(tmp_path / "absent")
    directory = tmp_path / "model"
    model.save_pretrained(directory, vocab)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json"):
        TrackingBert.from_pretrained(directory)
    model.save_pretrained(directory, vocab)
    (directory / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"model\.safetensors"):
        TrackingBert.from_pretrained(directory)
    model.save_pretrained(directory, vocab)
    config = json.loads((directory / "config.json").read_text())
    config["num_layers"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="missing tensor"):
        TrackingBert.from_pretrained(directory)
    with pytest.raises(InputError, match="vocab_size"):
        model.save_pretrained(tmp_path / "other", make_vocab(20))


def test_vocabulary_mismatch_refused(model: TrackingBert, vocab: ModuleVocab, tmp_path) -> None:
    model.save_pretrained(tmp_path / "model", vocab)
    loaded = TrackingBert.from_pretrained(tmp_path / "model")
    loaded.check_vocab(vocab)  # same vocabulary: fine
    other = make_vocab(volume=9)  # same size, other modules
    assert len(other) == len(vocab)
    with pytest.raises(
        InputError,
        match=f"^data/vocab.json: vocabulary sha256 {other.sha256} differs from the model's {vocab.sha256} ",
    ):
        loaded.check_vocab(other, "data/vocab.json")


def test_a_vocabulary_other_than_the_weights_is_refused(
    model: TrackingBert, vocab: ModuleVocab, tmp_path
) -> None:
    model.save_pretrained(tmp_path / "model", vocab)
    other = make_vocab(volume=9)  # same size, other modules: config.json cannot tell
    other.save(tmp_path / "model" / "vocab.json")
    with pytest.raises(
        InputError, match=r"model/vocab\.json: vocabulary sha256 .* weights were saved with"
    ):
        TrackingBert.from_pretrained(tmp_path / "model")


def test_sinusoidal_positions(vocab: ModuleVocab, tmp_path) -> None:
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(vocab), position_embedding="sinusoidal"
    )
    model = TrackingBert(config).eval()
    assert model.embeddings.position is None
    assert not any("position" in name for name in model.state_dict())
    ids, types, attn = make_batch(vocab)
    out = model(ids, types, attn)
    assert torch.isfinite(out.mlm_logits).all()
    # position matters: the same token at two positions gets two representations
    same = torch.full((1, 6), vocab.num_special)
    hidden = model(same).hidden_states[0]
    assert not torch.allclose(hidden[0], hidden[3])  # apart by O(1), not by rounding
    model.save_pretrained(tmp_path / "m", vocab)
    # the same weights and table through the same operations: equal to the last bit
    torch.testing.assert_close(
        TrackingBert.from_pretrained(tmp_path / "m")(ids, types, attn).mlm_logits,
        out.mlm_logits,
        atol=0,
        rtol=0,
    )


def test_too_wide_input_refused(model: TrackingBert) -> None:
    with pytest.raises(InputError, match="max_length 19"):
        model(torch.zeros(1, 20, dtype=torch.long))


def test_overfits_one_batch(vocab: ModuleVocab) -> None:
    torch.manual_seed(0)
    model = TrackingBert(
        TrackingBertConfig.preset("tiny", vocab_size=len(vocab), dropout=0.0, attention_dropout=0.0)
    )
    ids, types, attn = make_batch(vocab, batch=8)
    masked, labels = mask_some(ids, attn, vocab)
    pair = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(masked, types, attn, labels=labels, pair_labels=pair)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.3 * losses[0]
    # gradients reach the tied table through both the input and the decoder
    assert model.embedding_table().grad is not None


def test_a_directory_written_by_earlier_versions_loads(
    model: TrackingBert, vocab: ModuleVocab, tmp_path
) -> None:
    """config.json holds the architecture only (no backend key); any backend can load it."""
    model.save_pretrained(tmp_path / "model", vocab)
    written = json.loads((tmp_path / "model" / "config.json").read_text())
    earlier = {
        "vocab_size": len(vocab), "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 64, "max_length": 19, "dropout": 0.1, "attention_dropout": 0.1,
        "position_embedding": "learned", "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "initializer_range": 0.02, "pad_token_id": 0,
    }  # fmt: skip
    # the file gained what the model reads (issue 13) and its objective (issue 14); a file
    # without those keys still loads
    # and how its pair head reads a pair (issue 12)
    added = {"inputs": "tokens", "position_loss_weight": 1.0, "objective": "masked",
             "pair_head": "cls"}  # fmt: skip
    assert written == {**earlier, **added}
    (tmp_path / "model" / "config.json").write_text(json.dumps(earlier))
    ids, types, attn = make_batch(vocab)
    expected = model(ids, types, attn).mlm_logits
    chain = encoder_chain(model.config, ids.shape[1], heads=True)
    for backend in ("auto", "packed", "eager", "sdpa"):
        loaded = TrackingBert.from_pretrained(tmp_path / "model", attention=backend)
        # eval: SDPA or the written-out products, summing in their own orders
        torch.testing.assert_close(
            loaded(ids, types, attn).mlm_logits, expected, **float32_tolerance(expected, chain)
        )
