"""``tracklm score`` end to end: perfect and shuffled submissions, bad input, the real event's
weights, memory over many events."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm import cli
from tracklm.io.trackml import event_path, list_events, read_part
from tracklm.score.run import load_evaluated_event, run_score, score_events
from tracklm.score.submission import (
    submission_table,
    truth_submission,
    write_submission,
    write_truth_tracks,
)
from tracklm.score.trackml import trackml_weights

PIXEL = (7, 8, 9)


@pytest.fixture(scope="module")
def toy_tracks(toy_events: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Perfect and shuffled submissions of every toy event."""
    root = tmp_path_factory.mktemp("tracks")
    write_truth_tracks(toy_events, root / "perfect")
    rng = np.random.default_rng(0)
    for event_id in list_events(toy_events):
        truth = read_part(event_path(toy_events, event_id, "truth"), "truth")
        # random tracks of about 8 hits each: no structure left
        shuffled = rng.integers(1, len(truth) // 8 + 2, size=len(truth))
        write_submission(
            root / "shuffled", submission_table(event_id, truth["hit_id"].to_numpy(), shuffled)
        )
    return {"perfect": root / "perfect", "shuffled": root / "shuffled"}


def test_perfect_submission_scores_one_and_shuffled_near_zero(
    toy_events: Path, toy_tracks: dict[str, Path], tmp_path: Path
) -> None:
    perfect = run_score(toy_events, toy_tracks["perfect"], tmp_path / "perfect")
    assert perfect["pixel_trackml_score"] == pytest.approx(1.0)
    assert "trackml_score" not in perfect
    assert perfect["efficiency"] == perfect["efficiency_pt1"] == 1.0
    assert perfect["fake_rate"] == perfect["duplicate_rate"] == 0.0
    assert perfect["events"] == len(list_events(toy_events)) == len(perfect["per_event"])
    assert all(
        e["pixel_trackml_score"] == pytest.approx(1.0) for e in perfect["per_event"].values()
    )
    assert perfect["seconds_per_event"] is None  # the truth submission has no finder manifest
    assert sum(perfect["efficiency_vs_pt"]["particles"]) == perfect["counts"]["particles"] > 0

    assert set(perfect["score_losses"].values()) == {0.0}

    # the shuffled one without writing a report (the slow part): nearly everything lost, and
    # the losses and the score account for all the weight
    shuffled, _ = score_events(toy_events, toy_tracks["shuffled"], PIXEL)
    assert max(shuffled.scores) < 0.02
    lost = sum(shuffled.losses.values())
    assert lost + sum(shuffled.scores) == pytest.approx(len(shuffled.scores))
    assert shuffled.losses["not_found_split"] > 0.9 * lost
    assert shuffled.counts["found"] < 0.02 * shuffled.counts["particles"]
    assert shuffled.counts["fake"] > 0.98 * shuffled.counts["tracks"]

    out = tmp_path / "perfect"
    assert json.loads((out / "score.json").read_text()) == perfect
    assert {p.name for p in out.iterdir()} >= {
        "score.json",
        "report.md",
        "manifest.json",
        "efficiency_pt.png",
        "efficiency_eta.png",
        "event_display.png",
    }
    report = (out / "report.md").read_text()
    assert "| pixel_trackml_score (mean over events) | 1.0000 |" in report
    assert (
        "| particle not found: its hits split over tracks, none with more than half | 0.0000 |"
        in report
    )
    assert json.loads((out / "manifest.json").read_text())["stage"] == "score"


@pytest.fixture
def one_event(toy_events: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """One toy event in its own directory and its perfect submission (a private copy)."""
    event_id = list_events(toy_events)[0]
    events = tmp_path / "events"
    events.mkdir()
    for part in ("hits", "truth", "particles"):
        source = event_path(toy_events, event_id, part)
        shutil.copy(source, events / source.name)
    write_truth_tracks(events, tmp_path / "tracks")
    return events, tmp_path / "tracks", event_id


def _tracks_file(tracks: Path, event_id: int) -> Path:
    return tracks / f"event{event_id:09d}-tracks.csv"


def _score_cli(capsys, events: Path, tracks: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = cli.main(
        ["score", "--events", str(events), "--tracks", str(tracks), "--out", str(out), *extra]
    )
    return code, capsys.readouterr().err


def test_hits_outside_the_evaluated_volumes_may_be_absent(
    one_event, tmp_path: Path, capsys
) -> None:
    events, tracks, event_id = one_event
    path = _tracks_file(tracks, event_id)
    hits = read_part(event_path(events, event_id, "hits"), "hits")
    pixel_ids = hits["hit_id"][hits["volume_id"].isin(PIXEL)]
    table = pd.read_csv(path)
    table[table["hit_id"].isin(pixel_ids)].to_csv(path, index=False)
    assert run_score(events, tracks, tmp_path / "pixel")["pixel_trackml_score"] == pytest.approx(
        1.0
    )
    # scoring every volume needs every hit
    code, err = _score_cli(capsys, events, tracks, tmp_path / "all", "--volumes", "all")
    assert code == 2 and "no row for hit_id" in err and "every volume" in err
    assert not (tmp_path / "all").exists()


def test_all_volumes_give_the_trackml_score_and_the_finder_time(one_event, tmp_path: Path) -> None:
    events, tracks, _ = one_event
    (tracks / "manifest.json").write_text(
        json.dumps({"stage": "find", "seconds_per_event": 2.5, "seconds_per_stage": {"seed": 1.0}})
    )
    result = run_score(events, tracks, tmp_path / "score", volumes="all")
    assert result["trackml_score"] == pytest.approx(1.0)
    assert result["volumes"] == "all"
    assert result["seconds_per_event"] == 2.5
    assert "| finder: seed | 1 s |" in (tmp_path / "score" / "report.md").read_text()


def _edit_rows(path: Path, edit) -> None:
    table = pd.read_csv(path)
    edit(table).to_csv(path, index=False)


BAD_SUBMISSIONS = {
    "unknown hit": (
        lambda t: pd.concat([t, t.tail(1).assign(hit_id=t["hit_id"].max() + 1000)]),
        "is not a hit of event",
    ),
    "hit in two rows": (lambda t: pd.concat([t, t.iloc[[3]]]), "again (first in row 4)"),
    "hit in no row": (lambda t: t.drop(index=t.index[5]), "no row for hit_id"),
    "wrong event id": (
        lambda t: t.assign(event_id=t["event_id"].where(t.index != 2, 77)),
        "row 3: event_id 77",
    ),
    "fractional track id": (
        lambda t: t.assign(track_id=t["track_id"].astype(float).where(t.index != 6, 1.5)),
        "row 7, column 'track_id': 1.5 is not a whole number",
    ),
    "missing column": (lambda t: t.drop(columns="track_id"), "missing column 'track_id'"),
    # DBSCAN's "no cluster" label: scored, it would be one large track
    "negative track id": (
        lambda t: t.assign(track_id=t["track_id"].where(t.index != 4, -1)),
        "row 5, column 'track_id': -1 is not >= 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SUBMISSIONS))
def test_bad_submission_ends_with_one_line_naming_the_file(
    one_event, tmp_path: Path, capsys, case: str
) -> None:
    events, tracks, event_id = one_event
    edit, expected = BAD_SUBMISSIONS[case]
    path = _tracks_file(tracks, event_id)
    _edit_rows(path, edit)
    code, err = _score_cli(capsys, events, tracks, tmp_path / "score")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tracklm score: error: ")
    assert str(path) in err and expected in err, err
    assert not (tmp_path / "score").exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no tracks file", "no tracks file for event"),
        ("tracks of another event", "is not in"),
        ("bad volumes", "--volumes"),
        ("volume ids out of range", "--volumes: expected volume ids from 0 to"),
        ("volumes without hits", "no hit in --volumes 99"),
        ("lost hits file", "missing hits file for event"),
    ],
)
def test_missing_or_stray_tracks_files_and_bad_options(
    one_event, tmp_path: Path, capsys, case: str, expected: str
) -> None:
    events, tracks, event_id = one_event
    extra: list[str] = []
    if case == "no tracks file":
        _tracks_file(tracks, event_id).unlink()
    elif case == "tracks of another event":
        stray = pd.read_csv(_tracks_file(tracks, event_id)).assign(event_id=event_id + 1)
        write_submission(tracks, stray)
    elif case == "lost hits file":  # its tracks file must not read as another event's
        event_path(events, event_id, "hits").unlink()
    else:
        volumes = {
            "bad volumes": "7,pixel",
            "volume ids out of range": "7,99999999999",
            "volumes without hits": "99",
        }
        extra = ["--volumes", volumes[case]]
    code, err = _score_cli(capsys, events, tracks, tmp_path / "score", *extra)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "score").exists()


def test_recomputed_weights_match_the_real_truth_files_weight_column(real_event_dir: Path) -> None:
    """The real event's ``weight`` column, scoring every volume: our weights times one constant on
    every hit, except the hits of particles the detector simulation made (non-zero low 36 bits of
    ``particle_id``, vertices away from the beam line), which the file weighs 0 and the published
    definition does not single out."""
    event = load_evaluated_event(real_event_dir, 1, None)
    truth = read_part(event_path(real_event_dir, 1, "truth"), "truth").set_index("hit_id")
    file_weight = truth["weight"].reindex(event.hit_id).to_numpy(np.float64)
    ours = event.weight
    assert ours.sum() == pytest.approx(1.0)
    simulated = (event.particle_id & ((1 << 36) - 1)) != 0
    assert np.all(file_weight[simulated] == 0)
    assert ours[simulated].sum() > 0.01  # they do weigh something under the definition
    rest = ~simulated
    # The file is subsampled by particle, so its weights sum to what the kept particles had in the
    # whole event: equality holds up to one factor (and the file's 6 significant digits).
    factor = file_weight.sum() / ours[rest].sum()
    assert 0.01 < file_weight.sum() < 0.2
    assert np.allclose(file_weight[rest], factor * ours[rest], rtol=2e-5, atol=1e-11)

    # The challenge's order is |tz - vz|; distance from the origin reorders some hits.
    particles = read_part(event_path(real_event_dir, 1, "particles"), "particles")
    truth_rows = truth.reindex(event.hit_id)
    distance = np.sqrt(truth_rows[["tx", "ty", "tz"]].pow(2).sum(axis=1)).to_numpy()
    by_distance = trackml_weights(
        event.particle_id, distance, np.nan_to_num(event.pt_gev), event.hit_id
    )
    assert not np.allclose(file_weight[rest], factor * by_distance[rest], rtol=2e-5, atol=1e-11)
    assert len(particles) > 0


def test_memory_stays_flat_with_the_number_of_events(one_event, tmp_path: Path) -> None:
    """Scoring streams: the peak of Python-tracked memory over 12 copies of an event is that of 2."""
    events, tracks, event_id = one_event

    def copies(n: int) -> tuple[Path, Path]:
        root = tmp_path / f"copies{n}"
        for copy in range(1, n + 1):
            for part in ("hits", "truth", "particles"):
                source = event_path(events, event_id, part)
                target = source.name.replace(f"event{event_id:09d}", f"event{copy:09d}")
                (root / "events").mkdir(parents=True, exist_ok=True)
                shutil.copy(source, root / "events" / target)
            table = pd.read_csv(_tracks_file(tracks, event_id)).assign(event_id=copy)
            write_submission(root / "tracks", table)
        return root / "events", root / "tracks"

    peaks = {}
    for n in (2, 12):
        copy_events, copy_tracks = copies(n)
        tracemalloc.start()
        totals, _ = score_events(copy_events, copy_tracks, PIXEL)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(totals.per_event) == n
    assert peaks[12] < 1.2 * peaks[2], peaks


def test_truth_submission_leaves_noise_out(one_event) -> None:
    events, _, event_id = one_event
    truth = read_part(event_path(events, event_id, "truth"), "truth")
    table = truth_submission(event_id, truth)
    assert list(table.columns) == ["event_id", "hit_id", "track_id"]
    noise = truth["particle_id"].to_numpy() == 0
    assert noise.any() and np.all(table["track_id"].to_numpy()[noise] == 0)
