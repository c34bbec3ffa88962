"""A budget is a schedule: ``--max-steps`` and ``--max-time`` fit the preset's schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracklm.train.config import preset_config
from tracklm.train.pretrain import run_pretrain
from tracklm.train.schedule import Pace, fit_schedule, steps_for_minutes

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """One thread per process in this module (the conftest fixture)."""


def test_fit_schedule_rescales_every_step_count_in_proportion():
    small = preset_config("small")
    fitted = fit_schedule(small, small.max_steps // 10)
    assert fitted.max_steps == small.max_steps // 10
    assert fitted.warmup_steps == round(small.warmup_steps / 10)
    assert fitted.mask_rate_steps == tuple(round(s / 10) for s in small.mask_rate_steps)
    assert fitted.val_every == round(small.val_every / 10)
    assert fitted.checkpoint_every == round(small.checkpoint_every / 10)
    # the mask rates, learning rate and batch are the preset's
    assert (fitted.mask_rates, fitted.lr, fitted.batch_size) == (
        small.mask_rates, small.lr, small.batch_size)  # fmt: skip
    # the stages keep the preset's fractions of the run
    for before, after in zip(small.mask_rate_steps, fitted.mask_rate_steps, strict=True):
        assert after / fitted.max_steps == pytest.approx(before / small.max_steps, abs=1e-3)


def test_fit_schedule_keeps_user_keys_and_squeezes_stages_that_cannot_fit():
    paper = preset_config("paper")
    fitted = fit_schedule(paper, 4, keep=frozenset({"val_every"}))
    assert fitted.val_every == paper.val_every
    assert fitted.warmup_steps < 4
    # two stage boundaries stay strictly increasing even when both round to nothing
    assert fitted.mask_rate_steps[0] >= 1 and fitted.mask_rate_steps[1] > fitted.mask_rate_steps[0]
    with pytest.raises(ValueError, match="max_steps"):
        fit_schedule(paper, 0)


def test_steps_for_minutes_counts_validation_time():
    small = preset_config("small")
    pace = Pace(seconds_per_step=0.05, steps_timed=20, seconds=1.0)
    steps = steps_for_minutes(small, 10.0, pace, margin=1.0)
    fitted = fit_schedule(small, steps)
    spent = steps * 0.05 * (1 + 0.35 * fitted.val_batches / fitted.val_every)
    assert spent == pytest.approx(600.0, rel=0.01)
    assert steps < 600.0 / 0.05  # validations take their share


def test_max_steps_on_a_new_run_fits_the_preset_schedule(toy_data, tmp_path):
    run = run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_steps=30, accelerator="cpu")
    record = json.loads((run / "run.json").read_text())
    tiny = preset_config("tiny")
    assert record["config"]["max_steps"] == 30
    assert record["config"]["warmup_steps"] == round(tiny.warmup_steps * 30 / tiny.max_steps)
    assert record["config"]["mask_rate_steps"] == [
        round(s * 30 / tiny.max_steps) for s in tiny.mask_rate_steps
    ]
    assert record["schedule_fitted"] == {"to": "max_steps", "max_steps": 30}
    assert json.loads((run / "metrics.json").read_text())["step"] == 30


def test_a_config_file_keeps_its_own_keys(toy_data, tmp_path: Path):
    config = tmp_path / "mine.yaml"
    config.write_text("warmup_steps: 7\n")
    run = run_pretrain(
        toy_data, tmp_path / "run", preset="tiny", config=config, max_steps=20, accelerator="cpu"
    )
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["warmup_steps"] == 7 and record["config"]["max_steps"] == 20


def test_max_time_measures_the_pace_and_fits_the_schedule_to_it(toy_data, tmp_path):
    run = run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_time=0.15, accelerator="cpu")
    record = json.loads((run / "run.json").read_text())
    fitted = record["schedule_fitted"]
    assert fitted["to"] == "max_time" and fitted["pace"]["steps_timed"] >= 1
    steps = record["config"]["max_steps"]
    # the steps are what 0.15 minutes hold at the measured pace (less the measuring)
    assert steps <= 0.15 * 60 / fitted["pace"]["seconds_per_step"]
    assert steps >= 0.05 * 60 / fitted["pace"]["seconds_per_step"]
    tiny = preset_config("tiny")
    assert record["config"]["mask_rate_steps"][0] == round(
        tiny.mask_rate_steps[0] * steps / tiny.max_steps
    )
    metrics = json.loads((run / "metrics.json").read_text())
    # the run ends at its fitted step count (or, on a loaded machine, at the timer)
    assert metrics["stopped_by"] in ("max_steps", "max_time")
    assert metrics["step"] <= steps
