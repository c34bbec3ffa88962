"""Task heads are the model's own head classes, and fine-tuning optimises through train/optim.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracklm.evaluate.masked import module_logits_only
from tracklm.io.dataset import open_dataset
from tracklm.models.bert import MaskedModuleHead, PairHead, TrackingBert
from tracklm.tasks import holes
from tracklm.tasks.common import (
    TaskContext,
    masked_module_logits_at,
    module_decoder,
    pretrained_module_decoder,
    single_inputs,
    top_k_modules,
    track_classifier,
)
from tracklm.tasks.finetune import TASKS, FinetuneConfig, FinetuneModule


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return TrackingBert.from_pretrained(tiny_model)


def test_track_classifier_is_the_pair_head_with_k_outputs(encoder):
    cls = torch.randn(3, encoder.config.hidden_size)
    one, two = track_classifier(encoder, 1), track_classifier(encoder, 2)
    assert isinstance(one, PairHead) and isinstance(two, PairHead)
    assert one.classify(cls).shape == (3,)
    assert two.classify(cls).shape == (3, 2)
    # with one output, the same computation as the pre-training pair head
    one.load_state_dict(encoder.pair_head.state_dict())
    torch.testing.assert_close(one.classify(cls), encoder.pair_head.classify(cls))


def test_module_decoders_are_masked_module_heads(encoder):
    config = encoder.config
    wide = module_decoder(encoder, in_features=2 * config.hidden_size)
    assert isinstance(wide, MaskedModuleHead)
    assert wide.norm.eps == config.layer_norm_eps
    x = torch.randn(4, 2 * config.hidden_size)
    assert wide(x, encoder.embedding_table()).shape == (4, config.vocab_size)
    copy = pretrained_module_decoder(encoder)
    hidden = torch.randn(4, config.hidden_size)
    torch.testing.assert_close(
        copy(hidden, encoder.embedding_table()),
        encoder.mlm_head(hidden, encoder.embedding_table()),
    )
    assert copy.bias.data_ptr() != encoder.mlm_head.bias.data_ptr()  # trained separately


def test_zero_shot_reads_the_pretrained_head_at_each_row_position(encoder, toy_data):
    context = TaskContext.from_dataset(open_dataset(toy_data))
    tracks = open_dataset(toy_data).split("test").take(slice(0, 9))
    vocab = context.vocab
    inputs = single_inputs(tracks.tokens, tracks.lengths, vocab, tracks.tokens.shape[1] + 2)
    positions = np.minimum(2, tracks.lengths)
    inputs["input_ids"][np.arange(9), positions] = vocab.mask_id
    top = masked_module_logits_at(
        encoder, inputs, positions, vocab.num_special, 4, lambda logits, _: top_k_modules(logits, 5)
    )
    with torch.no_grad():
        where = torch.as_tensor(np.stack([np.arange(9), positions], axis=1))
        logits = encoder.predict_masked(
            torch.as_tensor(inputs["input_ids"]),
            torch.as_tensor(inputs["token_type_ids"]),
            torch.as_tensor(inputs["attention_mask"]),
            where,
        )
    expected = module_logits_only(logits, vocab.num_special).topk(5, dim=-1).indices.numpy()
    np.testing.assert_array_equal(top.reshape(9, 5), expected)
    assert top.min() >= vocab.num_special


def _group_of(optimizer, parameter):
    (group,) = [g for g in optimizer.param_groups if any(p is parameter for p in g["params"])]
    return group


@pytest.mark.parametrize("mode", ["finetune", "frozen", "scratch"])
def test_finetune_optimiser_uses_bert_exclusions_and_per_part_rates(tiny_model, mode):
    encoder = TrackingBert.from_pretrained(tiny_model)
    head = holes.make_head(encoder)
    settings = FinetuneConfig(learning_rate=1e-3, encoder_learning_rate=2e-4, weight_decay=0.05)
    module = FinetuneModule(TASKS["holes"], encoder, head, mode, settings, total_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]
    norm = _group_of(optimizer, head.module.norm.weight)
    dense = _group_of(optimizer, head.module.dense.weight)
    assert (norm["weight_decay"], dense["weight_decay"]) == (0.0, 0.05)
    assert norm["initial_lr"] == dense["initial_lr"] == 1e-3
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(trained) == len({id(p) for p in trained})  # every parameter once
    if mode == "frozen":
        assert not any(p is encoder.embedding_table() for p in trained)
    else:
        embedding = _group_of(optimizer, encoder.embedding_table())
        assert embedding["weight_decay"] == 0.0
        expected = 2e-4 if mode == "finetune" else 1e-3
        assert embedding["initial_lr"] == expected
        matrix = next(
            p for n, p in encoder.named_parameters() if n.startswith("blocks.") and p.ndim == 2
        )
        group = _group_of(optimizer, matrix)
        assert (group["weight_decay"], group["initial_lr"]) == (0.05, expected)
