"""``run_simulate`` / ``tracklm simulate`` and ``simulate_events``: files, reproducibility, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.cli import main
from tracklm.config import from_dict
from tracklm.detector.geometry import Detector
from tracklm.errors import InputError
from tracklm.io.trackml import PART_COLUMNS, Event, list_events, read_event, write_event
from tracklm.simulate.config import SimulationConfig
from tracklm.simulate.event import run_simulate, simulate_event, simulate_events

EVENT_FILES = [
    f"event00000000{i}-{part}.csv.gz" for i in (1, 2) for part in ("hits", "particles", "truth")
]


def _tables(event: Event) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The hits, particles and truth of an event read with every part (the reader's default)."""
    assert isinstance(event.hits, pd.DataFrame)
    assert isinstance(event.particles, pd.DataFrame)
    assert isinstance(event.truth, pd.DataFrame)
    assert set(event.hits.columns) == set(PART_COLUMNS["hits"])
    return event.hits, event.particles, event.truth


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "events"
    run_simulate(out, detector="trackml", events=2, pileup=10.0, seed=7)
    return out


def test_writes_a_trackml_directory(simulated: Path) -> None:
    assert list_events(simulated) == [1, 2]
    assert {p.name for p in simulated.iterdir()} == {"detectors.csv", "manifest.json", *EVENT_FILES}
    event = read_event(simulated, 2)
    hits, particles, truth = _tables(event)
    assert len(hits) > 100
    assert set(particles.columns) == {*PART_COLUMNS["particles"], "particle_type"}
    assert set(truth.columns) == {*PART_COLUMNS["truth"], "weight"}
    # one truth row per hit; every hit belongs to a simulated particle or is noise (id 0)
    np.testing.assert_array_equal(truth["hit_id"].to_numpy(), hits["hit_id"].to_numpy())
    np.testing.assert_array_equal(hits["hit_id"].to_numpy(), np.arange(1, len(hits) + 1))
    signal = truth["particle_id"].to_numpy() != 0
    assert np.isin(truth["particle_id"].to_numpy()[signal], particles["particle_id"]).all()
    counts = truth["particle_id"][signal].value_counts()
    nhits = particles.set_index("particle_id")["nhits"]
    np.testing.assert_array_equal(nhits.reindex(counts.index).to_numpy(), counts.to_numpy())
    geometry = Detector.from_csv(simulated / "detectors.csv")
    assert len(geometry) == len(Detector.load("trackml"))
    rows = geometry.rows(hits["volume_id"], hits["layer_id"], hits["module_id"])
    # Through the CSV (7 significant digits) hits stay on their modules.
    assert geometry.contains(
        rows, hits[["x", "y", "z"]].to_numpy(np.float64), tolerance_mm=5e-3
    ).all()
    manifest = json.loads((simulated / "manifest.json").read_text())
    assert manifest["stage"] == "simulate" and manifest["config"]["seed"] == 7
    assert set(EVENT_FILES) <= set(manifest["files"])


def test_the_manifest_records_the_pileup_inside_the_simulation_config(simulated: Path) -> None:
    config = json.loads((simulated / "manifest.json").read_text())["config"]
    assert set(config) == {"events", "seed", "simulation"} and config["events"] == 2
    simulation = config["simulation"]
    assert simulation["mean_pileup_collisions"] == 10.0
    # the manifest's config rebuilds the run's SimulationConfig
    rebuilt = from_dict(SimulationConfig, simulation)
    assert rebuilt == SimulationConfig(mean_pileup_collisions=10.0)


def test_library_entry_points_give_the_verbs_events(simulated: Path, tmp_path: Path) -> None:
    config = SimulationConfig(mean_pileup_collisions=10.0)
    direct = simulate_events(tmp_path / "direct", config, detector="trackml", events=2, seed=7)
    for name in ["detectors.csv", *EVENT_FILES]:
        assert (direct / name).read_bytes() == (simulated / name).read_bytes(), name
    # event 2 in memory is the directory's event 2
    event = simulate_event(Detector.load("trackml"), 2, seed=7, config=config)
    single = tmp_path / "single"
    single.mkdir()
    write_event(single, 2, hits=event.hits, particles=event.particles, truth=event.truth)
    for part in ("hits", "particles", "truth"):
        name = f"event000000002-{part}.csv.gz"
        assert (single / name).read_bytes() == (simulated / name).read_bytes(), name


def test_same_seed_gives_identical_bytes(simulated: Path, tmp_path: Path) -> None:
    again = run_simulate(tmp_path / "again", detector="trackml", events=2, pileup=10.0, seed=7)
    other = run_simulate(tmp_path / "other", detector="trackml", events=2, pileup=10.0, seed=8)
    for name in ["detectors.csv", *EVENT_FILES]:
        assert (again / name).read_bytes() == (simulated / name).read_bytes(), name
    assert (other / EVENT_FILES[0]).read_bytes() != (simulated / EVENT_FILES[0]).read_bytes()


def test_detector_path_and_cli(real_detectors_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "real"
    status = main(
        [
            "simulate",
            "--out",
            str(out),
            "--detector",
            str(real_detectors_csv),
            "--events",
            "1",
            "--pileup",
            "3",
            "--seed",
            "1",
        ]
    )
    assert status == 0
    hits, _, _ = _tables(read_event(out, 1))
    assert len(hits) > 100  # three collisions' worth of particles, and noise
    real = Detector.from_csv(real_detectors_csv)
    rows = real.rows(hits["volume_id"], hits["layer_id"], hits["module_id"])
    assert np.all(rows >= 0)
    xyz = hits[["x", "y", "z"]].to_numpy(np.float64)
    assert real.contains(rows, xyz, tolerance_mm=5e-3).all()  # through the CSV, as above


def test_bad_detector_is_an_input_error_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"no-such\.csv"):
        run_simulate(out, detector=tmp_path / "no-such.csv", events=1, pileup=1.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("volume_id,layer_id\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        run_simulate(out, detector=bad, events=1, pileup=1.0)
    assert main(["simulate", "--out", str(out), "--detector", str(bad), "--events", "1"]) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_options_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--pileup"):
        run_simulate(tmp_path / "x", pileup=-1.0)
    with pytest.raises(InputError, match="--events"):
        run_simulate(tmp_path / "x", events=0)
    with pytest.raises(InputError, match="mean_pileup_collisions"):
        SimulationConfig(mean_pileup_collisions=float("nan"))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_workers_do_not_change_the_files(simulated: Path, tmp_path: Path) -> None:
    parallel = run_simulate(
        tmp_path / "parallel", detector="trackml", events=2, pileup=10.0, seed=7, workers=2
    )
    for name in ["detectors.csv", *EVENT_FILES]:
        assert (parallel / name).read_bytes() == (simulated / name).read_bytes(), name


def _primary_vertex_z(events: Path, event_id: int) -> np.ndarray:
    particles = _tables(read_event(events, event_id))[1]
    primary = np.hypot(particles["vx"], particles["vy"]) < 1.0
    return np.unique(particles["vz"].to_numpy()[primary])


def test_a_list_of_vertex_spreads_is_cycled_over_the_events(
    simulated: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cycled"
    argv = ["simulate", "--out", str(out), "--events", "4", "--pileup", "10", "--seed", "7"]
    assert main([*argv, "--vertex-sigma-z", "6,60", "--workers", "2"]) == 0
    # Event k uses the spread (k - 1) mod 2; the first spread is the default, so event 1 is
    # the default run's event 1, byte for byte.
    name = EVENT_FILES[0]
    assert (out / name).read_bytes() == (simulated / name).read_bytes()
    narrow = np.concatenate([_primary_vertex_z(out, k) for k in (1, 3)])
    wide = np.concatenate([_primary_vertex_z(out, k) for k in (2, 4)])
    assert len(narrow) > 10 and len(wide) > 10
    # About 20 vertices each: their spreads lie near 6 and 60 mm, ten times apart.
    assert 3.0 < np.std(narrow) < 10.0 and 35.0 < np.std(wide) < 90.0
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["simulation"]["vertex_sigma_z_mm"] == 6.0
    assert config["cycled"] == {"vertex_sigma_z_mm": [6.0, 60.0]}


@pytest.mark.parametrize("value", ["-1", "6,abc", "inf"])
def test_a_bad_vertex_spread_exits_2_and_writes_nothing(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    try:  # argparse exits on what it parses; the verb returns 2 on what it checks
        status = main(["simulate", "--out", str(out), "--events", "1", "--vertex-sigma-z", value])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    assert "--vertex-sigma-z" in capsys.readouterr().err.splitlines()[-1]
    assert not out.exists()
