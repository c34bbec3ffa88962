"""Our encoder and masked-module head equal transformers' BertForPreTraining with copied weights."""

from __future__ import annotations

import pytest
import torch

from tracklm.models import TrackingBert, TrackingBertConfig

from .rounding import encoder_chain, float32_tolerance

transformers = pytest.importorskip(
    "transformers", reason="transformers is the reference BERT for this test"
)


def hf_config(config: TrackingBertConfig, hidden_act: str = "gelu") -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=hidden_act,  # "gelu": exact erf GELU, as ours
        max_position_embeddings=config.max_length,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def hf_state_dict(model: TrackingBert) -> dict[str, torch.Tensor]:
    """Our weights under transformers' names (the fused q/k/v projection split in three)."""
    ours = model.state_dict()
    d = model.config.hidden_size
    out = {
        "bert.embeddings.word_embeddings.weight": ours["embeddings.token.weight"],
        "bert.embeddings.position_embeddings.weight": ours["embeddings.position.weight"],
        "bert.embeddings.token_type_embeddings.weight": ours["embeddings.segment.weight"],
        "bert.embeddings.LayerNorm.weight": ours["embeddings.norm.weight"],
        "bert.embeddings.LayerNorm.bias": ours["embeddings.norm.bias"],
        "bert.pooler.dense.weight": ours["pair_head.pooler.weight"],
        "bert.pooler.dense.bias": ours["pair_head.pooler.bias"],
        "cls.predictions.transform.dense.weight": ours["mlm_head.dense.weight"],
        "cls.predictions.transform.dense.bias": ours["mlm_head.dense.bias"],
        "cls.predictions.transform.LayerNorm.weight": ours["mlm_head.norm.weight"],
        "cls.predictions.transform.LayerNorm.bias": ours["mlm_head.norm.bias"],
        "cls.predictions.decoder.weight": ours["embeddings.token.weight"],
        "cls.predictions.decoder.bias": ours["mlm_head.bias"],
        "cls.predictions.bias": ours["mlm_head.bias"],
    }
    for i in range(model.config.num_layers):
        ours_prefix, hf = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = ours[f"{ours_prefix}attention.qkv.{kind}"].split(d)
            out[f"{hf}attention.self.query.{kind}"] = q
            out[f"{hf}attention.self.key.{kind}"] = k
            out[f"{hf}attention.self.value.{kind}"] = v
            out[f"{hf}attention.output.dense.{kind}"] = ours[f"{ours_prefix}attention.out.{kind}"]
            out[f"{hf}attention.output.LayerNorm.{kind}"] = ours[
                f"{ours_prefix}attention_norm.{kind}"
            ]
            out[f"{hf}intermediate.dense.{kind}"] = ours[f"{ours_prefix}feed_forward.up.{kind}"]
            out[f"{hf}output.dense.{kind}"] = ours[f"{ours_prefix}feed_forward.down.{kind}"]
            out[f"{hf}output.LayerNorm.{kind}"] = ours[f"{ours_prefix}output_norm.{kind}"]
    return out


def reference_with_weights_of(
    ours: TrackingBert, hidden_act: str = "gelu"
) -> transformers.BertForPreTraining:
    reference = transformers.BertForPreTraining(hf_config(ours.config, hidden_act)).eval()
    state = hf_state_dict(ours)
    missing = (
        set(reference.state_dict())
        - set(state)
        - {"cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    )
    assert not missing, f"unmapped transformers weights: {sorted(missing)}"
    reference.load_state_dict(state, strict=False)
    return reference


@pytest.fixture(scope="module")
def ours() -> TrackingBert:
    torch.manual_seed(0)
    config = TrackingBertConfig.preset(
        "small", vocab_size=300, num_layers=2, dropout=0.0, attention_dropout=0.0
    )
    model = TrackingBert(config).eval()
    with torch.no_grad():  # move every weight off its initial value, LayerNorms and biases included
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 300, (5, 19), generator=g)
    types = (torch.arange(19) >= 9).long().expand(5, 19).clone()
    lengths = torch.tensor([19, 15, 12, 10, 19])
    attn = torch.arange(19)[None, :] < lengths[:, None]
    ids[~attn] = 0
    types[~attn] = 0
    return ids, types, attn


def test_hidden_states_and_mlm_logits_match_transformers(ours: TrackingBert) -> None:
    reference = reference_with_weights_of(ours)
    ids, types, attn = inputs()
    with torch.no_grad():
        mine = ours(ids, types, attn)
        theirs = reference(
            input_ids=ids,
            token_type_ids=types,
            attention_mask=attn.long(),
            output_hidden_states=True,
        )
        pooled = reference.bert(
            input_ids=ids, token_type_ids=types, attention_mask=attn.long()
        ).pooler_output
    real = attn
    chain = encoder_chain(ours.config, ids.shape[1])
    expected = theirs.hidden_states[-1][real]
    torch.testing.assert_close(
        mine.hidden_states[real], expected, **float32_tolerance(expected, chain)
    )
    chain_heads = encoder_chain(ours.config, ids.shape[1], heads=True)
    expected = theirs.prediction_logits[real]
    torch.testing.assert_close(
        mine.mlm_logits[real], expected, **float32_tolerance(expected, chain_heads)
    )
    expected_pair = ours.pair_head.classifier(pooled).squeeze(-1)
    # the pooler and classifier: two more sums over d
    pair_chain = chain + 2 * ours.config.hidden_size
    torch.testing.assert_close(
        mine.pair_logits, expected_pair, **float32_tolerance(expected_pair, pair_chain)
    )
    # the check has teeth: the logits are not trivially equal (e.g. all near zero)
    assert mine.mlm_logits.std() > 0.1


def test_tolerance_tells_exact_gelu_from_its_tanh_approximation(ours: TrackingBert) -> None:
    """The float32 tolerance above is tight enough to catch a small change of the model."""
    reference = reference_with_weights_of(ours, hidden_act="gelu_pytorch_tanh")
    ids, types, attn = inputs()
    with torch.no_grad():
        mine = ours(ids, types, attn).mlm_logits[attn]
        theirs = reference(
            input_ids=ids, token_type_ids=types, attention_mask=attn.long()
        ).prediction_logits[attn]
    chain_heads = encoder_chain(ours.config, ids.shape[1], heads=True)
    assert not torch.allclose(mine, theirs, **float32_tolerance(theirs, chain_heads))
