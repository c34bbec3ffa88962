"""``tracklm generate`` end to end on the toy data (issue 14): outputs, metrics, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tracklm.cli import main
from tracklm.errors import InputError
from tracklm.generate.metrics import conditional_metrics
from tracklm.generate.run import run_generate
from tracklm.io.dataset import open_dataset
from tracklm.models import TrackingBert, TrackingBertConfig
from tracklm.models.inputs import module_geometry_table


@pytest.fixture(scope="module")
def causal_model(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny next-module model that reads hits, as a model directory."""
    dataset = open_dataset(toy_data)
    torch.manual_seed(4)
    config = TrackingBertConfig.preset(
        "tiny", vocab_size=len(dataset.vocab), objective="next-module", inputs="hits"
    )
    model = TrackingBert(config)
    model.set_module_geometry(module_geometry_table(dataset.frames()))
    path = tmp_path_factory.mktemp("causal") / "model"
    model.save_pretrained(path, dataset.vocab)
    return path


def test_generate_writes_tracks_metrics_and_report(
    causal_model: Path, toy_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gen"
    metrics = run_generate(causal_model, toy_data, out, samples=60, max_tracks=50)
    for name in ("conditional.parquet", "unconditional.parquet", "metrics.json", "report.md",
                 "step_accuracy.png", "observables.png", "manifest.json"):  # fmt: skip
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    conditional = saved["conditional"]
    assert conditional["seed_hits"] == 3 and conditional["tracks"] == 50
    for key in ("exact_completion", "step_accuracy", "length_error"):
        assert key in conditional and key in conditional["baseline"]
    assert conditional["baseline"]["name"] == "helix_hits"  # the model reads hits
    assert set(conditional["baselines"]) == {"helix", "helix_hits"}
    unconditional = saved["unconditional"]
    observables = unconditional["observables"]
    assert "pt_gev" in observables and "hits_per_track" in observables
    assert set(observables["hits_per_track"]) >= {"w1", "w1_floor", "kl", "kl_floor"}
    assert 0.0 <= unconditional["classifier_auc"] <= 1.0
    assert 0.0 <= unconditional["unfittable_fraction"] <= 1.0
    assert metrics["model_objective"] == "next-module"
    # the completions: every track starts with its true seeds, with their measured positions
    table = pd.read_parquet(out / "conditional.parquet")
    seeds = table[table["seed"]]
    assert seeds.groupby("track").size().eq(3).all()
    assert np.isfinite(table[["x_mm", "y_mm", "z_mm"]].to_numpy()).all()  # predicted positions
    test = open_dataset(toy_data).split("test")
    first = seeds.sort_values(["track", "hit"]).groupby("track").head(1)
    for row in first.itertuples():
        index = np.flatnonzero(
            (test.event_id == row.event_id) & (test.particle_id == row.particle_id)
        )[0]
        assert int(test.tokens[index, 0]) == row.token
    sampled = pd.read_parquet(out / "unconditional.parquet")
    assert sampled["track"].nunique() <= 60 and not sampled["seed"].any()
    assert "Completed from 3 seed hits" in (out / "report.md").read_text()


def test_the_cli_runs_generate_and_refuses_bad_options(
    causal_model: Path, toy_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(causal_model), "--data", str(toy_data), "--out",
                 str(out), "--samples", "0", "--max-tracks", "20", "--strategy", "beam"])  # fmt: skip
    assert code == 0
    assert "unconditional" not in json.loads((out / "metrics.json").read_text())
    bad = tmp_path / "bad"
    code = main(["generate", "--model", str(causal_model), "--data", str(toy_data), "--out",
                 str(bad), "--seed-hits", "0", "--samples", "0"])  # fmt: skip
    assert code == 2 and not bad.exists()
    assert "nothing to generate" in capsys.readouterr().err
    code = main(["generate", "--model", str(causal_model), "--data", str(toy_data), "--out",
                 str(bad), "--seed-hits", "8"])  # fmt: skip
    assert code == 2 and not bad.exists()
    assert "--seed-hits: 8 leaves nothing to generate" in capsys.readouterr().err


def test_conditional_metrics_count_what_they_say() -> None:
    centres = np.array([[np.nan] * 3] * 4 + [[float(i), 0.0, 0.0] for i in range(10)])
    true = np.array([[4, 5, 6, 7, 8], [4, 5, 6, 7, 0], [4, 5, 6, 7, 0]])
    true_lengths = np.array([5, 4, 4])
    got = np.array([[4, 5, 6, 7, 8], [4, 5, 6, 9, 10], [4, 5, 6, 0, 0]])
    lengths = np.array([5, 5, 3])
    m = conditional_metrics(got, lengths, true, true_lengths, 3, centres)
    assert m["exact_completion"] == pytest.approx(1 / 3)
    assert m["step_accuracy"] == pytest.approx([1 / 3, 1.0])  # step 1: 3 tracks, step 2: 1
    assert m["step_tracks"] == [3, 1]
    assert m["length_error"]["mean"] == pytest.approx(0.0)
    assert m["length_error"]["mean_abs"] == pytest.approx(2 / 3)
    assert m["generated_hits_accuracy"] == pytest.approx(2 / 4)
    assert m["distance_mm"][0] == pytest.approx(1.0)  # median of 0 and 2 mm
    with pytest.raises(InputError):
        run_generate("missing", "missing", "out", seed_hits=-1)


def test_a_sample_too_large_for_the_floors_is_refused(
    causal_model: Path, toy_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The floors need independent simulated samples of the same size: asking for more samples
    than any other split holds (here: the whole train split) ends in one line naming the
    option, and no output."""
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(causal_model), "--data", str(toy_data), "--out",
                 str(out), "--split", "train", "--seed-hits", "0", "--samples", "100000"])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "--samples" in capsys.readouterr().err
