"""The finder's candidates as labelled examples, the candidate scorer's fine-tuning
(``tracklm finetune --task candidates``) and its use by ``tracklm find --method model``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm import cli
from tracklm.find.candidates import (
    N_FEATURES,
    candidate_features,
    collect_candidates,
    finder_setup,
    label_candidates,
    split_events,
    unique_candidates,
)
from tracklm.find.config import DEFAULT_ROUNDS, TRIPLE_KINDS, FinderConfig, SeedRound
from tracklm.io.trackml import list_events
from tracklm.tasks.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
FAST = FinetuneConfig(batch_size=64, max_steps=6, val_every=3, warmup_steps=1, val_tracks=300,
                      eval_tracks=400, eval_batch_size=256, accelerator="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def four_events(toy_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first four toy events (low pile-up): two to train on, one each for val and test."""
    root = tmp_path_factory.mktemp("candidates") / "events"
    root.mkdir()
    keep = tuple(f"event00000000{k}-" for k in range(1, 5))
    for path in toy_events.iterdir():
        if path.name.startswith(keep) or not path.name.startswith("event"):
            shutil.copy(path, root / path.name)
    return root


@pytest.fixture(scope="module")
def scorer_run(
    four_events: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("candidates") / "run"
    try:
        finetune("candidates", tiny_model, four_events, out, FAST, seed=3)
    finally:
        torch.set_num_threads(threads)
    return out


def random_candidates(n_event: int, n: int, length: int, chi2: np.ndarray, seed: int):
    """``n`` candidates of ``length`` distinct random hits of an event of ``n_event`` hits."""
    from tracklm.find.extend import TrackCandidates

    table = np.full((n, 32), -1, dtype=np.int64)
    table[:, :length] = np.random.default_rng(seed).choice(n_event, size=(n, length), replace=False)
    return TrackCandidates(
        hits=table, n_hits=np.full(n, length), anchors=table[:, length - 3 : length],
        seed=table[:, :3], z0_mm=np.zeros(n), visited=np.zeros(n, np.int64),
        missed=np.zeros(n, np.int64), chi2=chi2, active=np.zeros(n, bool),
    )  # fmt: skip


def test_labels_follow_the_double_majority_rule() -> None:
    particle = np.array([0, 7, 7, 7, 8, 8, 0, 0, 9, 9])  # hit index -> particle (0: noise)
    hits = np.array(
        [
            [1, 2, 3, 4, -1],  # 3 of 4 from particle 7: real; hit 4 is not 7's
            [1, 2, 4, 5, -1],  # 2 of 4: not more than half, not real
            [0, 6, 7, 1, -1],  # noise is the majority: not real
            [8, 9, 1, -1, -1],  # 2 of 3 from 9: real
        ]
    )
    n = np.array([4, 4, 4, 3])
    ordered = hits[:, :3]  # the first three shown
    real, good = label_candidates(ordered, n, particle, hits)
    assert real.tolist() == [True, False, False, True]
    assert good.tolist() == [
        [True, True, True],
        [False, False, False],
        [False, False, False],
        [True, True, False],
    ]


def test_copies_of_a_candidate_are_one_whatever_the_order_of_their_hits() -> None:
    hits = np.array([[5, 3, 9, -1], [3, 9, 5, -1], [3, 9, 5, 11], [9, 3, 5, 2]])
    n = np.array([3, 3, 4, 4])
    first, inverse = unique_candidates(hits, n)
    assert len(first) == 3
    assert inverse[0] == inverse[1] and len({inverse[1], inverse[2], inverse[3]}) == 3
    assert (first[inverse][[0, 1]] == first[inverse[0]]).all()


def test_features_name_the_round_and_the_fit() -> None:
    free = SeedRound("consecutive", 0.2, 4, beamline=False)
    f = candidate_features(np.array([4, 10]), np.array([8.0, 0.0]), free)
    assert f.shape == (2, N_FEATURES) and f.dtype == np.float32
    assert f[0, 0] == pytest.approx(np.log1p(2.0)) and f[1, 0] == 0.0
    assert f[:, 1].tolist() == pytest.approx([0.4, 1.0])
    assert f[0, 2] == pytest.approx(0.5) and f[0, 3] == pytest.approx(0.4) and f[0, 4] == 0.0
    assert f[0, 5:].tolist() == [float(k == "consecutive") for k in TRIPLE_KINDS]
    assert candidate_features(np.array([5]), np.array([1.0]), DEFAULT_ROUNDS[0])[0, 4] == 1.0


def test_collected_candidates_carry_their_hits_and_the_truth(four_events: Path) -> None:
    from tracklm.find.hits import EventHits
    from tracklm.io.trackml import event_path, read_part

    layers, b_field_t, _ = finder_setup(four_events)
    found = collect_candidates(four_events, [1], layers, FinderConfig(), b_field_t, width=8)
    assert len(found) > 50 and (found.event == 1).all()
    assert found.module_ids.shape == (len(found), 8, 3) and found.features.shape[1] == N_FEATURES
    # at low pile-up nearly every candidate is a track, and its shown hits are its particle's
    assert found.real.mean() > 0.9
    shown = found.module_ids[..., 0] >= 0
    assert (shown.sum(1) == np.minimum(found.n_hits, 8)).all()
    assert found.good[shown & found.real[:, None]].mean() > 0.95
    assert not found.good[~found.real].any()
    # the positions are the event's hits, ordered outwards, on the modules recorded
    hits, _ = EventHits.from_table(
        read_part(event_path(four_events, 1, "hits"), "hits"), layers, "hits"
    )
    truth = read_part(event_path(four_events, 1, "truth"), "truth")
    at = {tuple(np.round(p, 3)): i for i, p in enumerate(hits.xyz_mm)}
    row = int(np.flatnonzero(found.real & (found.n_hits <= 8))[0])  # every hit shown
    index = [at[tuple(np.round(p, 3))] for p in found.xyz_mm[row][shown[row]].astype(np.float64)]
    assert (hits.module_ids[index] == found.module_ids[row][shown[row]]).all()
    radius = np.linalg.norm(hits.xyz_mm[index], axis=1)
    assert (np.diff(radius) >= 0).all()
    particle = pd.Series(truth.particle_id.to_numpy(), index=truth.hit_id.to_numpy())
    pids = particle[hits.hit_id[index]].to_numpy()
    major = pd.Series(pids).mode()[0]
    assert ((pids == major) == found.good[row][shown[row]]).all() and major != 0


def test_events_split_by_event_and_too_few_are_refused() -> None:
    assert split_events([1, 2, 3], "d") == {"train": [1], "val": [2], "test": [3]}
    split = split_events(list(range(1, 31)), "d")
    assert split["test"] == [28, 29, 30] and split["val"] == [27] and len(split["train"]) == 26
    with pytest.raises(Exception, match="at least 3 events"):
        split_events([1, 2], "d")


def test_finetuning_on_candidates_writes_a_scorer_with_its_references(scorer_run: Path) -> None:
    metrics = json.loads((scorer_run / "metrics.json").read_text())
    assert metrics["task"] == "candidates" and metrics["events"] == {
        "train": [1, 2], "val": [3], "test": [4]
    }  # fmt: skip
    for block in (metrics["metrics"], metrics["baselines"]["helix"], metrics["zero_shot"]):
        assert block["n_candidates"] == metrics["n_test_examples"] > 0
        assert set(block) >= {"auc", "efficiency_at_fpr_1pct", "hit_accuracy"}
    head = json.loads((scorer_run / "model" / "head.json").read_text())
    assert head["task"] == "candidates"


@pytest.mark.usefixtures("one_torch_thread")
def test_find_orders_and_vetoes_candidates_with_the_scorer(
    four_events: Path, scorer_run: Path, tmp_path: Path
) -> None:
    import dataclasses

    from tracklm.detector.geometry import Detector
    from tracklm.find.finder import helix_quality
    from tracklm.find.model import model_method
    from tracklm.find.run import run_find

    manifest = run_find(
        four_events, tmp_path / "tracks", method="model", model=scorer_run / "model"
    )
    assert manifest["model"]["task"] == "candidates"
    assert len(list((tmp_path / "tracks").glob("event*-tracks.csv"))) == 4
    # the quality is the helix's plus the weighted logit, -inf below the veto
    method, _ = model_method(scorer_run / "model", Detector.builtin("trackml"), (7, 8, 9))
    layers, _, _ = finder_setup(four_events)
    from tracklm.find.hits import EventHits
    from tracklm.io.trackml import event_path, read_part

    hits, _ = EventHits.from_table(
        read_part(event_path(four_events, 4, "hits"), "hits"), layers, "hits"
    )
    tracks = random_candidates(len(hits), 6, 5, np.linspace(0, 10, 6), seed=0)
    seed_round = DEFAULT_ROUNDS[0]
    keep = dataclasses.replace(
        FinderConfig(), model_scorer_veto=-np.inf, model_scorer_weight=1.0,
        model_scorer_bad_weight=0.0,
    )  # fmt: skip
    base = helix_quality(tracks, hits, keep, seed_round)
    once = method.quality(tracks, hits, keep, seed_round)
    twice = method.quality(
        tracks, hits, dataclasses.replace(keep, model_scorer_weight=2.0), seed_round
    )
    logit = once - base
    assert np.isfinite(logit).all() and np.ptp(logit) > 0
    assert twice - base == pytest.approx(2 * logit, abs=1e-5)
    # the hits it expects not to be the particle's lower the quality: between 0 and 5 of them
    cleaner = method.quality(
        tracks, hits, dataclasses.replace(keep, model_scorer_bad_weight=1.0), seed_round
    )
    assert ((once - cleaner) > 0).all() and ((once - cleaner) < 5).all()
    veto = dataclasses.replace(keep, model_scorer_veto=float(np.median(logit)))
    dropped = method.quality(tracks, hits, veto, seed_round) == -np.inf
    assert (dropped == (logit < np.median(logit))).all()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("data", "events with truth"),  # a prepared dataset is no event directory
        ("two", "at least 3 events"),
        ("no-truth", "truth"),
    ],
)
def test_bad_candidate_data_exits_2_with_one_line(
    data: str,
    message: str,
    four_events: Path,
    toy_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if data == "data":
        source = toy_data
    else:
        source = tmp_path / data
        source.mkdir()
        for path in four_events.iterdir():
            two = data == "two" and path.name.startswith(("event000000003", "event000000004"))
            if two or (data == "no-truth" and "-truth" in path.name):
                continue
            shutil.copy(path, source / path.name)
    assert list_events(source) or data == "data"
    argv = ["finetune", "--task", "candidates", "--model", str(tiny_model), "--data", str(source),
            "--out", str(tmp_path / "run"), "--max-steps", "2"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_find_refuses_a_model_fine_tuned_for_another_task(
    four_events: Path, toy_data: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "holes"
    finetune("holes", tiny_model, toy_data, run, FAST)
    argv = ["find", "--events", str(four_events), "--out", str(tmp_path / "tracks"),
            "--method", "model", "--model", str(run / "model")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task holes" in err, err


def test_a_hits_model_is_shown_the_positions_of_a_candidates_hits(four_events: Path) -> None:
    from tracklm.detector.geometry import Detector
    from tracklm.detector.vocab import ModuleVocab
    from tracklm.tasks.candidates import candidate_examples

    layers, b_field_t, _ = finder_setup(four_events)
    found = collect_candidates(four_events, [2], layers, FinderConfig(), b_field_t, width=6)
    vocab = ModuleVocab.from_detector(Detector.builtin("trackml"), (7, 8, 9))
    with_hits = candidate_examples(found, vocab, reads_hits=True)
    tokens_only = candidate_examples(found, vocab, reads_hits=False)
    assert "hits" not in tokens_only.inputs and tokens_only.hits is None
    shown = np.minimum(found.n_hits, 6)
    hits = with_hits.inputs["hits"]  # (N, 8, 3): [CLS], six hits, [SEP]
    assert hits.shape == (len(found), 8, 3)
    inside = np.arange(8)[None, :] - 1 < shown[:, None]
    inside[:, 0] = False
    np.testing.assert_array_equal(hits[inside], found.xyz_mm[:, :6][np.arange(6) < shown[:, None]])
    assert np.isnan(hits[~inside]).all()
    ids = with_hits.inputs["input_ids"]
    assert (ids[:, 0] == vocab.cls_id).all()
    assert (ids[np.arange(len(found)), shown + 1] == vocab.sep_id).all()
    assert (with_hits.inputs["features"] == found.features).all()
    assert with_hits.labels["real"].tolist() == found.real.astype(np.float32).tolist()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_scorer_beside_a_pretrained_model_scores_while_the_model_steps(
    four_events: Path, scorer_run: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from tracklm.detector.geometry import Detector
    from tracklm.find.extend import helix_decider
    from tracklm.find.run import load_method, run_find

    detector, volumes = Detector.builtin("trackml"), (7, 8, 9)
    both, record = load_method("model", tiny_model, detector, volumes, scorer_run / "model")
    alone, _ = load_method("model", scorer_run / "model", detector, volumes)
    pretrained, _ = load_method("model", tiny_model, detector, volumes)
    assert record["scorer"]["task"] == "candidates" and "task" not in record
    assert alone.decider is helix_decider and both.decider is not helix_decider
    # the same quality as the scorer alone, not the pre-trained model's
    from tracklm.find.hits import EventHits
    from tracklm.io.trackml import event_path, read_part

    layers, _, _ = finder_setup(four_events)
    hits, _ = EventHits.from_table(
        read_part(event_path(four_events, 3, "hits"), "hits"), layers, "hits"
    )
    tracks = random_candidates(len(hits), 4, 6, np.ones(4), seed=1)
    config, seed_round = FinderConfig(), DEFAULT_ROUNDS[2]
    expected = alone.quality(tracks, hits, config, seed_round)
    np.testing.assert_array_equal(both.quality(tracks, hits, config, seed_round), expected)
    assert not np.array_equal(pretrained.quality(tracks, hits, config, seed_round), expected)
    manifest = run_find(
        four_events, tmp_path / "tracks", method="model", model=tiny_model,
        scorer=scorer_run / "model",
    )  # fmt: skip
    assert manifest["model"]["scorer"]["task"] == "candidates"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scorer", "{scorer}"], "--scorer: only --method model"),
        (["--method", "model", "--model", "{scorer}", "--scorer", "{scorer}"], "already a candidate scorer"),
        (["--method", "model", "--model", "{model}", "--scorer", "{model}"], "head.json"),
        (["--method", "model", "--model", "{model}", "--scorer", "{scorer}", "--short-veto", "0.3"],
         "--short-veto"),
        (["--method", "model", "--model", "{scorer}", "--short-veto", "0.3"], "--short-veto"),
    ],
)  # fmt: skip
def test_bad_scorer_options_exit_2_with_one_line(
    arguments: list[str],
    message: str,
    four_events: Path,
    scorer_run: Path,
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"scorer": scorer_run / "model", "model": tiny_model}
    argv = ["find", "--events", str(four_events), "--out", str(tmp_path / "tracks"),
            *(a.format(**names) for a in arguments)]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "tracks").exists()
