"""A budget is a schedule: ``--max-steps`` and ``--max-time`` fit the preset's schedule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tracklm.train.config import preset_config
from tracklm.train.optim import warmup_linear_decay
from tracklm.train.pretrain import run_pretrain
from tracklm.train.schedule import (
    REFIT_MARGIN,
    Pace,
    fit_schedule,
    refit_schedule,
    refit_steps,
    steps_for_minutes,
    unreached_mask_stages,
)

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
    # a decay line moved by a re-fit scales with the run, and stays below its last step
    moved = dataclasses.replace(paper, decay_start=150_000)
    assert fit_schedule(moved, 2_000).decay_start == 1_500
    assert fit_schedule(dataclasses.replace(paper, decay_start=199_999), 4).decay_start == 3


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


def test_stages_at_or_after_the_last_step_are_unreached():
    paper = preset_config("paper")  # 0.15, then 0.30 and 0.50 from two boundaries
    first, second = paper.mask_rate_steps
    assert unreached_mask_stages(paper) == []
    short = dataclasses.replace(paper, max_steps=second)  # the last stage would start at the end
    assert unreached_mask_stages(short) == [(paper.mask_rates[2], second)]
    shorter = dataclasses.replace(paper, max_steps=first)
    assert [rate for rate, _ in unreached_mask_stages(shorter)] == list(paper.mask_rates[1:])
    assert unreached_mask_stages(fit_schedule(paper, 50)) == []  # fitted stages always run


def test_a_config_file_stage_beyond_the_run_is_warned_about(toy_data, tmp_path, caplog):
    config = tmp_path / "stages.yaml"
    config.write_text("mask_rates: [0.15, 0.3, 0.5]\nmask_rate_steps: [5, 40]\n")
    with caplog.at_level("WARNING", logger="tracklm.train.pretrain"):
        run_pretrain(
            toy_data, tmp_path / "run", preset="tiny", config=config, max_steps=8, accelerator="cpu"
        )
    warned = [r.getMessage() for r in caplog.records if "never run" in r.getMessage()]
    assert len(warned) == 1 and "0.5 from step 40" in warned[0] and "0.3 from" not in warned[0]


def test_max_time_measures_the_pace_and_fits_the_schedule_to_it(toy_data, tmp_path):
    run = run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_time=0.15, accelerator="cpu")
    record = json.loads((run / "run.json").read_text())
    fitted = record["schedule_fitted"]
    assert fitted["to"] == "max_time" and fitted["pace"]["steps_timed"] >= 1
    steps = fitted["max_steps"]
    # the steps are what 0.15 minutes hold at the measured pace (less the measuring)
    assert steps <= 0.15 * 60 / fitted["pace"]["seconds_per_step"]
    assert steps >= 0.05 * 60 / fitted["pace"]["seconds_per_step"]
    # run.json's config is the preset fitted to those steps, then re-fitted on the way as recorded
    config = fit_schedule(preset_config("tiny"), steps)
    for refit in fitted.get("refits", []):
        config = refit_schedule(config, refit["step"], refit["max_steps"])
    assert record["config"] == json.loads(json.dumps(config.to_dict()))
    metrics = json.loads((run / "metrics.json").read_text())
    # the run ends at its fitted step count (or, on a loaded machine, at the timer)
    assert metrics["stopped_by"] in ("max_steps", "max_time")
    assert metrics["step"] <= config.max_steps


def test_refit_keeps_what_is_behind_and_scales_what_is_ahead():
    small = fit_schedule(preset_config("small"), 1000)  # warm-up 10, mask-rate step at 500
    shorter = refit_schedule(small, 200, 600)
    assert shorter.max_steps == 600 and shorter.warmup_steps == small.warmup_steps
    assert shorter.mask_rate_steps == (300,)  # 500 of 1000 -> 300 of 600
    # a boundary already passed keeps its step; one ahead stays ahead of the step made
    assert refit_schedule(small, 700, 900).mask_rate_steps == (500,)
    assert refit_schedule(small, 450, 460).mask_rate_steps == (451,)
    longer = refit_schedule(small, 200, 3000)
    assert longer.mask_rate_steps == (1500,) and longer.val_every == small.val_every
    # keys set by the user's file stay; what the run has not reached is rescaled
    assert refit_schedule(small, 5, 2000).warmup_steps == 20
    assert refit_schedule(small, 5, 2000, keep=frozenset({"warmup_steps"})).warmup_steps == 10
    assert refit_schedule(small, 200, 600, keep=("mask_rate_steps",)).mask_rate_steps == (500,)
    with pytest.raises(ValueError, match="exceed"):
        refit_schedule(small, 200, 200)


@pytest.mark.parametrize("new_steps", [400, 600, 1000, 3000])
def test_refit_continues_the_learning_rate_without_a_jump(new_steps):
    small = fit_schedule(preset_config("small"), 1000)  # warm-up 10, decay to 0 at 1000
    before = warmup_linear_decay(small.warmup_steps, small.max_steps, small.decay_start)
    refitted = refit_schedule(small, 300, new_steps)
    after = warmup_linear_decay(
        refitted.warmup_steps, refitted.max_steps, refitted.decay_start
    )  # fmt: skip
    # the same rate at the re-fit step (decay_start is a whole step: half a step of the
    # decay's length, under 1% here), then linear to 0
    assert after(300) == pytest.approx(before(300), rel=1e-2)
    assert after(new_steps) == 0.0 and after(new_steps - 1) > 0.0
    slope = [after(s) - after(s + 1) for s in (300, 350, new_steps - 2)]
    assert slope == pytest.approx([slope[0]] * 3)
    # a second re-fit continues from the first one's rate
    again = refit_schedule(refitted, 350, new_steps + 100)
    last = warmup_linear_decay(again.warmup_steps, again.max_steps, again.decay_start)
    assert last(350) == pytest.approx(after(350), rel=1e-2)
    # and a run fitted to a new budget starts from the preset's decay (no decay_start)
    assert small.decay_start is None


def test_refit_steps_fill_the_time_left_at_the_pace_so_far():
    # at step 101, the last 100 steps in 10 s, 20 s left: 97% of 200 more steps
    assert refit_steps(101, 100, 10.0, 20.0) == 101 + int(20.0 * REFIT_MARGIN / 0.1)
    assert refit_steps(101, 100, 10.0, -1.0) == 102  # the timer is out: one step more at least


def _mis_timed(factor: float, monkeypatch: pytest.MonkeyPatch) -> list[Pace]:
    """Make ``--max-time`` believe the machine ``factor`` times slower than it measured."""
    import tracklm.train.pretrain as pretrain

    measured: list[Pace] = []
    real = pretrain._measure_pace

    def wrong(*args, **kwargs):
        pace = real(*args, **kwargs)
        measured.append(pace)
        return Pace(pace.seconds_per_step * factor, pace.steps_timed, pace.seconds)

    monkeypatch.setattr(pretrain, "_measure_pace", wrong)
    return measured


# A tiny run's steps on the toy data (Lightning's work per step, validations and checkpoints)
# take about 1.4 times the throw-away steps on an idle machine, about 2 times beside another
# test: x10 makes the fit far too short, x1/2 too long, yet its first re-fit point (20% of the
# fitted steps) still comes before the timer ends (at x1/3 a loaded machine missed it).
@pytest.mark.parametrize("factor", [10.0, 1 / 2], ids=["too-slow", "too-fast"])
def test_a_mis_timed_run_refits_its_schedule_on_the_way(toy_data, tmp_path, monkeypatch, factor):
    _mis_timed(factor, monkeypatch)
    run = run_pretrain(toy_data, tmp_path / "run", preset="tiny", max_time=0.2, accelerator="cpu")
    record = json.loads((run / "run.json").read_text())
    first = record["schedule_fitted"]["max_steps"]
    refits = record["schedule_fitted"]["refits"]
    believed = record["schedule_fitted"]["pace"]["seconds_per_step"]
    # the first re-fit, at 20% of the fitted steps, paces the steps really made and moves the
    # schedule the way the factor was wrong: x10 is undone by more than half on any machine;
    # x1/2 only in its direction: the real steps' cost against the throw-away ones varies
    # with the load beside each (one CI run re-fitted x1/2 to 0.69 of its first fit)
    assert refits[0]["step"] == round(0.2 * first)
    if factor > 1:
        assert refits[0]["seconds_per_step"] < believed
        assert refits[0]["max_steps"] > 1.5 * first
    else:
        assert refits[0]["seconds_per_step"] > believed
        assert refits[0]["max_steps"] < first
    # run.json holds the schedule the run ended on (what --resume rebuilds)
    final = refits[-1]["max_steps"]
    assert record["config"]["max_steps"] == final
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_by"] in ("max_steps", "max_time") and metrics["step"] <= final
    if factor > 1:
        assert metrics["step"] > first  # past the sampler's first length
    # after the last re-fit the learning rate follows the re-fitted warm-up and decay: the final
    # checkpoint holds the rate of the step after the last one made
    import torch

    tiny = preset_config("tiny")
    config = record["config"]
    factor_of = warmup_linear_decay(config["warmup_steps"], final, config["decay_start"])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    scheduler = checkpoint["lr_schedulers"][0]
    assert scheduler["last_epoch"] == metrics["step"]
    for group in checkpoint["optimizer_states"][0]["param_groups"]:
        assert group["lr"] == pytest.approx(tiny.lr * factor_of(metrics["step"]), abs=1e-12)
