"""Step-by-step decoding (issue 14): the key/value cache gives the model's own numbers, and each
strategy does what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tracklm.errors import InputError
from tracklm.generate.decode import DecodeOptions, complete
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.decoding import CausalDecoder, KVCache
from tracklm.models.inputs import module_geometry_table


def build(data: Path, objective: str, inputs: str = "tokens", seed: int = 3) -> TrackingBert:
    dataset = open_dataset(data)
    torch.manual_seed(seed)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(dataset.vocab), objective=objective, inputs=inputs
    )
    model = TrackingBert(config)
    if config.reads_geometry:
        model.set_module_geometry(module_geometry_table(dataset.frames()))
    model.vocab = dataset.vocab
    return model.eval()


def seeds(data: Path, n: int = 12, k: int = 3):
    split = open_dataset(data).split("test")
    tokens = np.array(split.tokens[:n], dtype=np.int64)
    hits = np.array(split.hits[:n], dtype=np.float32)
    return tokens, np.asarray(split.lengths[:n]), hits, np.full(n, k)


def full_sequence_logits(model: TrackingBert, ids: torch.Tensor, hits: torch.Tensor | None):
    with torch.no_grad():
        return model.heads_at(ids, None, None, pair=False, hits=hits).mlm_logits  # (b, t, v)


@pytest.mark.parametrize("inputs", ["tokens", "hits"])
def test_the_cache_gives_the_models_own_outputs(toy_data: Path, inputs: str) -> None:
    model = build(toy_data, "next-module", inputs)
    vocab = model.vocab
    assert vocab is not None
    tokens, _, hits, _ = seeds(toy_data)
    b, length = tokens.shape[0], 6
    ids = torch.cat([torch.full((b, 1), vocab.cls_id), torch.as_tensor(tokens[:, :length])], 1)
    grid = torch.full((b, length + 1, 3), float("nan"))
    grid[:, 1:] = torch.as_tensor(hits[:, :length])
    expected = full_sequence_logits(model, ids, grid if inputs == "hits" else None)
    decoder, cache = CausalDecoder(model), KVCache()
    for t in range(length + 1):
        hidden = decoder.step(ids[:, t], cache, grid[:, t])
        torch.testing.assert_close(decoder.logits(hidden), expected[:, t], rtol=1e-4, atol=1e-4)
    assert cache.length == length + 1
    # a prefix in one pass, then one token: the same numbers
    decoder, cache = CausalDecoder(model), KVCache()
    hidden = decoder.step(ids[:, :4], cache, grid[:, :4])
    torch.testing.assert_close(decoder.logits(hidden), expected[:, 3], rtol=1e-4, atol=1e-4)
    hidden = decoder.step(ids[:, 4], cache, grid[:, 4])
    torch.testing.assert_close(decoder.logits(hidden), expected[:, 4], rtol=1e-4, atol=1e-4)


def naive_greedy(model: TrackingBert, tokens: np.ndarray, k: int, max_hits: int):
    """Greedy completion by re-encoding the whole sequence each step (no cache)."""
    vocab = model.vocab
    assert vocab is not None
    out = []
    for row in tokens:
        seq = [vocab.cls_id, *row[:k].tolist()]
        while len(seq) - 1 < max_hits:
            logits = full_sequence_logits(model, torch.tensor([seq]), None)[0, -1].clone()
            special = [i for i in range(vocab.num_special) if i != vocab.sep_id]
            logits[special] = -torch.inf
            logits[torch.tensor(seq[1:])] = -torch.inf
            choice = int(logits.argmax())
            if choice == vocab.sep_id:
                break
            seq.append(choice)
        out.append(seq[1:])
    return out


def test_greedy_completion_matches_re_encoding_every_step(toy_data: Path) -> None:
    model = build(toy_data, "next-module")
    tokens, _, _, k = seeds(toy_data, n=6)
    got = complete(model, model.vocab, tokens, k, None, DecodeOptions(max_hits=8))
    expected = naive_greedy(model, tokens, 3, 8)
    for row, seq in enumerate(expected):
        assert got.lengths[row] == len(seq)
        assert got.tokens[row, : len(seq)].tolist() == seq
        assert np.all(got.tokens[row, len(seq) :] == 0)


@pytest.mark.parametrize("objective", ["next-module", "masked"])
def test_every_strategy_keeps_the_seeds_and_the_rules(toy_data: Path, objective: str) -> None:
    model = build(toy_data, objective)
    vocab = model.vocab
    assert vocab is not None
    tokens, _, _, k = seeds(toy_data)
    for strategy in ("greedy", "beam", "sample"):
        out = complete(model, vocab, tokens, k, None, DecodeOptions(strategy=strategy, max_hits=7))
        assert out.tokens.shape == (len(tokens), 7)
        np.testing.assert_array_equal(out.tokens[:, :3], tokens[:, :3])
        assert np.all((out.lengths >= 3) & (out.lengths <= 7))
        for row, n in zip(out.tokens, out.lengths, strict=True):
            track = row[:n]
            assert np.all(track >= vocab.num_special)
            assert len(set(track.tolist())) == n  # no module twice
            assert np.all(row[n:] == vocab.pad_id)
        assert out.positions_mm is None


def test_beam_of_width_one_is_greedy_and_wider_beams_find_likelier_tracks(toy_data: Path) -> None:
    model = build(toy_data, "next-module", seed=11)
    tokens, _, _, k = seeds(toy_data, n=16)
    greedy = complete(model, model.vocab, tokens, k, None, DecodeOptions(score=True))
    beam1 = complete(model, model.vocab, tokens, k, None, DecodeOptions("beam", beam_width=1))
    np.testing.assert_array_equal(beam1.tokens, greedy.tokens)
    np.testing.assert_allclose(beam1.log_prob, greedy.log_prob, rtol=1e-9)
    wide = complete(model, model.vocab, tokens, k, None, DecodeOptions("beam", beam_width=6))
    assert np.all(wide.log_prob >= greedy.log_prob - 1e-6)
    assert np.mean(wide.log_prob) > np.mean(greedy.log_prob)


def test_the_log_probability_is_the_models(toy_data: Path) -> None:
    """The reported log-probability of a sampled track is the sum of the model's (after the
    rules) over its generated modules and its end."""
    model = build(toy_data, "next-module")
    vocab = model.vocab
    assert vocab is not None
    tokens, _, _, k = seeds(toy_data, n=4)
    out = complete(model, vocab, tokens, k, None, DecodeOptions("sample", seed=2, score=True))
    for row in range(4):
        n = int(out.lengths[row])
        seq = [vocab.cls_id, *out.tokens[row, :n].tolist(), vocab.sep_id]
        logits = full_sequence_logits(model, torch.tensor([seq]), None)[0]
        total = 0.0
        for t in range(3, n + 1):  # position t (hit t - 1) predicts token t + 1
            total += float(torch.log_softmax(logits[t], -1)[seq[t + 1]])
        assert out.log_prob[row] == pytest.approx(total, abs=1e-4)


def test_sampling_is_reproducible_and_cold_sampling_is_greedy(toy_data: Path) -> None:
    model = build(toy_data, "next-module")
    tokens, _, _, k = seeds(toy_data)
    a = complete(model, model.vocab, tokens, k, None, DecodeOptions("sample", seed=5))
    b = complete(model, model.vocab, tokens, k, None, DecodeOptions("sample", seed=5))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    cold = complete(model, model.vocab, tokens, k, None, DecodeOptions("sample", temperature=1e-6))
    greedy = complete(model, model.vocab, tokens, k, None, DecodeOptions())
    np.testing.assert_array_equal(cold.tokens, greedy.tokens)
    top1 = complete(model, model.vocab, tokens, k, None, DecodeOptions("sample", top_k=1, seed=9))
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)


def test_unconditional_tracks_start_from_nothing(toy_data: Path) -> None:
    model = build(toy_data, "next-module")
    empty = np.zeros((50, 8), dtype=np.int64)
    out = complete(model, model.vocab, empty, np.zeros(50), None, DecodeOptions("sample"))
    assert np.all(out.lengths >= 0) and out.lengths.max() <= 8
    assert len({tuple(row) for row in out.tokens}) > 40  # draws, not one track repeated


def test_the_masked_model_stops_by_its_stop_score(toy_data: Path) -> None:
    model = build(toy_data, "masked")
    tokens, _, _, k = seeds(toy_data)
    never = complete(model, model.vocab, tokens, k, None, DecodeOptions(stop_score=1e-12))
    assert np.all(never.lengths == 8)
    always = complete(model, model.vocab, tokens, k, None, DecodeOptions(stop_score=1e6))
    assert np.all(always.lengths == 3)


@pytest.mark.parametrize("objective", ["next-module", "masked"])
def test_a_hits_model_places_each_generated_hit_on_its_module(
    toy_data: Path, objective: str
) -> None:
    model = build(toy_data, objective, "hits")
    tokens, _, hits, k = seeds(toy_data)
    with pytest.raises(InputError, match="reads hit positions"):
        complete(model, model.vocab, tokens, k, None, DecodeOptions())
    out = complete(model, model.vocab, tokens, k, hits, DecodeOptions(stop_score=0.01))
    assert out.positions_mm is not None
    np.testing.assert_array_equal(out.positions_mm[:, :3], hits[:, :3])
    frames = open_dataset(toy_data).frames()
    for row in range(len(tokens)):
        n = int(out.lengths[row])
        assert np.isfinite(out.positions_mm[row, :n]).all()
        assert np.isnan(out.positions_mm[row, n:]).all()
        for j in range(3, n):  # on the generated module's plane, within its outline
            local = frames.to_local(np.array([out.tokens[row, j]]), out.positions_mm[row, j][None])
            assert abs(local[0, 2]) < 1e-2


def test_bad_options_are_refused() -> None:
    with pytest.raises(InputError, match="--strategy: 'top' is not one of greedy, beam, sample"):
        DecodeOptions(strategy="top")
    with pytest.raises(InputError, match="--temperature must be positive"):
        DecodeOptions(temperature=0)
