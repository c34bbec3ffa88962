"""Helix fit and layer intersections against helices generated independently (tests/evaluate/toy.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.detector.vocab import ModuleVocab
from tracklm.evaluate.helix import LayerSurfaces, fit_helix

from .toy import BARREL_RADII_MM, helix_points, layer_crossings, toy_modules


@pytest.mark.parametrize(("pt_gev", "charge"), [(0.6, 1), (2.0, -1), (0.3, -1)])
def test_fit_recovers_radius_pt_charge_and_z_slope(pt_gev, charge):
    s = np.array([30.0, 75.0, 120.0, 175.0, 190.0])
    points = helix_points(pt_gev, 0.7, 0.8, charge, s)[None]
    fit = fit_helix(points, np.ones((1, 5), dtype=bool))
    expected_radius_mm = pt_gev / (0.299792458 * 2.0) * 1000.0
    assert fit.radius_mm[0] == pytest.approx(expected_radius_mm, rel=1e-6)
    assert fit.pt_gev()[0] == pytest.approx(pt_gev, rel=1e-6)
    assert fit.charge()[0] == charge
    assert fit.dz_ds[0] == pytest.approx(0.8, rel=1e-6)
    np.testing.assert_allclose(np.diff(fit.s_mm[0]), np.diff(s), rtol=1e-6)
    # the fitted helix passes through a point it was not given
    np.testing.assert_allclose(
        fit.point_at(np.array([100.0 - s[0]]))[0],
        helix_points(pt_gev, 0.7, 0.8, charge, 100.0),
        atol=1e-6,
    )


def test_fit_ignores_masked_points_and_handles_straight_tracks():
    s = np.array([30.0, 75.0, 120.0, 175.0])
    curved = helix_points(1.0, -2.0, 0.3, 1, s)
    garbage = curved.copy()
    garbage[2] = [500.0, -400.0, 9.0]
    straight = np.stack([s * np.cos(0.4), s * np.sin(0.4), 0.5 * s], axis=1)
    mask = np.array([[True, True, False, True], [True, True, True, True]])
    fit = fit_helix(np.stack([garbage, straight]), mask)
    assert fit.pt_gev()[0] == pytest.approx(1.0, rel=1e-6)
    assert fit.straight.tolist() == [False, True]
    assert fit.pt_gev()[1] > 100.0
    # extrapolating the straight track to r = 250 mm lands on the line
    xyz, _, crosses = fit.intersect_cylinder(
        np.array([250.0, 250.0]), np.array([0.0, 0.0]), np.array([np.inf, np.inf])
    )
    assert crosses[1]
    np.testing.assert_allclose(xyz[1], [250 * np.cos(0.4), 250 * np.sin(0.4), 125.0], atol=0.05)


def test_interpolation_and_extrapolation_land_on_the_right_layer_and_module():
    modules = toy_modules()
    vocab = ModuleVocab(modules[["volume_id", "layer_id", "module_id"]].to_numpy())
    table = modules.sort_values(["volume_id", "layer_id", "module_id"]).reset_index(drop=True)
    table.insert(0, "token", np.arange(vocab.num_special, len(vocab)))
    surfaces = LayerSurfaces.from_modules(table, len(vocab))
    assert surfaces.is_barrel.tolist() == [True] * 4 + [False] * 3
    np.testing.assert_allclose(surfaces.radius_mm[:4], BARREL_RADII_MM)

    crossings = layer_crossings(0.8, 1.1, 0.4, -1)  # four barrel hits
    assert len(crossings) == 4
    hits = np.array([p for _, p in crossings])
    for hidden, (s_lo_i, s_hi_i) in {0: (None, 1), 2: (1, 3), 3: (2, None)}.items():
        mask = np.arange(4) != hidden
        fit = fit_helix(hits[None], mask[None])
        s_lo = np.array([fit.s_mm[0, s_lo_i] if s_lo_i is not None else -np.inf])
        s_hi = np.array([fit.s_mm[0, s_hi_i] if s_hi_i is not None else np.inf])
        xyz, _, crosses = surfaces.intersect(fit, np.array([hidden]), s_lo, s_hi)
        assert crosses[0]
        np.testing.assert_allclose(xyz[0], hits[hidden], atol=0.05)
        token, _ = surfaces.nearest_modules(np.array([hidden]), xyz, k=1)
        nearest_row = np.argmin(
            np.linalg.norm(table[["cx", "cy", "cz"]].to_numpy() - hits[hidden], axis=1)
        )
        assert token[0, 0] == table["token"][nearest_row]


def test_disk_intersection_and_coverage():
    modules = toy_modules()
    table = modules.assign(token=np.arange(len(modules)) + 6)
    surfaces = LayerSurfaces.from_modules(table, len(modules) + 6)
    s = np.array([100.0, 200.0, 300.0])
    fit = fit_helix(helix_points(1.5, 0.2, 3.0, 1, s)[None], np.ones((1, 3), dtype=bool))
    disk = int(np.flatnonzero(~surfaces.is_barrel)[0])
    xyz, _, crosses = surfaces.intersect(
        fit, np.array([disk]), np.array([-np.inf]), np.array([np.inf])
    )
    assert crosses[0] and xyz[0, 2] == pytest.approx(surfaces.z_mm[disk])
    np.testing.assert_allclose(
        xyz[0], helix_points(1.5, 0.2, 3.0, 1, surfaces.z_mm[disk] / 3.0), atol=1e-6
    )
    assert surfaces.covers(np.array([disk]), xyz)[0]
    assert not surfaces.covers(np.array([0]), np.array([[32.0, 0.0, 900.0]]))[0]
