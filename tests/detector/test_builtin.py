"""The built-in TrackML detector against the real TrackML ``detectors.csv``."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.detector import PIXEL_VOLUMES, Detector
from tracklm.errors import InputError

SIZE_COLUMNS = ["module_t", "module_minhu", "module_maxhu", "module_hv", "pitch_u", "pitch_v"]


@pytest.fixture(scope="module")
def builtin() -> Detector:
    return Detector.builtin("trackml")


@pytest.fixture(scope="module")
def real(real_detectors_csv) -> Detector:
    return Detector.from_csv(real_detectors_csv)


def test_figures_from_geometry_notes(builtin):
    ids = builtin.ids
    assert len(builtin) == 18_728
    assert np.isin(ids[:, 0], PIXEL_VOLUMES).sum() == 4_004
    assert set(np.unique(ids[:, 0])) == {7, 8, 9, 12, 13, 14, 16, 17, 18}
    assert np.all(ids[:, 1] % 2 == 0)
    # Module ids restart at 1 in every layer and run without gaps.
    for volume, layer in {tuple(pair) for pair in ids[:, :2]}:
        modules = ids[(ids[:, 0] == volume) & (ids[:, 1] == layer), 2]
        assert np.array_equal(np.sort(modules), np.arange(1, len(modules) + 1))


def test_negative_endcap_layers_grow_toward_interaction_point(builtin):
    table = builtin.modules
    pixel_minus = table[table.volume_id == 7].groupby("layer_id").cz.mean()
    assert pixel_minus.loc[2] == pytest.approx(-1500.0, abs=1.0)
    assert pixel_minus.loc[14] == pytest.approx(-600.0, abs=1.0)
    assert np.all(np.diff(pixel_minus.to_numpy()) > 0)
    pixel_plus = table[table.volume_id == 9].groupby("layer_id").cz.mean()
    assert pixel_plus.loc[2] == pytest.approx(600.0, abs=1.0)


def test_cached_and_unknown_name(builtin):
    assert Detector.builtin("trackml") is builtin
    assert Detector.builtin() is builtin
    assert Detector.load("trackml") is builtin
    with pytest.raises(InputError, match="nosuch"):
        Detector.builtin("nosuch")


def test_rotations_orthonormal_right_handed(builtin):
    rotations = builtin.rotations
    identity = np.einsum("nji,njk->nik", rotations, rotations)
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(3), identity.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)


def test_barrel_normals_point_outward_with_tilt(builtin):
    table = builtin.modules
    barrel = table.volume_id.isin([8, 13, 17]).to_numpy()
    centres = builtin.centres[barrel]
    normals = builtin.rotations[barrel][:, :, 2]
    radial = centres[:, :2] / np.linalg.norm(centres[:, :2], axis=1, keepdims=True)
    cos_angle = np.einsum("ni,ni->n", normals[:, :2], radial)
    # Normals lie in the transverse plane, within about 9 degrees of the outward radius.
    assert np.all(np.abs(normals[:, 2]) < 1e-12)
    assert np.all(cos_angle > np.cos(np.radians(9.0)))
    assert np.all(cos_angle < np.cos(np.radians(7.0)))


def test_layer_counts_radii_z_sizes_match_real(builtin, real):
    ours = builtin.modules.assign(r=np.hypot(builtin.modules.cx, builtin.modules.cy))
    theirs = real.modules.assign(r=np.hypot(real.modules.cx, real.modules.cy))
    keys = ["volume_id", "layer_id"]
    assert ours.groupby(keys).size().to_dict() == theirs.groupby(keys).size().to_dict()
    for column in ("r", "cz"):
        for stat in ("min", "max", "mean"):
            a = ours.groupby(keys)[column].agg(stat)
            b = theirs.groupby(keys)[column].agg(stat)
            assert np.abs(a - b).max() < 1.0, (column, stat)
    for column in SIZE_COLUMNS:
        a = ours.groupby(keys)[column].unique().map(sorted)
        b = theirs.groupby(keys)[column].unique().map(sorted)
        assert a.to_dict() == b.to_dict(), column


def test_same_ids_denote_same_modules(builtin, real):
    assert np.array_equal(builtin.ids, real.ids)
    distance = np.linalg.norm(builtin.centres - real.centres, axis=1)
    # The reference file rounds to 6 significant digits: about 1e-3 mm at r = 1 m.
    assert distance.max() < 0.01
    np.testing.assert_allclose(builtin.rotations, real.rotations, atol=1e-5)
    for column in SIZE_COLUMNS:
        np.testing.assert_array_equal(builtin.modules[column], real.modules[column])


def test_centres_lie_on_their_modules(builtin):
    rows = np.arange(len(builtin))
    assert builtin.contains(rows, builtin.centres).all()
