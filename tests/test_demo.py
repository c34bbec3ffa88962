"""``tracklm demo`` orchestration with the four stages replaced by stubs (no simulation or training)."""

from __future__ import annotations

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
        _finish(options["out"], "metrics.json")
        return {"masked_module": {"accuracy": 0.5}}

    monkeypatch.setattr("tracklm.simulate.event.run_simulate", simulate)
    monkeypatch.setattr("tracklm.data.prepare.run_prepare", prepare)
    monkeypatch.setattr("tracklm.train.pretrain.run_pretrain", pretrain)
    monkeypatch.setattr("tracklm.evaluate.report.run_evaluate", evaluate)
    monkeypatch.setattr("tracklm.evaluate.markdown.headline_table", lambda metrics: "table")
    return calls


def test_demo_runs_the_stages_in_order_with_its_recipe(tmp_path: Path, stages, capsys) -> None:
    metrics = demo.run_demo(tmp_path / "demo", minutes=2.0)
    assert [name for name, _ in stages] == ["simulate", "prepare", "pretrain", "evaluate"]
    assert metrics == {"masked_module": {"accuracy": 0.5}}
    assert "table" in capsys.readouterr().out
    simulate = stages[0][1]
    assert (simulate["events"], simulate["pileup"], simulate["seed"]) == (30, 200.0, 0)
    pretrain = stages[2][1]
    assert pretrain["preset"] == "small" and pretrain["max_time"] == 2.0
    assert not pretrain["resume"]
    # The recipe file sets only what differs from the preset, and resolves to the demo's recipe.
    written = yaml.safe_load(pretrain["config"].read_text())
    small = preset_config("small").to_dict()
    assert all(small[key] != value for key, value in written.items())
    resolved = load_pretrain_config("small", pretrain["config"]).to_dict()
    assert resolved == {
        **small,
        "model_overrides": {"dropout": 0.0, "attention_dropout": 0.0},
        "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "max_steps": 2200,
        "mask_rates": [0.15, 0.30], "mask_rate_steps": [1100], "val_every": 110,
        "val_batches": 10, "checkpoint_every": 220, "early_stopping_patience": None,
        "num_workers": 0,
    }  # fmt: skip


def test_demo_reuses_complete_stages(tmp_path: Path, stages) -> None:
    demo.run_demo(tmp_path / "demo", minutes=1.0)
    stages.clear()
    demo.run_demo(tmp_path / "demo", minutes=1.0)
    assert stages == []


def test_demo_refuses_a_non_positive_budget(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--minutes"):
        demo.run_demo(tmp_path / "demo", minutes=0.0)
