"""The magnetic field travels from ``simulate`` through ``prepare`` to the dataset and its users."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tracklm.data.prepare import events_magnetic_field, run_prepare
from tracklm.io.dataset import PreparedDataset, open_dataset
from tracklm.simulate.config import SimulationConfig
from tracklm.simulate.event import simulate_events
from tracklm.tasks import pt
from tracklm.tasks.common import TaskContext
from tracklm.tracking.constants import TRACKML_FIELD_TESLA

FIELD_T = 3.5


@pytest.fixture(scope="module")
def events_3p5t(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("field") / "events"
    config = SimulationConfig(magnetic_field_tesla=FIELD_T, mean_pileup_collisions=5.0)
    simulate_events(out, config, events=1, seed=3)
    return out


def test_a_dataset_simulated_in_another_field_records_it(events_3p5t: Path, tmp_path: Path) -> None:
    run_prepare(events_3p5t, tmp_path / "data", val_fraction=0.0, test_fraction=0.0)
    dataset = open_dataset(tmp_path / "data")
    assert dataset.b_field_t == FIELD_T
    record = dataset.manifest["magnetic_field"]
    assert record["tesla"] == FIELD_T
    assert "config.simulation.magnetic_field_tesla" in record["source"]
    # Tasks read the field from the dataset: the pT baseline scales with it.
    context = TaskContext.from_dataset(dataset)
    assert context.b_field_t == FIELD_T
    examples = pt.SPEC.make_examples(dataset.split("train"), context, np.random.default_rng(0))
    assert len(examples.lengths) > 0
    at_2t = TaskContext(context.vocab, context.centres_mm, context.surfaces, 2.0)
    ratio = pt.baseline(examples, context)["pt_gev"] / pt.baseline(examples, at_2t)["pt_gev"]
    np.testing.assert_allclose(ratio, FIELD_T / 2.0, rtol=1e-12)


def test_events_without_a_manifest_are_taken_as_trackml_at_2t(
    events_3p5t: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    shutil.copytree(events_3p5t, events)
    (events / "manifest.json").unlink()
    record = events_magnetic_field(events)
    assert record["tesla"] == TRACKML_FIELD_TESLA == 2.0
    assert record["source"].startswith("TrackML default")
    run_prepare(events, tmp_path / "data", val_fraction=0.0, test_fraction=0.0)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["magnetic_field"] == record
    assert open_dataset(tmp_path / "data").b_field_t == 2.0


def test_a_manifest_without_the_field_says_why(events_3p5t: Path, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    (events / "manifest.json").write_text(json.dumps({"stage": "simulate", "config": {}}))
    record = events_magnetic_field(events)
    assert record["tesla"] == 2.0
    assert "records no field" in record["source"]


def test_datasets_prepared_before_the_record_read_2t(events_3p5t: Path) -> None:
    dataset = PreparedDataset(
        path=events_3p5t, manifest={"stage": "prepare"}, vocab=None, modules=None
    )  # type: ignore[arg-type]
    assert dataset.b_field_t == 2.0
