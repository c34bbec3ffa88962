"""The ``Detector`` module table: reading, writing, lookup and local frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tracklm.detector import TRACKML_COLUMNS, Detector
from tracklm.errors import InputError


@pytest.fixture(scope="module")
def real(real_detectors_csv) -> Detector:
    return Detector.from_csv(real_detectors_csv)


@pytest.fixture(scope="module")
def real_table(real_detectors_csv) -> pd.DataFrame:
    return pd.read_csv(real_detectors_csv)


def test_reads_real_file(real, real_detectors_csv):
    assert len(real) == 18_728
    assert list(real.modules.columns) == list(TRACKML_COLUMNS)
    assert real.ids.dtype == np.int32
    assert real.centres.shape == (18_728, 3)
    assert real.rotations.shape == (18_728, 3, 3)
    assert real.name == str(real_detectors_csv)
    assert (real.select_volumes([7, 8, 9]).ids[:, 0] <= 9).all()
    assert len(real.select_volumes([7, 8, 9])) == 4_004


def test_reads_pitch_xy_layout(real, real_table, tmp_path):
    path = tmp_path / "codalab.csv"
    real_table.rename(columns={"pitch_u": "pitchX", "pitch_v": "pitchY"}).to_csv(path, index=False)
    renamed = Detector.from_csv(path)
    pd.testing.assert_frame_equal(renamed.modules, real.modules)


def test_csv_round_trip(real, tmp_path):
    path = tmp_path / "detectors.csv"
    real.to_csv(path)
    again = Detector.from_csv(path)
    assert np.array_equal(again.ids, real.ids)
    # to_csv writes 7 significant digits; the reference file itself carries 6.
    np.testing.assert_allclose(again.centres, real.centres, rtol=1e-6)
    np.testing.assert_allclose(again.rotations, real.rotations, rtol=1e-6, atol=1e-7)


def test_sorted_on_construction_and_duplicates_rejected(real_table):
    shuffled = real_table.sample(frac=1.0, random_state=0)
    detector = Detector(shuffled, name="shuffled")
    keys = detector.ids.astype(np.int64)
    assert np.all(np.diff(keys[:, 0] * 10**8 + keys[:, 1] * 10**5 + keys[:, 2]) > 0)
    doubled = pd.concat([real_table, real_table.iloc[[5]]])
    with pytest.raises(
        InputError, match=r"doubled: module \(7(\.0)?, 2(\.0)?, 6(\.0)?\) is listed twice"
    ):
        Detector(doubled, name="doubled")


def test_rows_lookup(real):
    table = real.modules
    wanted = np.array([0, 1234, len(table) - 1])
    rows = real.rows(
        table.volume_id.to_numpy()[wanted],
        table.layer_id.to_numpy()[wanted],
        table.module_id.to_numpy()[wanted],
    )
    assert np.array_equal(rows, wanted)
    missing = real.rows(np.array([8, 8, 99, 1]), np.array([2, 3, 2, 2]), np.array([225, 1, 1, 1]))
    assert np.array_equal(missing, [-1, -1, -1, -1])


def test_local_global_round_trip_and_contains():
    # The built-in detector's rotations are orthonormal to machine precision; the reference
    # file's six-digit rotations are not, which would limit the round trip to about 1e-4 mm.
    detector = Detector.builtin()
    rng = np.random.default_rng(7)
    rows = rng.integers(0, len(detector), size=500)
    hv = detector.modules.module_hv.to_numpy()[rows]
    v = rng.uniform(-1, 1, size=500) * hv
    frames = detector.frames
    u = rng.uniform(-1, 1, size=500) * frames.half_width(rows, v)
    uvw = np.stack([u, v, np.zeros(500)], axis=1)
    xyz = frames.to_global(rows, uvw)
    np.testing.assert_allclose(frames.to_local(rows, xyz), uvw, atol=1e-9)
    assert detector.contains(rows, xyz).all()
    # A local point maps to centre + u * u_axis + v * v_axis: check one module by hand.
    row = int(rows[0])
    axes = detector.rotations[row]
    np.testing.assert_allclose(
        xyz[0], detector.centres[row] + u[0] * axes[:, 0] + v[0] * axes[:, 1]
    )

    outside_u = uvw + np.stack(
        [2 * detector.modules.module_maxhu.to_numpy()[rows], 0 * v, 0 * v], 1
    )
    outside_v = uvw + np.stack([0 * v, 2 * hv, 0 * v], 1)
    outside_w = uvw + np.stack([0 * v, 0 * v, detector.modules.module_t.to_numpy()[rows]], 1)
    for points in (outside_u, outside_v, outside_w):
        assert not detector.contains(rows, frames.to_global(rows, points)).any()


def test_trapezoid_half_width(real):
    table = real.modules
    row = int(np.flatnonzero((table.volume_id == 12).to_numpy())[0])
    rows = np.array([row, row, row])
    hv = table.module_hv[row]
    widths = real.frames.half_width(rows, np.array([-hv, 0.0, hv]))
    low, high = table.module_minhu[row], table.module_maxhu[row]
    np.testing.assert_allclose(widths, [low, 0.5 * (low + high), high])


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(InputError, match=r"absent\.csv: no such detector file"):
        Detector.from_csv(path)


def test_missing_column(real_table, tmp_path):
    path = tmp_path / "nocz.csv"
    real_table.head(20).drop(columns=["cz"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"nocz\.csv: missing column 'cz'"):
        Detector.from_csv(path)


def test_non_numeric_value_names_row_and_column(real_table, tmp_path):
    table = real_table.head(20).astype({"module_hv": object})
    table.loc[6, "module_hv"] = "wide"
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    # Data row 6 (0-based) is row 7 in the project-wide convention: data rows counted from 1, header excluded.
    with pytest.raises(InputError, match=r"bad\.csv: row 7, column 'module_hv': not a number"):
        Detector.from_csv(path)


def test_duplicate_module_in_file(real_table, tmp_path):
    path = tmp_path / "dup.csv"
    pd.concat([real_table.head(10), real_table.iloc[[3]]]).to_csv(path, index=False)
    with pytest.raises(
        InputError, match=r"dup\.csv: module \(7(\.0)?, 2(\.0)?, 4(\.0)?\) is listed twice"
    ):
        Detector.from_csv(path)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("module_hv", 0.0, r"row 4, column 'module_hv': 0 is not > 0"),
        ("pitch_v", -0.05, r"row 4, column 'pitch_v': -0\.05 is not > 0"),
        ("module_id", 2.5, r"row 4, column 'module_id': 2\.5 is not a whole number"),
        ("cx", np.inf, r"row 4, column 'cx': inf is not a finite number"),
        ("rot_xu", 0.0, r"row 4: the rotation \(rot_xu \.\.\. rot_zw\) is not orthonormal"),
    ],
)
def test_impossible_modules_are_refused(real_table, tmp_path, column, value, problem):
    table = real_table.head(10).copy()
    table[column] = table[column].astype(float)
    table.loc[3, column] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match=rf"bad\.csv: {problem}$"):
        Detector.from_csv(path)


def test_one_pitch_layout_at_a_time(real_table, tmp_path):
    path = tmp_path / "both.csv"
    real_table.head(5).assign(pitchX=0.05).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"both\.csv: both 'pitchX' and 'pitch_u' columns"):
        Detector.from_csv(path)
