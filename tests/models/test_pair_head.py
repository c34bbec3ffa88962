"""The pair head's two readings: ``cls`` (the paper's) and ``difference`` (score(B) - score(A))."""

from __future__ import annotations

import pytest
import torch

from tracklm.errors import InputError
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.heads import PairHead, in_batch_pair_loss

from .test_bert import make_batch, make_vocab, mask_some


def tiny(pair_head: str, **overrides) -> TrackingBert:
    vocab = make_vocab()
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(vocab), pair_head=pair_head, dropout=0.0,
        attention_dropout=0.0, **overrides,
    )  # fmt: skip
    return TrackingBert(config).eval()


def test_difference_reads_the_sep_ending_each_track():
    vocab = make_vocab()
    model = tiny("difference")
    input_ids, types, mask = make_batch(vocab, batch=5)
    b, t = input_ids.shape
    read = model.pair_positions(types, mask, b, t)
    flat = input_ids.reshape(-1)
    # the 2b positions are [SEP]s: A's (last of segment 0), then B's (last real token)
    assert read.shape == (2 * b,)
    assert (flat[read] == vocab.sep_id).all()
    rows = torch.arange(b) * t
    assert torch.equal(read[b:] - rows, mask.long().sum(1) - 1)
    assert (types.reshape(-1)[read[:b]] == 0).all() and (types.reshape(-1)[read[b:]] == 1).all()


def test_difference_logit_is_score_of_b_minus_score_of_a_in_both_paths():
    vocab = make_vocab()
    model = tiny("difference")
    input_ids, types, mask = make_batch(vocab, batch=6, seed=1)
    masked, labels = mask_some(input_ids, mask, vocab)
    with torch.no_grad():
        hidden = model.encode(masked, types, mask)  # (b, t, d)
        b, t = masked.shape
        read = model.pair_positions(types, mask, b, t)
        scores = model.pair_head.score(hidden.reshape(b * t, -1)[read])
        expected = scores[b:] - scores[:b]
        full = model(masked, types, mask).pair_logits  # every position
        pruned = model(masked, types, mask, labels=labels).pair_logits  # the last block pruned
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pruned, expected, rtol=1e-5, atol=1e-5)
    # both paths give the per-track scores the in-batch pair loss compares
    with torch.no_grad():
        for out in (model(masked, types, mask), model(masked, types, mask, labels=labels)):
            assert out.pair_scores is not None
            torch.testing.assert_close(out.pair_scores, scores, rtol=1e-5, atol=1e-5)
    assert tiny("cls")(masked, types, mask).pair_scores is None


def test_in_batch_pair_loss_asks_every_two_tracks():
    import torch.nn.functional as F

    scores = torch.tensor([0.0, 1.0, 2.0, -1.0])
    pt = torch.tensor([1.0, 2.0, 3.0, 0.5])
    # pairs i < j: logit score(j) - score(i), label pT(j) > pT(i)
    logits = torch.tensor([1.0, 2.0, -1.0, 1.0, -2.0, -3.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(in_batch_pair_loss(scores, pt), expected)
    # blocks of 2: only (0, 1) and (2, 3) are compared
    blocks = F.binary_cross_entropy_with_logits(logits[[0, 5]], labels[[0, 5]])
    torch.testing.assert_close(in_batch_pair_loss(scores, pt, block=2), blocks)
    # scores in the order of pT: the loss falls as their spread grows
    assert in_batch_pair_loss(10 * scores, pt) < in_batch_pair_loss(scores, pt)
    assert in_batch_pair_loss(-scores, pt) > in_batch_pair_loss(scores, pt)


def test_cls_reads_one_token_and_old_configs_mean_cls(tmp_path):
    vocab = make_vocab()
    model = tiny("cls")
    input_ids, types, mask = make_batch(vocab, batch=4)
    b, t = input_ids.shape
    assert torch.equal(model.pair_positions(types, mask, b, t), torch.arange(b) * t)
    # the same weights read as a difference head give other logits: the option does something
    other = tiny("difference")
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(
            model(input_ids, types, mask).pair_logits, other(input_ids, types, mask).pair_logits
        )
    other.save_pretrained(tmp_path / "m", vocab)
    assert TrackingBert.from_pretrained(tmp_path / "m").config.pair_head == "difference"
    assert TrackingBertConfig.from_dict({"vocab_size": 50}).pair_head == "cls"


def test_bad_pair_head_refused_and_task_heads_stay_plain():
    with pytest.raises(
        InputError, match=r"pair_head: 'mean' is not one of \['cls', 'difference'\]"
    ):
        TrackingBertConfig.preset("tiny", pair_head="mean")
    config = TrackingBertConfig.preset("tiny", pair_head="difference")
    assert not PairHead(config, num_outputs=1).difference  # a task's head reads one summary
    with pytest.raises(ValueError, match="one output"):
        PairHead(config, num_outputs=2, difference=True)
