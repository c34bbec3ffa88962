"""Detector layers and point -> module lookup on the built-in and the real TrackML detector."""

from __future__ import annotations

import numpy as np
import pytest

from tracklm.detector.geometry import Detector
from tracklm.detector.layers import BARREL, DISK, detector_layers
from tracklm.detector.locator import ModuleLocator


@pytest.fixture(scope="module")
def builtin_locator() -> ModuleLocator:
    return ModuleLocator(Detector.load("trackml"))


def test_layers_are_classified_as_barrels_and_disks(builtin_locator: ModuleLocator) -> None:
    surfaces = builtin_locator.layers
    assert len(surfaces) == 48
    barrels = {(s.volume_id, s.layer_id) for s in surfaces if s.kind == BARREL}
    assert {v for v, _ in barrels} == {8, 13, 17}
    assert all(s.kind == DISK for s in surfaces if s.volume_id not in (8, 13, 17))
    pixel_barrel = [s for s in surfaces if s.volume_id == 8]
    np.testing.assert_allclose([s.radius_mm for s in pixel_barrel], [32, 72, 116, 172], atol=0.5)
    # Outlines reach beyond the outermost module centres (z = +-455 plus a half-length of 36).
    assert all(s.z_max_mm > 490 and s.z_min_mm < -490 for s in pixel_barrel)
    disk = next(s for s in surfaces if (s.volume_id, s.layer_id) == (7, 2))
    assert disk.z_mm == pytest.approx(-1500.0, abs=3.0)
    assert disk.r_min_mm < 35 and disk.r_max_mm > 170


def test_module_centres_locate_to_their_own_module(builtin_locator: ModuleLocator) -> None:
    detector = builtin_locator.detector
    rows = builtin_locator.locate(detector.centres, builtin_locator.module_layer)
    np.testing.assert_array_equal(rows, np.arange(len(detector)))


def test_points_near_module_corners_are_found(builtin_locator: ModuleLocator) -> None:
    arrays = builtin_locator.frames
    rows = np.arange(0, len(builtin_locator.detector), 7)
    # 95% of the way to a corner: inside this module, and maybe in an overlapping neighbour.
    v = 0.95 * arrays.hv[rows]
    uvw = np.stack([0.95 * arrays.half_width(rows, v), v, np.zeros_like(v)], axis=1)
    points = arrays.to_global(rows, uvw)
    candidates = builtin_locator.candidates(builtin_locator.module_layer[rows], points)
    assert np.all((candidates == rows[:, None]).any(axis=1))
    assert np.all(builtin_locator.locate(points, builtin_locator.module_layer[rows]) == rows)


def test_points_off_every_module_give_minus_one(builtin_locator: ModuleLocator) -> None:
    pixel_barrel = builtin_locator.layer_index(8, 2)
    # Between pixel layers (r = 50 mm), beyond the barrel's end and far off the sensor plane.
    points = np.array([[50.0, 0.0, 0.0], [0.0, 32.0, 700.0], [0.0, -45.0, 10.0]])
    assert np.all(builtin_locator.locate(points, pixel_barrel) == -1)
    disk = builtin_locator.layer_index(9, 2)
    assert builtin_locator.locate(np.array([[5.0, 0.0, 600.0]]), disk)[0] == -1


def test_real_detector_layers_and_lookup(real_detectors_csv) -> None:  # type: ignore[no-untyped-def]
    detector = Detector.from_csv(real_detectors_csv)
    surfaces = detector_layers(detector)
    assert sum(s.kind == BARREL for s in surfaces) == 10
    locator = ModuleLocator(detector)
    rows = locator.locate(detector.centres, locator.module_layer)
    np.testing.assert_array_equal(rows, np.arange(len(detector)))
