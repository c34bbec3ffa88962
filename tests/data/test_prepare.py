"""``tracklm prepare``: dataset layout, vocabulary, event splits, workers, errors, --tolerant."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm import cli
from tracklm.data.prepare import resolve_detector, run_prepare, split_events
from tracklm.data.tracks import SELECTIONS, extract_tracks
from tracklm.detector.geometry import Detector
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import SPLITS, TrackArrays, load_split, modules_table, open_dataset
from tracklm.io.trackml import read_event, write_part


def link_events(
    directory: Path, source_dir: Path, event_ids, detectors_csv: Path | None = None
) -> Path:
    """An event directory whose events are all links to the real event 1 (cheap to make)."""
    directory.mkdir(parents=True, exist_ok=True)
    for event_id in event_ids:
        for part in ("hits", "particles", "truth"):
            target = source_dir / f"event000000001-{part}.csv.gz"
            (directory / f"event{event_id:09d}-{part}.csv.gz").symlink_to(target)
    if detectors_csv is not None:
        (directory / "detectors.csv").symlink_to(detectors_csv)
    return directory


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory, real_event_dir: Path, real_detectors_csv: Path) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    run_prepare(real_event_dir, out, detector=str(real_detectors_csv))
    return out


# --------------------------------------------------------------------------- the real event
def test_real_event_dataset_layout_and_content(
    real_dataset: Path, real_event_dir: Path, real_detectors_csv: Path
) -> None:
    manifest = json.loads((real_dataset / "manifest.json").read_text())
    assert manifest["stage"] == "prepare"
    assert manifest["selection"] == "pixel-4to8" and manifest["order"] == "distance"
    assert manifest["events"] == {"train": [1], "val": [], "test": []}  # one event: all in train
    assert manifest["n_tracks"] == {"train": 268, "val": 0, "test": 0}
    assert manifest["config"]["selection"]["long_tracks"] == "drop"
    assert manifest["inputs"]["detector"]["name"] == str(real_detectors_csv)
    files = manifest["inputs"]["files"]
    assert (
        files["event000000001-hits.csv.gz"]["bytes"]
        == (real_event_dir / "event000000001-hits.csv.gz").stat().st_size
    )
    assert set(manifest["files"]) >= {
        "vocab.json",
        "modules.parquet",
        "train/tokens.npy",
        "test/lengths.npy",
    }

    dataset = open_dataset(real_dataset)
    detector = Detector.from_csv(real_detectors_csv)
    vocab = SELECTIONS["pixel-4to8"].vocab(detector)
    assert dataset.vocab == vocab and manifest["vocab_sha256"] == vocab.sha256
    pd.testing.assert_frame_equal(dataset.modules, modules_table(vocab, detector))
    train = dataset.split("train")
    event = read_event(real_event_dir, 1)
    expected = extract_tracks(
        event.hits, event.truth, event.particles, vocab, SELECTIONS["pixel-4to8"], event_id=1
    )
    for name in TrackArrays.DTYPES:
        np.testing.assert_array_equal(getattr(train, name), getattr(expected, name), err_msg=name)
    assert len(dataset.split("val")) == 0 and dataset.split("test").tokens.shape == (0, 8)


def test_vocabulary_is_the_same_in_every_prepare(
    real_dataset: Path, tmp_path: Path, real_event_dir: Path, real_detectors_csv: Path
) -> None:
    again = tmp_path / "again"
    run_prepare(real_event_dir, again, detector=str(real_detectors_csv), order="vertex", seed=5)
    assert (again / "vocab.json").read_bytes() == (real_dataset / "vocab.json").read_bytes()
    ids = Detector.from_csv(real_detectors_csv).ids
    from_geometry = ModuleVocab(ids[np.isin(ids[:, 0], [7, 8, 9])])
    assert json.loads((again / "manifest.json").read_text())["vocab_sha256"] == from_geometry.sha256


# --------------------------------------------------------------------------- splits
def test_split_events_rule() -> None:
    ids = list(range(100, 120))
    split = split_events(ids, 0.1, 0.2, seed=3)
    assert [len(split[name]) for name in SPLITS] == [14, 2, 4]
    assert sorted(i for ids_ in split.values() for i in ids_) == ids
    assert split == split_events(list(reversed(ids)), 0.1, 0.2, seed=3)  # input order irrelevant
    assert split != split_events(ids, 0.1, 0.2, seed=4)
    three = split_events([1, 2, 3], 0.1, 0.1, seed=0)  # round(0.3) = 0, raised to 1 each
    assert [len(three[name]) for name in SPLITS] == [1, 1, 1]
    assert split_events([1, 2, 3], 0.0, 0.1, seed=0)["val"] == []
    assert split_events([7], 0.4, 0.4, seed=0) == {"train": [7], "val": [], "test": []}
    assert len(split_events([1, 2, 3, 4], 0.5, 0.45, seed=0)["train"]) == 1  # training keeps one
    with pytest.raises(InputError, match="--val-fraction \\+ --test-fraction must be at most 1"):
        split_events(ids, 0.5, 0.6, seed=0)
    with pytest.raises(InputError, match="--test-fraction: must be in"):
        split_events(ids, 0.1, -0.1, seed=0)
    with pytest.raises(InputError, match="--val-fraction: must be in"):
        split_events(ids, 1.5, 0.0, seed=0)


def test_fractions_summing_to_one_leave_training_empty() -> None:
    """``--test-fraction 1`` makes every event a test event; fractions summing to 1 share them all."""
    ids = list(range(100, 120))
    assert split_events(ids, 0.0, 1.0, seed=0) == {"train": [], "val": [], "test": ids}
    assert split_events(ids, 1.0, 0.0, seed=0) == {"train": [], "val": ids, "test": []}
    assert split_events([5], 0.0, 1.0, seed=0) == {"train": [], "val": [], "test": [5]}
    shared = split_events(ids, 0.3, 0.7, seed=1)  # 0.3 + 0.7 is not exactly 1.0 in binary
    assert [len(shared[name]) for name in SPLITS] == [0, 6, 14]
    assert sorted(shared["val"] + shared["test"]) == ids
    three = split_events([1, 2, 3], 0.5, 0.5, seed=0)  # round(1.5) = 2 each: one taken back
    assert [len(three[name]) for name in SPLITS] == [0, 1, 2]


def test_split_by_event_disjoint_and_reproducible(
    tmp_path: Path, real_event_dir: Path, real_detectors_csv: Path
) -> None:
    events = link_events(tmp_path / "events", real_event_dir, range(1, 11), real_detectors_csv)
    first = run_prepare(events, tmp_path / "a", val_fraction=0.2, test_fraction=0.2, seed=7)
    second = run_prepare(events, tmp_path / "b", val_fraction=0.2, test_fraction=0.2, seed=7)
    other = run_prepare(events, tmp_path / "c", val_fraction=0.2, test_fraction=0.2, seed=8)
    assert first["events"] == second["events"] != other["events"]
    assert [len(first["events"][name]) for name in SPLITS] == [6, 2, 2]
    seen = {}
    for name in SPLITS:
        tracks = load_split(tmp_path / "a" / name)
        assert set(np.unique(tracks.event_id).tolist()) == set(first["events"][name])
        assert first["n_tracks"][name] == len(tracks) == 268 * len(first["events"][name])
        for event_id in first["events"][name]:
            assert seen.setdefault(event_id, name) == name
    assert sorted(seen) == list(range(1, 11))
    for name in TrackArrays.DTYPES:
        assert (tmp_path / "a" / "train" / f"{name}.npy").read_bytes() == (
            tmp_path / "b" / "train" / f"{name}.npy"
        ).read_bytes()


def test_workers_give_the_same_dataset(
    tmp_path: Path, real_event_dir: Path, real_detectors_csv: Path
) -> None:
    events = link_events(tmp_path / "events", real_event_dir, range(1, 8), real_detectors_csv)
    run_prepare(events, tmp_path / "one", selection="pixel-min4", workers=1)
    run_prepare(events, tmp_path / "two", selection="pixel-min4", workers=2)
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert one["files"] == two["files"]  # every output file byte-identical
    assert one["inputs"] == two["inputs"] and one["config"] == two["config"]


# --------------------------------------------------------------------------- detector choice
def test_detector_default_is_the_event_directory_csv_else_builtin(
    tmp_path: Path, real_event_dir: Path, real_detectors_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_csv = link_events(tmp_path / "with", real_event_dir, [1], real_detectors_csv)
    assert resolve_detector(with_csv, None).name == str(with_csv / "detectors.csv")
    assert resolve_detector(with_csv, str(real_detectors_csv)).name == str(real_detectors_csv)
    requested = []
    monkeypatch.setattr(
        Detector,
        "builtin",
        classmethod(lambda cls, name="trackml": requested.append(name) or "built-in"),
    )
    without = link_events(tmp_path / "without", real_event_dir, [1])
    assert resolve_detector(without, None) == "built-in" and requested == ["trackml"]
    assert resolve_detector(with_csv, "trackml") == "built-in"


# --------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def real_tables(real_event_dir: Path) -> dict[str, pd.DataFrame]:
    event = read_event(real_event_dir, 1)
    return {"hits": event.hits, "particles": event.particles, "truth": event.truth}


def bad_event_dir(
    tmp_path: Path, real_event_dir: Path, real_detectors_csv: Path, bad_id: int = 3
) -> Path:
    """Good events 1, 2, 4 (links) and event ``bad_id`` whose files the test writes."""
    return link_events(
        tmp_path / "events",
        real_event_dir,
        [i for i in (1, 2, 3, 4) if i != bad_id],
        real_detectors_csv,
    )


def write_bad(
    directory: Path, tables: dict[str, pd.DataFrame], event_id: int = 3, **changed
) -> None:
    for part in ("hits", "particles", "truth"):
        table = changed.get(part, tables[part])
        if table is not None:
            write_part(directory / f"event{event_id:09d}-{part}.csv", part, table)


def replace_field(path: Path, row: int, column: str, text: str) -> None:
    """Put ``text`` in data row ``row`` (1-based) of ``column`` of a CSV file."""
    lines = path.read_text().splitlines()
    index = lines[0].split(",").index(column)
    fields = lines[row].split(",")
    fields[index] = text
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def assert_fails_cleanly(events: Path, out: Path, pattern: str, **options) -> None:
    with pytest.raises(InputError, match=pattern) as info:
        run_prepare(events, out, **options)
    assert "\n" not in str(info.value)
    assert not out.exists() and leftovers(out.parent) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_hit_on_unknown_module_names_file_and_row(
    tmp_path, real_event_dir, real_detectors_csv, real_tables, workers
) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    hits = real_tables["hits"].copy()
    hits.loc[99, "module_id"] = 4242
    write_bad(events, real_tables, hits=hits)
    assert_fails_cleanly(
        events,
        tmp_path / "out",
        r"event000000003-hits\.csv: row 100: module \(\d+, \d+, 4242\).*not in the detector",
        workers=workers,
    )


def test_missing_column_names_file_and_column(
    tmp_path, real_event_dir, real_detectors_csv, real_tables
) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    write_bad(events, real_tables)
    path = events / "event000000003-particles.csv"
    table = pd.read_csv(path).drop(columns=["q"])
    table.to_csv(path, index=False)
    assert_fails_cleanly(
        events, tmp_path / "out", r"event000000003-particles\.csv: missing column 'q'"
    )


@pytest.mark.parametrize(("text", "what"), [("abc", "non-numeric"), ("", "empty"), ("nan", "NaN")])
def test_bad_value_names_file_row_and_column(
    tmp_path, real_event_dir, real_detectors_csv, real_tables, text, what
) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    write_bad(events, real_tables)
    replace_field(events / "event000000003-truth.csv", 17, "tx", text)
    assert_fails_cleanly(
        events, tmp_path / "out", r"event000000003-truth\.csv: row 17, column 'tx': not a number"
    )


def test_truncated_gzip_is_named(tmp_path, real_event_dir, real_detectors_csv) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    for part in ("hits", "particles"):
        (events / f"event000000003-{part}.csv.gz").symlink_to(
            real_event_dir / f"event000000001-{part}.csv.gz"
        )
    data = (real_event_dir / "event000000001-truth.csv.gz").read_bytes()
    (events / "event000000003-truth.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EOFError):
        gzip.decompress(data[: len(data) // 2])
    assert_fails_cleanly(
        events, tmp_path / "out", r"event000000003-truth\.csv\.gz: unreadable or truncated"
    )


def test_event_without_truth_file(
    tmp_path, real_event_dir, real_detectors_csv, real_tables
) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    write_bad(events, real_tables, truth=None)
    assert_fails_cleanly(
        events,
        tmp_path / "out",
        r"event000000003-truth\.csv\[\.gz\]: missing truth file for event 3",
    )


def test_empty_or_missing_event_directory(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no events here")
    assert_fails_cleanly(
        tmp_path / "empty", tmp_path / "out", r"empty: no events \(no eventNNNNNNNNN-hits"
    )
    assert_fails_cleanly(
        tmp_path / "nowhere", tmp_path / "out", r"nowhere: no such event directory"
    )


def test_existing_output_is_refused(tmp_path, real_event_dir, real_detectors_csv) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="output already exists"):
        run_prepare(real_event_dir, tmp_path / "out", detector=str(real_detectors_csv))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_tolerant_skips_and_records_bad_events(
    tmp_path, real_event_dir, real_detectors_csv, real_tables, caplog: pytest.LogCaptureFixture
) -> None:
    events = bad_event_dir(tmp_path, real_event_dir, real_detectors_csv)
    hits = real_tables["hits"].copy()
    hits.loc[5, "volume_id"] = 99
    write_bad(events, real_tables, hits=hits)
    for part in ("hits", "particles"):  # event 5 has no truth file
        (events / f"event000000005-{part}.csv.gz").symlink_to(
            real_event_dir / f"event000000001-{part}.csv.gz"
        )
    with caplog.at_level(logging.WARNING, logger="tracklm.data.prepare"):
        manifest = run_prepare(
            events, tmp_path / "out", val_fraction=0.0, test_fraction=0.0, tolerant=True
        )
    assert manifest["events"]["train"] == [1, 2, 4]
    assert manifest["n_tracks"]["train"] == 3 * 268
    skipped = {entry["event_id"]: entry["reason"] for entry in manifest["skipped_events"]}
    assert set(skipped) == {3, 5}
    assert "event000000003-hits.csv: row 6: module (99," in skipped[3]
    assert "missing truth file" in skipped[5]
    assert sum("skipping event" in record.message for record in caplog.records) == 2
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped_events"]
        == manifest["skipped_events"]
    )


def test_tolerant_with_only_bad_events_fails(
    tmp_path, real_event_dir, real_detectors_csv, real_tables
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    write_bad(events, real_tables, truth=None)
    with pytest.raises(InputError, match="all 1 events are bad"):
        run_prepare(events, tmp_path / "out", detector=str(real_detectors_csv), tolerant=True)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_exit_status_and_one_line_error(
    tmp_path, real_event_dir, real_detectors_csv, capsys
) -> None:
    status = cli.main(
        [
            "prepare",
            "--events",
            str(real_event_dir),
            "--out",
            str(tmp_path / "ok"),
            "--detector",
            str(real_detectors_csv),
            "--selection",
            "pixel-min4",
            "--order",
            "r",
        ]
    )
    assert status == 0
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert manifest["selection"] == "pixel-min4" and manifest["order"] == "r"
    assert np.load(tmp_path / "ok" / "train" / "tokens.npy").shape[1] == 12
    capsys.readouterr()
    status = cli.main(
        ["prepare", "--events", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("tracklm prepare: error: ")
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- memory
PEAK_SCRIPT = """
import resource, sys
import tracklm.manifest
# library_versions() imports torch (hundreds of MB); keep it out so the measurement shows events.
tracklm.manifest.library_versions = lambda: {}
from tracklm.data.prepare import run_prepare
run_prepare(sys.argv[1], sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(events: Path, out: Path) -> int:
    """Peak resident set size of a prepare run in a fresh process, in KiB."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(events), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[-1])


@pytest.mark.slow
def test_memory_stays_flat_from_100_to_1000_events(
    tmp_path, real_event_dir, real_detectors_csv
) -> None:
    few = link_events(tmp_path / "few", real_event_dir, range(1, 101), real_detectors_csv)
    many = link_events(tmp_path / "many", real_event_dir, range(1, 1001), real_detectors_csv)
    rss_few = peak_rss_kib(few, tmp_path / "out-few")
    rss_many = peak_rss_kib(many, tmp_path / "out-many")
    n_many = sum(
        json.loads((tmp_path / "out-many" / "manifest.json").read_text())["n_tracks"].values()
    )
    assert n_many == 1000 * 268
    # Keeping the 268,000 tracks (about 170 bytes each) in memory would add ~45 MiB; streaming adds
    # only the manifest's per-file records (~2 MiB) and allocator noise (measured: 166 -> 177 MiB).
    assert rss_many - rss_few < 24 * 1024, (rss_few, rss_many)


def test_a_detector_path_is_recorded_absolute_and_an_old_relative_one_found_beside_the_events(
    toy_events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """A dataset evaluated from another directory keeps its exact module frames (the helix
    baselines use them): a relative ``--detector`` is recorded resolved, and one recorded
    relative by an older version is found beside the events when its sha256 matches."""
    monkeypatch.chdir(toy_events.parent)
    out = tmp_path / "data"
    relative = f"{toy_events.name}/detectors.csv"
    run_prepare(toy_events.name, out, detector=relative, val_fraction=0.2, test_fraction=0.2)
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["inputs"]["detector"]["name"] == str((toy_events / "detectors.csv").resolve())
    monkeypatch.chdir(tmp_path)
    assert open_dataset(out).frames().exact
    manifest["inputs"]["detector"]["name"] = relative  # as older versions wrote it
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert open_dataset(out).frames().exact
    assert "guessing" not in caplog.text
    manifest["inputs"]["detector"]["sha256"] = "0" * 64  # another file of that name: not used
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert not open_dataset(out).frames().exact
    assert "not usable for module frames" in caplog.text
