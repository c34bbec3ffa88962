"""The ``next-module`` objective (issue 14): causal attention, next-token targets, save/load and
resume, with the checks the masked model has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tracklm.data.batches import PairBatches
from tracklm.data.masking import IGNORE_INDEX, MaskSchedule
from tracklm.data.sequences import encode_pairs, next_module_targets, place_hits
from tracklm.errors import InputError
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.inputs import module_geometry_table


def build(
    data: Path, inputs: str = "tokens", seed: int = 5, dropout: float = 0.0, attention: str = "auto"
) -> TrackingBert:
    dataset = open_dataset(data)
    torch.manual_seed(seed)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(dataset.vocab), objective="next-module", inputs=inputs,
        dropout=dropout, attention_dropout=dropout,
    )  # fmt: skip
    model = TrackingBert(config, attention=attention)
    if config.reads_geometry:
        model.set_module_geometry(module_geometry_table(dataset.frames()))
    model.vocab = dataset.vocab
    return model


def pairs(data: Path, n: int = 6):
    dataset = open_dataset(data)
    split = dataset.split("test")
    tokens, lengths = np.asarray(split.tokens[:n]), np.asarray(split.lengths[:n])
    partner = np.roll(np.arange(n), 1)
    encoded = encode_pairs(tokens, lengths, tokens[partner], lengths[partner], dataset.vocab, 19)
    hits = np.asarray(split.hits[:n])
    placed = place_hits(encoded, hits, lengths, hits[partner], lengths[partner])
    return dataset, encoded, placed


@pytest.mark.parametrize("attention", ["eager", "sdpa", "packed"])
def test_position_t_never_sees_t_plus_one(toy_data: Path, attention: str) -> None:
    """Step by step: changing every token (and hit) after t leaves the outputs at t and before
    bit-identical, for each attention backend (packed: the training path, gradients on)."""
    dataset, encoded, placed = pairs(toy_data)
    model = build(toy_data, "hits", attention=attention)
    model.train(attention == "packed")
    ids = torch.as_tensor(encoded.input_ids)
    mask = torch.as_tensor(encoded.attention_mask)
    hits = torch.as_tensor(placed)
    generator = torch.Generator().manual_seed(0)
    width = ids.shape[1]
    base = model.encode(ids, attention_mask=mask, hits=hits)
    for t in range(width - 1):
        changed_ids = ids.clone()
        changed_ids[:, t + 1 :] = torch.randint(
            dataset.vocab.num_special, len(dataset.vocab), (ids.shape[0], width - t - 1),
            generator=generator,
        )  # fmt: skip
        changed_hits = hits.clone()
        changed_hits[:, t + 1 :] += 50.0
        out = model.encode(changed_ids, attention_mask=mask, hits=changed_hits)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
        # and the change does reach the next position (the check can fail)
        real_next = mask[:, t + 1]
        if bool(real_next.any()):
            assert not torch.equal(out[real_next, t + 1], base[real_next, t + 1])


def test_the_masked_model_is_not_causal(toy_data: Path) -> None:
    """The same check on the paper's model fails: its first position sees the whole track."""
    dataset, encoded, _ = pairs(toy_data)
    config = TrackingBertConfig.preset("tiny", vocab_size=len(dataset.vocab), dropout=0.0)
    model = TrackingBert(config).eval()
    ids = torch.as_tensor(encoded.input_ids)
    mask = torch.as_tensor(encoded.attention_mask)
    changed = ids.clone()
    changed[:, 2] = dataset.vocab.num_special + 3
    with torch.no_grad():
        a = model.encode(ids, attention_mask=mask)[:, 0]
        b = model.encode(changed, attention_mask=mask)[:, 0]
    assert not torch.equal(a, b)


def test_next_module_targets_shift_by_one_and_end_with_sep(toy_data: Path) -> None:
    dataset, encoded, placed = pairs(toy_data)
    labels, hit_labels = next_module_targets(encoded, placed)
    ids, real = encoded.input_ids, encoded.attention_mask
    for row in range(ids.shape[0]):
        n = int(real[row].sum())
        np.testing.assert_array_equal(labels[row, : n - 1], ids[row, 1:n])
        assert np.all(labels[row, n - 1 :] == IGNORE_INDEX)
        # the last hit of track A predicts its [SEP]
        last_a = int(encoded.offset_b[row]) - 2
        assert labels[row, last_a] == dataset.vocab.sep_id
    assert hit_labels is not None
    np.testing.assert_array_equal(hit_labels[:, :-1], placed[:, 1:])
    assert np.isnan(hit_labels[:, -1]).all()


def test_training_batches_of_the_causal_objective(toy_data: Path) -> None:
    """No [MASK], every position labelled with the next token, every hit position visible."""
    dataset = open_dataset(toy_data)
    batches = PairBatches(
        toy_data / "train", dataset.vocab, batch_size=8, seed=3, pairing="event",
        pair_task="pt", mask_schedule=MaskSchedule((0.5,), ()), hits=True, next_module=True,
    )  # fmt: skip
    batch = batches[1]
    assert not bool((batch["input_ids"] == dataset.vocab.mask_id).any())
    real = batch["attention_mask"]
    labelled = batch["labels"] != IGNORE_INDEX
    assert torch.equal(labelled.sum(1), real.sum(1) - 1)
    module = batch["input_ids"] >= dataset.vocab.num_special
    assert bool(torch.isfinite(batch["hits"][module]).all())
    assert "pair_labels" in batch


def test_masked_heads_of_a_causal_model_predict_from_the_position_before(toy_data: Path) -> None:
    """``masked_heads`` at position p reads row p - 1, so it never sees the token at p."""
    dataset, encoded, _ = pairs(toy_data)
    model = build(toy_data).eval()
    ids = torch.as_tensor(encoded.input_ids)
    mask = torch.as_tensor(encoded.attention_mask)
    positions = torch.tensor([[0, 3], [1, 2], [2, 4]])
    with torch.no_grad():
        heads = model.masked_heads(ids, None, mask, positions)
        full = model.heads_at(ids, None, mask, pair=False).mlm_logits  # (b, t, v)
        changed = ids.clone()
        changed[positions[:, 0], positions[:, 1]] = dataset.vocab.mask_id
        again = model.masked_heads(changed, None, mask, positions)
    expected = full[positions[:, 0], positions[:, 1] - 1]
    torch.testing.assert_close(heads.mlm_logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again.mlm_logits, heads.mlm_logits, rtol=0, atol=0)


def test_the_pair_head_of_a_causal_model_reads_the_last_token(toy_data: Path) -> None:
    dataset, encoded, _ = pairs(toy_data)
    model = build(toy_data).eval()
    ids = torch.as_tensor(encoded.input_ids)
    mask = torch.as_tensor(encoded.attention_mask)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        changed = ids.clone()
        changed[:, 2] = dataset.vocab.num_special + 1  # a hit of track A
        moved = model(changed, attention_mask=mask)
    assert out.hidden_states is not None
    last = mask.long().sum(1) - 1
    expected = model.pair_head.classify(out.hidden_states[torch.arange(ids.shape[0]), last])
    torch.testing.assert_close(out.pair_logits, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.pair_logits, moved.pair_logits)


def test_a_causal_model_round_trips_through_its_directory(toy_data: Path, tmp_path: Path) -> None:
    dataset, encoded, placed = pairs(toy_data)
    model = build(toy_data, "hits").eval()
    model.save_pretrained(tmp_path / "model", dataset.vocab)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["objective"] == "next-module"
    loaded = TrackingBert.from_pretrained(tmp_path / "model")
    assert loaded.config.causal
    ids = torch.as_tensor(encoded.input_ids)
    mask = torch.as_tensor(encoded.attention_mask)
    hits = torch.as_tensor(placed)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, hits=hits).mlm_logits
        b = loaded(ids, attention_mask=mask, hits=hits).mlm_logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_model_directory_without_an_objective_is_the_papers(toy_data: Path) -> None:
    """Model directories written before the objective existed load as masked models."""
    config = TrackingBertConfig.from_dict({"vocab_size": 50})
    assert config.objective == "masked" and not config.causal
    with pytest.raises(InputError, match=r"objective: 'next' is not one of"):
        TrackingBertConfig.from_dict({"vocab_size": 50, "objective": "next"})


def test_pretrain_and_resume_a_causal_model(toy_data: Path, tmp_path: Path) -> None:
    """The loss falls over a short run; resume continues it; another objective is refused."""
    from tracklm.train.pretrain import run_pretrain

    run = run_pretrain(
        toy_data, tmp_path / "run", preset="tiny", max_steps=30, objective="next-module"
    )
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["objective"] == "next-module"
    with pytest.raises(InputError, match=r"--objective: .* objective 'next-module', not 'masked'"):
        run_pretrain(toy_data, run, resume=True, max_steps=40, objective="masked")
    run_pretrain(toy_data, run, resume=True, max_steps=40)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 40
    # next-module accuracy (logged as masked_accuracy) far above chance (1 / vocabulary)
    assert metrics["val"]["masked_accuracy"] > 100 / config["vocab_size"]


def test_an_unknown_objective_is_refused_before_a_run_exists(
    toy_data: Path, tmp_path: Path
) -> None:
    from tracklm.train.pretrain import run_pretrain

    with pytest.raises(InputError, match="--objective: 'gpt' is not one of masked, next-module"):
        run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_steps=2, objective="gpt")
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_the_unmasked_protocol_for_a_causal_model(
    toy_data: Path, tmp_path: Path
) -> None:
    """The unmasked protocol shows the hit to be predicted; a causal model never reads it, so
    the protocol measures nothing there: refused in one line, no report left behind."""
    from tracklm.cli import main

    model = build(toy_data)
    model.save_pretrained(tmp_path / "model", open_dataset(toy_data).vocab)
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(toy_data),
                 "--out", str(out), "--protocol", "unmasked"])  # fmt: skip
    assert code == 2 and not out.exists()
    from tracklm.evaluate.report import run_evaluate

    metrics = run_evaluate(tmp_path / "model", toy_data, out, max_tracks=20)
    assert metrics["model_objective"] == "next-module" and out.is_dir()
    assert "predicts each hidden hit from the hits before it" in (out / "report.md").read_text()
