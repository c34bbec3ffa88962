"""The CPU training fast paths of TrackingBert compute what the plain ops compute.

- ``PackedAttention`` (hand-written backward) against autograd and the generic attention path;
- the last block computing only the positions the heads read;
- ``dropout_multiplier`` (16-bit masks from a seeded SFC64 stream): rate, scale, reproducibility.
"""

from __future__ import annotations

import pytest
import torch

from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models import bert as bert_module
from tracklm.models.bert import PackedAttention, TokenLayout, dropout, dropout_multiplier

from .test_bert import make_batch, make_vocab, mask_some


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

    torch.testing.assert_close(packed(qkv), reference_attention(qkv, layout, h, keep))
    assert torch.autograd.gradcheck(packed, (qkv,))


def train_step_grads(model, batch, seed):
    torch.manual_seed(seed)
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("padding", [True, False])
def test_packed_attention_path_trains_like_the_generic_path(monkeypatch, padding: bool) -> None:
    vocab = make_vocab()
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(vocab), dropout=0.1, attention_dropout=0.2
    )
    model = TrackingBert(config).train()
    ids, types, attn = make_batch(vocab, batch=8)
    if not padding:
        attn = torch.ones_like(attn)
    masked, labels = mask_some(ids, attn, vocab)
    batch = dict(
        input_ids=masked, token_type_ids=types, attention_mask=attn, labels=labels,
        pair_labels=torch.arange(8) % 2,
    )  # fmt: skip
    loss, grads = train_step_grads(model, batch, seed=3)
    monkeypatch.setattr(bert_module, "PACKED_ATTENTION", False)
    # the same random draws in the same order, so the same dropout masks
    loss_generic, grads_generic = train_step_grads(model, batch, seed=3)
    torch.testing.assert_close(loss, loss_generic)
    for mine, theirs in zip(grads, grads_generic):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)
    # and another seed gives other masks
    assert not torch.equal(train_step_grads(model, batch, seed=4)[0], loss)


@pytest.mark.parametrize("training", [True, False])
def test_last_block_computes_only_what_the_heads_read(training: bool) -> None:
    vocab = make_vocab()
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(vocab), dropout=0.0, attention_dropout=0.0
    )
    model = TrackingBert(config).train(training)
    ids, types, attn = make_batch(vocab, batch=8)
    masked, labels = mask_some(ids, attn, vocab)
    pair = torch.arange(8) % 2
    out = model(masked, types, attn, labels=labels, pair_labels=pair)
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
    torch.testing.assert_close(out.loss, full_loss)
    for mine, full in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(mine, full, atol=1e-6, rtol=1e-5)

    read = labels != -100
    read[:, 0] = True
    torch.testing.assert_close(out.hidden_states[read], hidden[read].detach())
    assert torch.all(out.hidden_states[~read] == 0)


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
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - 0.2)))
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    assert dropout(x, 0.2, training=False) is x


@pytest.mark.parametrize("packed_attention", [True, False])
def test_packing_modes_give_the_same_outputs_and_gradients(monkeypatch, packed_attention) -> None:
    """Packed (scatter or gather) and unpacked encoders agree, outputs and weight gradients."""
    monkeypatch.setattr(bert_module, "PACKED_ATTENTION", packed_attention)
    vocab = make_vocab()
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(vocab), dropout=0.0, attention_dropout=0.0
    )
    model = TrackingBert(config).train()
    ids, types, attn = make_batch(vocab, batch=8)
    weights = torch.randn(8, ids.shape[1], config.hidden_size)
    results = {}
    for pack in (True, False, "gather"):
        model.zero_grad()
        hidden = model.encode(ids, types, attn, pack=pack)
        (hidden * weights).sum().backward()
        encoder = [*model.embeddings.parameters(), *model.blocks.parameters()]
        results[pack] = hidden.detach(), [p.grad.clone() for p in encoder]
    for pack in (False, "gather"):
        torch.testing.assert_close(results[pack][0], results[True][0], atol=1e-5, rtol=1e-5)
        for mine, ref in zip(results[pack][1], results[True][1]):
            torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-4)
    assert torch.all(results["gather"][0][~attn] == 0)  # padding stays zero


@pytest.mark.parametrize("pack", [True, False, "gather"])
def test_encode_at_chosen_positions(pack) -> None:
    vocab = make_vocab()
    torch.manual_seed(0)
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=len(vocab))).eval()
    ids, types, attn = make_batch(vocab, batch=8)
    b, t = ids.shape
    full = model.encode(ids, types, attn).reshape(b * t, -1)
    padded = int((~attn).reshape(-1).nonzero()[0])
    at = torch.tensor([5, 0, t + 3, 5, padded, b * t - t])  # any order, repeats, padding
    with torch.no_grad():
        rows = model.encode(ids, types, attn, pack=pack, at=at)
    torch.testing.assert_close(rows, full[at], atol=1e-5, rtol=1e-5)
    assert torch.all(rows[4] == 0)
