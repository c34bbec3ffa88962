"""``tracklm demo`` orchestration with the four stages replaced by stubs (no simulation or training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracklm import demo
from tracklm.errors import InputError
from tracklm.train.config import load_pretrain_config, preset_config


def _finish(directory: Path, *files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", *files):
        (directory / name).write_text("{}")


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Record each stage's call and leave a complete output behind, as the real stage would."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def simulate(**options: Any) -> None:
        calls.append(("simulate", options))
        _finish(options["out"])

    def prepare(**options: Any) -> None:
        calls.append(("prepare", options))
        _finish(options["out"])

    def pretrain(**options: Any) -> None:
        calls.append(("pretrain", options))
        _finish(options["out"] / "model", "model.safetensors")

    def evaluate(**options: Any) -> dict[str, Any]:
        calls.append(("evaluate", options))
        _finish(options["out"])
        metrics = {"masked_module": {"accuracy": 0.5}}
        (options["out"] / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr("tracklm.simulate.event.run_simulate", simulate)
    monkeypatch.setattr("tracklm.data.prepare.run_prepare", prepare)
    monkeypatch.setattr("tracklm.train.pretrain.run_pretrain", pretrain)
    monkeypatch.setattr("tracklm.evaluate.report.run_evaluate", evaluate)
    monkeypatch.setattr("tracklm.evaluate.markdown.headline_table", lambda metrics: "table")

    class Finished:
        exitcode = 0

        def join(self) -> None:
            return None

        def is_alive(self) -> bool:
            return False

    def background(data_dir: Path, job: Any, config: Any, minutes: float) -> Finished:
        # the child process, run here so that the stubs apply
        demo._pretrain(data_dir, job, config, minutes)
        return Finished()

    monkeypatch.setattr(demo, "_start_background", background)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    return calls


def test_demo_runs_the_stages_in_order_with_its_recipe(tmp_path: Path, stages, capsys) -> None:
    metrics = demo.run_demo(tmp_path / "demo", minutes=2.0)
    names = [name for name, _ in stages]
    assert names == ["simulate", "prepare", "pretrain", "pretrain", "evaluate", "evaluate"]
    assert metrics == {"masked_module": {"accuracy": 0.5}}
    printed = capsys.readouterr().out
    assert printed.count("table") == 2 and "from 50.0% to 50.0%" in printed
    simulate = stages[0][1]
    assert (simulate["events"], simulate["pileup"], simulate["seed"]) == (30, 200.0, 0)
    # both models train at once for the whole budget, one core each
    hits, pretrain = stages[2][1], stages[3][1]
    assert (hits["out"].name, pretrain["out"].name) == ("run-hits", "run")
    assert pretrain["preset"] == "small" and pretrain["max_time"] == 2.0
    assert hits["max_time"] == 2.0 and not pretrain["resume"]
    assert [options["out"].name for _, options in stages[4:]] == ["report", "report-hits"]
    assert (
        "Beside the paper's model" in (tmp_path / "demo" / "report-hits" / "report.md").read_text()
    )
    written_hits = yaml.safe_load(hits["config"].read_text())
    assert written_hits["model_overrides"]["inputs"] == "hits"
    # The recipe files set only what differs from the preset, and no step-counted key: the
    # preset's schedule is fitted to --max-time by the pace pretrain measures.
    small = preset_config("small").to_dict()
    written = yaml.safe_load(pretrain["config"].read_text())
    # the small preset, with the pair question asked of every two tracks of a batch
    assert written == {
        "model_overrides": {"dropout": 0.0, "attention_dropout": 0.0, "pair_head": "difference"},
        "pair_in_batch_weight": 1.0,
    }
    assert all(small[key] != value for key, value in written_hits.items())
    for options in (pretrain, hits):
        assert options["max_steps"] is None and options["max_time"] == 2.0
    resolved = load_pretrain_config("small", hits["config"]).to_dict()
    assert resolved == {
        **small,
        "model_overrides": {
            "dropout": 0.0, "attention_dropout": 0.0, "inputs": "hits", "pair_head": "difference",
        },
        "pair_in_batch_weight": 1.0,
    }  # fmt: skip
    assert small == {
        **small,
        "model_overrides": {"dropout": 0.0, "attention_dropout": 0.0},
        "batch_size": 128, "lr": 2e-3, "mask_rates": [0.15, 0.30], "mask_rate_steps": [15000],
        "val_batches": 10,
        "early_stopping_patience": None, "num_workers": 0,
    }  # fmt: skip


def test_demo_reuses_complete_stages(tmp_path: Path, stages) -> None:
    demo.run_demo(tmp_path / "demo", minutes=1.0)
    stages.clear()
    demo.run_demo(tmp_path / "demo", minutes=1.0)
    assert stages == []


def test_demo_refuses_a_non_positive_budget(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--minutes"):
        demo.run_demo(tmp_path / "demo", minutes=0.0)


def test_on_one_core_the_models_train_in_turn_sharing_the_budget(
    tmp_path: Path, stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 1)
    demo.run_demo(tmp_path / "demo", minutes=2.0)
    runs = [options for name, options in stages if name == "pretrain"]
    assert [r["out"].name for r in runs] == ["run", "run-hits"]
    assert [r["max_time"] for r in runs] == [1.0, 1.0]
    assert [r["max_steps"] for r in runs] == [None, None]  # each fitted to its half


def test_the_in_batch_pairs_can_be_turned_off() -> None:
    off = demo.DemoConfig(pair_in_batch_weight=0.0)
    assert demo.demo_pretrain_overrides(off, "tokens") == {}  # the small preset itself
    assert demo.demo_pretrain_overrides(off, "hits") == {
        "model_overrides": {"dropout": 0.0, "attention_dropout": 0.0, "inputs": "hits"}
    }
