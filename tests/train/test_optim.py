"""Optimiser: no weight decay on norms, biases and embeddings; warm-up then linear decay."""

from __future__ import annotations

import itertools

import pytest
import torch

from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.train.optim import build_optimizer, parameter_groups, warmup_linear_decay


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = TrackingBert(TrackingBertConfig.preset("tiny", vocab_size=50))
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[i] for i in ids}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert not ids & {id(p) for p in no_decay["params"]}
    assert all(n.endswith("weight") and "norm" not in n and "embeddings" not in n for n in decayed)
    assert "embeddings.token.weight" in undecayed  # tied with the masked-module decoder
    assert "mlm_head.bias" in undecayed
    assert any("norm" in n for n in undecayed)
    assert "blocks.0.attention.qkv.weight" in decayed


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    factor = warmup_linear_decay(warmup_steps=10, total_steps=110)
    values = [factor(s) for s in range(111)]
    assert values[0] == pytest.approx(1 / 11)
    assert all(b > a for a, b in itertools.pairwise(values[:11]))  # rising during warm-up
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.5)
    assert values[110] == 0.0
    model = torch.nn.Linear(3, 3)
    optimizer, schedule = build_optimizer(
        model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=10, total_steps=110
    )
    assert isinstance(optimizer, torch.optim.AdamW)
    for _ in range(60):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)


def test_parts_train_at_their_own_learning_rates():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    groups = parameter_groups(model[:2], 0.01, lr=1e-4) + parameter_groups(model[2], 0.01, lr=1e-3)
    groups += parameter_groups(frozen, 0.01, lr=5.0)  # no trainable parameter: dropped
    assert all(group["lr"] == 1e-4 for group in groups[:2])
    optimizer, schedule = build_optimizer(
        model, lr=1.0, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=0, total_steps=10,
        groups=groups,
    )  # fmt: skip
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-4, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0, 0.01, 0.0]
    for _ in range(5):
        optimizer.step()
        schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-5, 5e-5, 5e-4, 5e-4])


def test_decay_start_moves_the_decay_line_and_not_the_warm_up():
    factor = warmup_linear_decay(warmup_steps=10, total_steps=110, decay_start=-90)
    assert factor(4) == pytest.approx(5 / 11)  # the warm-up is the same
    assert factor(10) == pytest.approx(0.5) and factor(60) == pytest.approx(0.25)
    assert factor(110) == 0.0
    assert warmup_linear_decay(10, 110, decay_start=None)(60) == warmup_linear_decay(10, 110)(60)


def test_decay_start_must_lie_below_the_last_step():
    from tracklm.errors import InputError
    from tracklm.train.config import PretrainConfig

    with pytest.raises(InputError, match="decay_start must lie below max_steps"):
        PretrainConfig(max_steps=100, decay_start=100)
