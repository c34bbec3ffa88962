"""Helix fit (``tracklm.tracking.helix``), token layers and module frames (``tracklm.detector``)
against helices generated independently (tests/reference/helices.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.reference.helices import BARREL_RADII_MM, helix_points, layer_crossings, toy_modules
from tracklm.detector.geometry import TRACKML_COLUMNS, Detector
from tracklm.detector.layers import TokenLayers
from tracklm.detector.vocab import ModuleVocab
from tracklm.tracking.constants import TRACKML_FIELD_TESLA
from tracklm.tracking.helix import fit_helix


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
    surfaces = TokenLayers.from_modules(table, len(vocab))
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
    surfaces = TokenLayers.from_modules(table, len(modules) + 6)
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


@pytest.mark.parametrize(
    ("pt_gev", "charge", "phi0"), [(0.5, 1, 0.3), (2.0, -1, 2.9), (0.8, -1, -3.0)]
)
def test_fit_through_origin_recovers_circle_charge_and_slope(pt_gev, charge, phi0):
    s = np.array([0.0, 32.0, 72.0, 116.0, 172.0])
    points = helix_points(pt_gev, phi0, 1.3, charge, s)[None]
    fit = fit_helix(points, np.ones((1, 5), dtype=bool), through_origin=True)
    assert fit.pt_gev()[0] == pytest.approx(pt_gev, rel=1e-4)
    assert fit.charge()[0] == charge
    assert fit.dz_ds[0] == pytest.approx(1.3, rel=1e-6)


def test_covariance_weights_follow_coarse_directions():
    """Points exact along the circle's normal but coarse along z keep the circle exact, and a
    point with a large z error does not pull the (s, z) line."""
    s = np.array([30.0, 75.0, 120.0, 175.0])
    points = helix_points(1.0, 0.5, 0.4, 1, s)
    shifted = points.copy()
    shifted[2, 2] += 40.0  # a coarse z measurement, far off
    cov = np.zeros((1, 4, 3, 3))
    cov[0, :, 2, 2] = 0.01
    cov[0, 2, 2, 2] = 400.0  # sigma 20 mm in z for that point
    fit = fit_helix(shifted[None], np.ones((1, 4), dtype=bool), cov)
    unweighted = fit_helix(shifted[None], np.ones((1, 4), dtype=bool))
    assert fit.pt_gev()[0] == pytest.approx(1.0, rel=1e-4)
    assert abs(fit.dz_ds[0] - 0.4) < 0.01 < abs(unweighted.dz_ds[0] - 0.4)


def _two_ring_disk() -> tuple[pd.DataFrame, Detector]:
    """One disk at z = 500: an inner ring of short modules (hv 10 mm at r = 60) and an outer ring
    of long ones (hv 45 mm at r = 120), 8 modules each, v axis radial."""
    rows = []
    for ring, (radius, hv) in enumerate([(60.0, 10.0), (120.0, 45.0)]):
        for k in range(8):
            phi = 2 * np.pi * k / 8
            u = [-np.sin(phi), np.cos(phi), 0.0]
            v = [np.cos(phi), np.sin(phi), 0.0]
            w = np.cross(u, v)
            rot = np.stack([u, v, w], axis=1)  # columns u, v, w
            rows.append(
                dict(volume_id=9, layer_id=2, module_id=8 * ring + k + 1,
                     cx=radius * np.cos(phi), cy=radius * np.sin(phi), cz=500.0,
                     **{f"rot_{g}{a}": rot[i, j] for i, g in enumerate("xyz") for j, a in enumerate("uvw")},
                     module_t=0.15, module_minhu=30.0, module_maxhu=30.0, module_hv=hv,
                     pitch_u=0.05, pitch_v=0.05)
            )  # fmt: skip
    frame = pd.DataFrame(rows)
    detector = Detector(frame[list(TRACKML_COLUMNS)], name="two-ring")
    table = frame[["volume_id", "layer_id", "module_id", "cx", "cy", "cz"]].copy()
    table.insert(0, "token", np.arange(6, 6 + len(frame)))
    return table, detector


def test_containment_picks_the_module_whose_bounds_hold_the_point():
    table, detector = _two_ring_disk()
    surfaces = TokenLayers.from_modules(table, 6 + len(table))
    bounds = detector.frames_by_token(table, 6 + len(table))
    assert bounds.exact
    # r = 85 along phi = 0: 25 mm from the inner centre, 35 from the outer one, but only the
    # outer (long) module reaches down to r = 75.
    point = np.array([[85.0, 0.0, 500.0]])
    nearest, _ = surfaces.nearest_modules(np.array([0]), point, k=1)
    contained, score = surfaces.rank_modules(bounds, np.array([0]), point, k=2)
    inner, outer = 6, 6 + 8
    assert nearest[0, 0] == inner
    assert contained[0, 0] == outer and score[0, 0] < 1.0
    assert bounds.outside(np.array([outer, inner]), np.repeat(point, 2, axis=0)).tolist()[1] > 1.0
    # the excluded containing module gives way to the next best
    again, _ = surfaces.rank_modules(bounds, np.array([0]), point, k=1, exclude=np.array([[outer]]))
    assert again[0, 0] not in (outer, -1)
    # the bounds agree with the detector's own containment test
    rows = detector.rows(np.array([9]), np.array([2]), np.array([9]))
    assert detector.contains(rows, point)[0]


def test_pt_and_charge_follow_the_field_the_fit_is_given():
    s = np.array([30.0, 75.0, 120.0, 175.0])
    points = helix_points(1.2, 0.3, 0.5, -1, s)[None]
    at_2t = fit_helix(points, np.ones((1, 4), dtype=bool))
    assert at_2t.b_field_t == TRACKML_FIELD_TESLA == 2.0
    at_4t = fit_helix(points, np.ones((1, 4), dtype=bool), b_field_t=4.0)
    assert at_4t.pt_gev()[0] == pytest.approx(2.0 * at_2t.pt_gev()[0], rel=1e-12)
    assert at_4t.charge()[0] == at_2t.charge()[0] == -1
    reversed_field = fit_helix(points, np.ones((1, 4), dtype=bool), b_field_t=-2.0)
    assert reversed_field.charge()[0] == 1
