"""``tracklm embed``: the embedding table, the neighbour statistic, the plot, the refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tracklm.detector.geometry import Detector
from tracklm.errors import InputError
from tracklm.models.bert import TrackingBert
from tracklm.tasks.embed import (
    chance_neighbour_fraction,
    embedding_figure,
    embedding_neighbour_fraction,
    project_2d,
    run_embed,
)

PIXEL_VOLUMES = (7, 8, 9)  # the modules of the toy dataset's vocabulary (default selection)


def test_neighbour_fraction_high_for_coordinates_low_for_random():
    table = Detector.builtin("trackml").modules
    centres = table[table.volume_id.isin(PIXEL_VOLUMES)][["cx", "cy", "cz"]].to_numpy()
    # Coordinates as an embedding whose cosine similarity falls with distance: random Fourier
    # features, cos(W x) and sin(W x), whose dot products approximate a Gaussian kernel (30 mm).
    w = np.random.default_rng(3).standard_normal((3, 128)) / 30.0
    coordinates = np.concatenate([np.cos(centres @ w), np.sin(centres @ w)], axis=1)
    assert embedding_neighbour_fraction(coordinates, centres, k=5, radius_mm=50.0) > 0.7
    random = np.random.default_rng(0).standard_normal((len(centres), 16))
    chance = chance_neighbour_fraction(centres, 50.0)
    assert embedding_neighbour_fraction(random, centres, k=5, radius_mm=50.0) < 3 * chance + 0.02
    assert chance < 0.05


def test_neighbour_fraction_hand_computed():
    # Four modules on a line 0, 10, 100, 110 mm; embeddings put 0 with 10 and 100 with 110.
    centres = np.array([[0.0, 0, 0], [10, 0, 0], [100, 0, 0], [110, 0, 0]])
    good = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    bad = np.array([[1.0, 0], [0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert embedding_neighbour_fraction(good, centres, k=1, radius_mm=20.0) == pytest.approx(1.0)
    assert embedding_neighbour_fraction(bad, centres, k=1, radius_mm=20.0) == pytest.approx(0.0)
    assert chance_neighbour_fraction(centres, 20.0) == pytest.approx(1 / 3)


def test_embed_writes_table_sidecar_and_plot(tiny_model, tmp_path):
    out = tmp_path / "emb.parquet"
    plot = tmp_path / "emb.png"
    stats = run_embed(tiny_model, out, plot, detector=Detector.builtin("trackml"))
    table = pd.read_parquet(out)
    model = TrackingBert.from_pretrained(tiny_model)
    vocab = model.vocab
    d = model.config.hidden_size
    assert list(table.columns) == ["volume_id", "layer_id", "module_id", "cx", "cy", "cz"] + [
        f"e{i}" for i in range(d)
    ]
    np.testing.assert_array_equal(
        table[["volume_id", "layer_id", "module_id"]].to_numpy(), vocab.modules
    )
    np.testing.assert_allclose(
        table[[f"e{i}" for i in range(d)]].to_numpy(),
        model.embedding_table().detach().numpy()[vocab.num_special :],
        rtol=1e-6,
    )
    sidecar = json.loads((tmp_path / "emb.json").read_text())
    assert sidecar == stats
    assert {"neighbour_fraction", "random_fraction", "chance_fraction", "k", "radius_mm"} <= set(
        sidecar
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embed_refuses_modules_missing_from_the_geometry_and_bad_projection(tiny_model, tmp_path):
    table = Detector.builtin("trackml").modules
    smaller = Detector(table[table.volume_id != 9].reset_index(drop=True), name="no-endcap")
    with pytest.raises(InputError, match="not in the detector geometry"):
        run_embed(tiny_model, tmp_path / "a.parquet", detector=smaller)
    assert not (tmp_path / "a.parquet").exists()
    with pytest.raises(InputError, match="--projection"):
        run_embed(tiny_model, tmp_path / "b.parquet", projection="tsne", detector="trackml")


def test_projection_and_figure():
    points = np.random.default_rng(1).standard_normal((50, 8)) * np.arange(1, 9)
    flat = project_2d(points, "pca")
    assert flat.shape == (50, 2)
    assert np.var(flat[:, 0]) >= np.var(flat[:, 1])  # first component carries the most variance
    figure = embedding_figure(flat, np.repeat([7, 8], 25), np.tile([2, 4], 25), "test")
    assert isinstance(figure, Figure) and len(figure.axes) >= 2
