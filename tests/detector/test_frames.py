"""``ModuleFrames``: the one home of module frames and bounds, by detector row and by token."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tracklm.detector
from tracklm.detector import Detector, ModuleVocab
from tracklm.detector.frames import ModuleFrames
from tracklm.detector.layers import TokenLayers


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.builtin()


@pytest.fixture(scope="module")
def pixel_table(detector: Detector) -> tuple[pd.DataFrame, int]:
    """A dataset-style module table of the pixel barrel (token, ids, centres) and its vocab size."""
    barrel = detector.select_volumes([8])
    vocab = ModuleVocab(barrel.ids)
    table = pd.DataFrame(barrel.ids, columns=["volume_id", "layer_id", "module_id"])
    table.insert(0, "token", np.arange(vocab.num_special, len(vocab)))
    table[["cx", "cy", "cz"]] = barrel.centres
    return table, len(vocab)


def _runtime_imports(path: Path) -> set[str]:
    """Modules of ``tracklm.detector`` that ``path`` imports at run time (not for type checking)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body, node.orelse = [ast.Pass()], []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tracklm.detector."):
            found.add(node.module.rsplit(".", 1)[1])
    return found


def test_detector_imports_run_one_way() -> None:
    package = Path(tracklm.detector.__file__).parent
    graph = {p.stem: _runtime_imports(p) for p in package.glob("*.py") if p.stem != "__init__"}
    assert graph["builtin"] == {"table"} and graph["table"] == set()
    assert "geometry" not in graph["frames"] | graph["layers"] | graph["vocab"]
    # No cycles: repeatedly remove modules whose imports are all removed already.
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {name for name, deps in graph.items() if name not in done and deps <= done}
        assert ready, f"import cycle among {sorted(set(graph) - done)}"
        done |= ready


def test_frames_match_the_module_table(detector: Detector) -> None:
    frames = detector.frames
    assert detector.frames is frames  # built once per detector
    assert len(frames) == len(detector) and frames.exact
    np.testing.assert_array_equal(frames.centres, detector.centres)
    np.testing.assert_array_equal(frames.rotations, detector.rotations)
    np.testing.assert_array_equal(frames.normals, detector.rotations[:, :, 2])
    np.testing.assert_array_equal(frames.hv, detector.modules.module_hv.to_numpy())
    rows = np.arange(0, len(detector), 97)
    hv = frames.hv[rows]
    np.testing.assert_allclose(frames.half_width(rows, -hv), frames.minhu[rows])
    np.testing.assert_allclose(frames.half_width(rows, hv), frames.maxhu[rows])


def test_local_coordinates_are_the_transposed_rotation(detector: Detector) -> None:
    frames = detector.frames
    rng = np.random.default_rng(3)
    rows = rng.integers(0, len(detector), 300)
    xyz = frames.centres[rows] + rng.normal(scale=30.0, size=(300, 3))
    expected = np.einsum("nji,nj->ni", frames.rotations[rows], xyz - frames.centres[rows])
    np.testing.assert_allclose(frames.to_local(rows, xyz), expected, rtol=0, atol=1e-12)
    # Any leading shape: (100, 3) rows of (..., 3) points.
    np.testing.assert_allclose(
        frames.to_local(rows.reshape(100, 3), xyz.reshape(100, 3, 3)).reshape(300, 3),
        expected,
        rtol=0,
        atol=1e-12,
    )
    # Bounds: contains = within the outline and the sensor thickness.
    uvw = frames.to_local(rows, xyz)
    thin = np.abs(uvw[:, 2]) <= 0.5 * frames.thickness[rows] + 1e-3
    within = frames.within_bounds(rows, uvw, 1e-3)
    np.testing.assert_array_equal(detector.contains(rows, xyz), within & thin)
    np.testing.assert_array_equal(frames.contains(rows, xyz, max_distance_mm=1e9), within)


def test_frames_by_token_and_their_bounds(detector: Detector, pixel_table) -> None:
    table, size = pixel_table
    frames = detector.frames_by_token(table, size)
    tokens = table["token"].to_numpy()
    rows = detector.rows(table.volume_id, table.layer_id, table.module_id)
    np.testing.assert_array_equal(frames.rotations[tokens], detector.rotations[rows])
    assert np.isnan(frames.hv[: tokens.min()]).all()  # special tokens have no frame
    # Module centres lie inside their own module and outside their neighbours' bounds.
    centres = frames.centres[tokens]
    assert (frames.outside(tokens, centres) < 1e-9).all()
    assert (frames.outside(np.roll(tokens, 1), centres) > 1.0).mean() > 0.99
    assert np.isinf(frames.outside(np.array([-1, 0]), centres[:2])).all()
    # A point off the plane moved along the normal lands on the plane.
    token = tokens[:5]
    off = centres[:5] + 3.0 * frames.normals[token]
    on_plane = frames.to_local_on_plane(token, off, frames.normals[token])
    np.testing.assert_allclose(on_plane, 0.0, atol=1e-9)
    cov = frames.covariance(np.array([[0, token[0]]]))
    np.testing.assert_allclose(cov[0, 0], 1e6 * np.eye(3))
    np.testing.assert_allclose(
        np.trace(cov[0, 1]),
        0.25 + ((2 * frames.hv[token[0]]) ** 2 + (2 * frames.minhu[token[0]]) ** 2) / 12.0,
    )
    with pytest.raises(ValueError, match="not in the detector"):
        detector.frames_by_token(table.assign(module_id=table.module_id + 10_000), size)


def test_approximate_frames_from_centres(detector: Detector, pixel_table) -> None:
    table, size = pixel_table
    exact = detector.frames_by_token(table, size)
    guess = ModuleFrames.approximate(table, size)
    assert not guess.exact
    tokens = table["token"].to_numpy()
    # On a barrel: u along phi, v along z, w outward; half-width pi r / (modules in the ring).
    phi = np.arctan2(table.cy, table.cx).to_numpy()
    np.testing.assert_allclose(guess.v_axes[tokens], np.tile([0.0, 0.0, 1.0], (len(tokens), 1)))
    np.testing.assert_allclose(guess.normals[tokens, 0], np.cos(phi), atol=1e-12)
    layer2 = tokens[(table.layer_id == 2).to_numpy()]
    rings = len(np.unique(np.round(exact.centres[layer2, 2])))
    np.testing.assert_allclose(guess.minhu[layer2], np.pi * 32.0 / (len(layer2) / rings), rtol=0.02)
    # The guessed half-sizes are close to the real ones, and TokenLayers rebuilds the same table.
    assert np.median(np.abs(guess.hv[tokens] / exact.hv[tokens] - 1.0)) < 0.1
    layers = TokenLayers.from_modules(table, size)
    rebuilt = ModuleFrames.approximate(layers.module_table(), size)
    np.testing.assert_array_equal(rebuilt.rotations, guess.rotations)
    np.testing.assert_array_equal(rebuilt.hv, guess.hv)
