"""The attention backends and CPU fast paths compute what plain ops compute.

- every attention backend (``packed``, ``eager``, ``sdpa``) against an unpadded reference
  encoder written here from plain ops, outputs and weight gradients;
- ``PackedAttention`` (hand-written backward) against autograd and ``gradcheck``, and trained
  against the ``eager`` backend with the same dropout masks;
- the last block computing only the positions the heads read;
- the fast dropout (16-bit masks from a seeded SFC64 stream): rate, scale, reproducibility.
"""

from __future__ import annotations

import math

import pytest
import torch

from tracklm.errors import InputError
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.cpu_kernels import Dropout, PackedAttention, dropout, dropout_multiplier
from tracklm.models.layout import TokenLayout

from .rounding import encoder_chain, float32_tolerance
from .test_bert import make_batch, make_vocab, mask_some

BACKENDS = ("packed", "eager", "sdpa")
EPS32 = torch.finfo(torch.float32).eps


def layout_for(mask: torch.Tensor) -> TokenLayout:
    real = mask.reshape(-1).nonzero().squeeze(1)
    return TokenLayout(
        batch=mask.shape[0], width=mask.shape[1], real=real, key_mask=mask[:, None, None, :]
    )


def reference_attention(qkv, layout, h, keep):
    """The same attention from autograd's ops, on the (b, t) grid."""
    b, t = layout.batch, layout.width
    d = qkv.shape[1] // 3
    q, k, v = layout.unpack(qkv).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) * (d // h) ** -0.5 + layout.key_bias(qkv.dtype)
    weights = torch.softmax(scores, -1)
    if keep is not None:
        weights = weights * keep.view(b, h, t, t)
    return layout.pack((weights @ v).transpose(1, 2).reshape(b, t, d))


def reference_encode(model: TrackingBert, ids, types, attn) -> torch.Tensor:
    """The encoder on the whole (b, t) grid from plain ops, padded keys masked, no dropout."""
    b, t = ids.shape
    d, h = model.config.hidden_size, model.config.num_heads
    e = d // h
    emb = model.embeddings
    x = emb.norm(emb.token(ids) + emb.segment(types) + emb.position.weight[:t])  # (b, t, d)
    bias = torch.zeros(b, 1, 1, t).masked_fill(~attn[:, None, None, :], -math.inf)
    for block in model.blocks:
        q, k, v = block.attention.qkv(x).view(b, t, 3, h, e).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(e) + bias, dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(b, t, d)
        x = block.attention_norm(x + block.attention.out(y))
        x = block.output_norm(x + block.feed_forward(x))
    return x * attn[:, :, None]  # zeros at padding, as ``encode``


@pytest.mark.parametrize("with_dropout", [False, True])
def test_packed_attention_gradients_are_exact(with_dropout: bool) -> None:
    torch.manual_seed(0)
    b, t, h, e = 3, 6, 2, 4
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 3:] = False  # padding in two rows, none in the last
    mask[1, 5:] = False
    layout = layout_for(mask)
    qkv = torch.randn(int(mask.sum()), 3 * h * e, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(b * h, t, t) >= 0.3).double() / 0.7 if with_dropout else None

    def packed(x):
        return PackedAttention.apply(x, layout, h, keep)

    # float64: assert_close's default tolerances (1e-7) are 1e9 float64 eps, far above the
    # rounding of sums of 4 to 6 terms
    torch.testing.assert_close(packed(qkv), reference_attention(qkv, layout, h, keep))
    assert torch.autograd.gradcheck(packed, (qkv,))


def encoder_grads(model: TrackingBert) -> list[torch.Tensor]:
    return [p.grad for p in (*model.embeddings.parameters(), *model.blocks.parameters())]


def tiny_model(vocab, **overrides) -> TrackingBert:
    torch.manual_seed(0)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab), **overrides)
    return TrackingBert(config)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_backends_match_an_unpadded_reference(backend: str) -> None:
    """Outputs and weight gradients of each backend equal those of ``reference_encode``."""
    vocab = make_vocab()
    model = tiny_model(vocab, dropout=0.0, attention_dropout=0.0)
    ids, types, attn = make_batch(vocab, batch=8)
    weights = torch.randn(8, ids.shape[1], model.config.hidden_size)
    mine = TrackingBert(model.config, attention=backend).train()  # packed: training only
    mine.load_state_dict(model.state_dict())
    hidden = mine.encode(ids, types, attn)
    (hidden * weights).sum().backward()
    expected = reference_encode(model, ids, types, attn)
    (expected * weights).sum().backward()
    grads, expected_grads = encoder_grads(mine), encoder_grads(model)
    hidden, expected = hidden.detach(), expected.detach()
    chain = encoder_chain(model.config, ids.shape[1])
    torch.testing.assert_close(hidden, expected, **float32_tolerance(expected, chain))
    # backward: the forward chain once more, plus the sum over the b * t tokens of each weight
    grad_chain = 2 * chain + ids.numel()
    for mine, ref in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, ref, **float32_tolerance(ref, grad_chain))
    assert torch.all(hidden[~attn] == 0)  # padding stays zero


def train_step_grads(model, batch, seed):
    torch.manual_seed(seed)
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("padding", [True, False])
def test_packed_attention_trains_like_the_eager_backend(padding: bool) -> None:
    vocab = make_vocab()
    packed = tiny_model(vocab, dropout=0.1, attention_dropout=0.2).train()
    assert packed.attention_backend == "packed"  # the default ("auto")
    eager = TrackingBert(packed.config, attention="eager").train()
    eager.load_state_dict(packed.state_dict())
    ids, types, attn = make_batch(vocab, batch=8)
    if not padding:
        attn = torch.ones_like(attn)
    masked, labels = mask_some(ids, attn, vocab)
    batch = dict(
        input_ids=masked, token_type_ids=types, attention_mask=attn, labels=labels,
        pair_labels=torch.arange(8) % 2,
    )  # fmt: skip
    loss, grads = train_step_grads(packed, batch, seed=3)
    # the same random draws in the same order, so the same dropout masks
    loss_eager, grads_eager = train_step_grads(eager, batch, seed=3)
    chain = encoder_chain(packed.config, ids.shape[1], heads=True)
    # the loss: a mean of cross-entropies over the vocabulary (a sum of v exponentials)
    torch.testing.assert_close(
        loss, loss_eager, **float32_tolerance(loss_eager, chain + len(vocab))
    )
    grad_chain = 2 * chain + len(vocab) + ids.numel()
    for mine, theirs in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(mine, theirs, **float32_tolerance(theirs, grad_chain))
    # and another seed gives other masks
    assert not torch.equal(train_step_grads(packed, batch, seed=4)[0], loss)


@pytest.mark.parametrize("training", [True, False])
def test_last_block_computes_only_what_the_heads_read(training: bool) -> None:
    vocab = make_vocab()
    model = tiny_model(vocab, dropout=0.0, attention_dropout=0.0).train(training)
    unpruned = TrackingBert(model.config, prune_last_block=False).train(training)
    unpruned.load_state_dict(model.state_dict())
    ids, types, attn = make_batch(vocab, batch=8)
    masked, labels = mask_some(ids, attn, vocab)
    pair = torch.arange(8) % 2
    out = model(masked, types, attn, labels=labels, pair_labels=pair)
    assert out.hidden_states is None  # nobody reads them in training
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # the same losses from the full encoder output
    hidden = model.encode(masked, types, attn)  # every position
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    logits = model.mlm_head(hidden[rows, cols], model.embedding_table())
    pair_logits = model.pair_head(hidden)
    full_loss = torch.nn.functional.cross_entropy(
        logits, labels[rows, cols]
    ) + torch.nn.functional.binary_cross_entropy_with_logits(pair_logits, pair.float())
    full_loss.backward()
    chain = encoder_chain(model.config, ids.shape[1], heads=True) + len(vocab)
    torch.testing.assert_close(out.loss, full_loss, **float32_tolerance(full_loss, chain))
    for mine, full in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(mine, full, **float32_tolerance(full, 2 * chain + ids.numel()))
    # ...and from the model told not to prune
    other = unpruned(masked, types, attn, labels=labels, pair_labels=pair)
    torch.testing.assert_close(other.loss, out.loss, **float32_tolerance(out.loss, chain))


def test_dropout_multiplier_rate_scale_and_seed() -> None:
    shape = (1000, 1000)
    torch.manual_seed(0)
    keep = dropout_multiplier(shape, 0.05, torch.float32)
    assert keep.shape == shape and keep.dtype == torch.float32
    p = round(0.05 * 2**16) / 2**16  # the rate, rounded to 16 bits
    assert sorted(keep.unique().tolist()) == [0.0, pytest.approx(1 / (1 - p))]
    dropped = keep == 0
    sigma = (p * (1 - p) / dropped.numel()) ** 0.5
    assert abs(dropped.float().mean().item() - p) < 5 * sigma
    # no structure between neighbours: columns drop at the same rate
    assert dropped.float().mean(0).std().item() < 1.2 * (p * (1 - p) / shape[0]) ** 0.5
    torch.manual_seed(0)
    assert torch.equal(dropout_multiplier(shape, 0.05, torch.float32), keep)  # seeded by torch
    assert not torch.equal(dropout_multiplier(shape, 0.05, torch.float32), keep)

    x = torch.ones(shape)
    y = dropout(x, 0.2, training=True)
    kept = y != 0
    scale = 1 / (1 - round(0.2 * 2**16) / 2**16)  # the rate rounded to 16 bits, as above
    # the same quotient, rounded once to float32 either way: equal to the last bit
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], scale), atol=0, rtol=EPS32)
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    assert dropout(x, 0.2, training=False) is x


@pytest.mark.parametrize("rng", ["sfc64", "torch"])
def test_dropout_module_with_either_generator(rng: str) -> None:
    module = Dropout(0.25, rng)  # type: ignore[arg-type]
    torch.manual_seed(0)
    y = module(torch.ones(400, 500))
    assert abs((y == 0).float().mean().item() - 0.25) < 0.01
    assert torch.all((y == 0) | (y == 1 / 0.75))
    keep = module.multiplier((400, 500), torch.float32)
    assert abs((keep == 0).float().mean().item() - 0.25) < 0.01
    assert module.eval()(y) is y


def test_unknown_backend_names_are_refused() -> None:
    config = TrackingBertConfig.preset("tiny", vocab_size=50)
    with pytest.raises(InputError, match="attention 'flash' is unknown"):
        TrackingBert(config, attention="flash")
    with pytest.raises(InputError, match="dropout_rng 'mt' is unknown"):
        TrackingBert(config, dropout_rng="mt")


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_at_chosen_positions(backend: str) -> None:
    vocab = make_vocab()
    torch.manual_seed(0)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(vocab))
    model = TrackingBert(config, attention=backend).eval()
    ids, types, attn = make_batch(vocab, batch=8)
    b, t = ids.shape
    full = model.encode(ids, types, attn).reshape(b * t, -1)
    padded = int((~attn).reshape(-1).nonzero()[0])
    at = torch.tensor([5, 0, t + 3, 5, padded, b * t - t])  # any order, repeats, padding
    with torch.no_grad():
        rows = model.encode(ids, types, attn, at=at)
    expected = full[at].detach()
    chain = encoder_chain(config, t)
    torch.testing.assert_close(rows, expected, **float32_tolerance(expected, chain))
    assert torch.all(rows[4] == 0)
