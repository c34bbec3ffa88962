"""Track extraction: hand counts on the real event, flight order, selections, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.data.tracks import (
    ORDERS,
    SELECTIONS,
    Selection,
    check_modules,
    extract_tracks,
    get_selection,
    hit_order_key,
)
from tracklm.detector.geometry import PIXEL_VOLUMES, Detector
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.trackml import Event, read_event


@pytest.fixture(scope="module")
def real_detector(real_detectors_csv: Path) -> Detector:
    return Detector.from_csv(real_detectors_csv)


@pytest.fixture(scope="module")
def real_event(real_event_dir: Path) -> Event:
    return read_event(real_event_dir, 1)


def _extract(event: Event, detector: Detector, selection: str, order: str = "distance"):
    chosen = SELECTIONS[selection]
    return extract_tracks(
        event.hits, event.truth, event.particles, chosen.vocab(detector), chosen, order, event_id=1
    )


def _valid(tracks) -> np.ndarray:
    return np.arange(tracks.max_length)[None, :] < tracks.lengths[:, None]


# --------------------------------------------------------------------------- the real event
def test_pixel_4to8_gives_exactly_the_hand_counted_tracks(
    real_event: Event, real_detector: Detector
) -> None:
    merged = real_event.truth[["hit_id", "particle_id"]].merge(
        real_event.hits[["hit_id", "volume_id", "layer_id", "module_id"]], on="hit_id"
    )
    pixel = merged[(merged["particle_id"] != 0) & merged["volume_id"].isin([7, 8, 9])]
    counts = pixel.groupby("particle_id").size()
    expected = counts[(counts >= 4) & (counts <= 8)]
    assert 100 < len(expected) < len(counts)  # the cut does something on this event

    tracks = _extract(real_event, real_detector, "pixel-4to8")
    assert dict(zip(tracks.particle_id.tolist(), tracks.lengths.tolist())) == expected.to_dict()
    assert np.all(tracks.event_id == 1)
    assert np.all(tracks.tokens[~_valid(tracks)] == 0)  # [PAD] after the last hit

    # Every track holds exactly its particle's pixel modules.
    vocab = SELECTIONS["pixel-4to8"].vocab(real_detector)
    triples = vocab.decode(tracks.tokens)[_valid(tracks)]
    ours = pd.DataFrame(triples, columns=["volume_id", "layer_id", "module_id"])
    ours.insert(0, "particle_id", np.repeat(tracks.particle_id, tracks.lengths))
    hand = pixel[pixel["particle_id"].isin(expected.index)][ours.columns]
    key = list(ours.columns)
    pd.testing.assert_frame_equal(
        ours.sort_values(key).reset_index(drop=True),
        hand.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )


def test_track_kinematics_come_from_the_particle_at_production(
    real_event: Event, real_detector: Detector
) -> None:
    tracks = _extract(real_event, real_detector, "pixel-4to8")
    particles = real_event.particles.set_index("particle_id").loc[tracks.particle_id]
    px, py, pz = (particles[c].to_numpy(np.float64) for c in ("px", "py", "pz"))
    np.testing.assert_allclose(tracks.pt, np.hypot(px, py), rtol=1e-6)
    np.testing.assert_allclose(tracks.eta, np.arcsinh(pz / np.hypot(px, py)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tracks.phi, np.arctan2(py, px), rtol=1e-6)
    np.testing.assert_array_equal(tracks.charge, particles["q"].to_numpy())
    np.testing.assert_allclose(tracks.vertex, particles[["vx", "vy", "vz"]].to_numpy())
    # Hit positions are the measured ones of the hits file.
    hits = real_event.hits.set_index(["x", "y", "z"])
    assert len(
        hits.index.intersection(pd.MultiIndex.from_arrays(tracks.hits[_valid(tracks)].T))
    ) == int(tracks.lengths.sum())


def test_negative_endcap_tracks_run_outward_in_abs_z(
    real_event: Event, real_detector: Detector
) -> None:
    # Volume 7 is at -z and its layer ids grow toward the interaction point, so hits in flight
    # order go to lower layer ids (detector/file order would go up).
    tracks = _extract(real_event, real_detector, "pixel-min4")
    vocab = SELECTIONS["pixel-min4"].vocab(real_detector)
    triples = vocab.decode(tracks.tokens)
    step = _valid(tracks)[:, 1:]
    in7 = (triples[:, :-1, 0] == 7) & (triples[:, 1:, 0] == 7) & step
    change = triples[:, 1:, 1] - triples[:, :-1, 1]
    assert in7.sum() > 300
    assert np.all(change[in7] <= 0) and np.mean(change[in7] < 0) > 0.4
    z = tracks.hits[:, :, 2]
    assert np.all(np.abs(z[:, 1:])[in7] >= np.abs(z[:, :-1])[in7])
    in9 = (triples[:, :-1, 0] == 9) & (triples[:, 1:, 0] == 9) & step
    assert in9.sum() > 300 and np.all(change[in9] >= 0)
    # File order is detector order: within volume 7 it climbs the layers, i.e. runs inward.
    hits7 = real_event.hits.merge(real_event.truth[["hit_id", "particle_id"]], on="hit_id")
    hits7 = hits7[(hits7["volume_id"] == 7) & (hits7["particle_id"] != 0)]
    file_change = hits7.groupby("particle_id")["layer_id"].diff().dropna()
    assert (file_change > 0).sum() > 100 and (file_change < 0).sum() == 0


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_sorts_its_key_along_each_track(
    real_event: Event, real_detector: Detector, order: str
) -> None:
    tracks = _extract(real_event, real_detector, "all-min4", order)
    vertex = np.broadcast_to(tracks.vertex[:, None, :], tracks.hits.shape).reshape(-1, 3)
    key = hit_order_key(tracks.hits.reshape(-1, 3), vertex, order).reshape(tracks.lengths.size, -1)
    step = _valid(tracks)[:, 1:]
    # float32 storage of the hits: allow rounding at the 1e-3 mm level.
    assert np.all((key[:, 1:] - key[:, :-1])[step] >= -1e-3)


def test_vertex_order_reorders_a_few_tracks(real_event: Event, real_detector: Detector) -> None:
    by_distance = _extract(real_event, real_detector, "pixel-min4", "distance")
    by_vertex = _extract(real_event, real_detector, "pixel-min4", "vertex")
    np.testing.assert_array_equal(by_distance.particle_id, by_vertex.particle_id)
    differ = np.any(by_distance.tokens != by_vertex.tokens, axis=1)
    assert 0 < differ.sum() < 0.05 * differ.size
    # Same hits, another order.
    np.testing.assert_array_equal(
        np.sort(by_distance.tokens[differ], axis=1), np.sort(by_vertex.tokens[differ], axis=1)
    )


def test_selections_lengths_and_vocabularies(real_event: Event, real_detector: Detector) -> None:
    min4 = _extract(real_event, real_detector, "pixel-min4")
    short = _extract(real_event, real_detector, "pixel-4to8")
    assert min4.max_length == 12 and short.max_length == 8
    assert set(short.particle_id) < set(min4.particle_id)
    assert min4.lengths.min() == 4 and min4.lengths.max() == 12
    everything = _extract(real_event, real_detector, "all-min4")
    assert everything.max_length == 24 and len(everything) > len(min4)
    assert len(SELECTIONS["pixel-4to8"].vocab(real_detector).modules) == 4004
    assert len(SELECTIONS["all-min4"].vocab(real_detector).modules) == 18728


def test_pixel_vocabulary_is_built_from_the_geometry(real_detector: Detector) -> None:
    vocab = SELECTIONS["pixel-4to8"].vocab(real_detector)
    ids = real_detector.ids
    expected = ModuleVocab(ids[np.isin(ids[:, 0], PIXEL_VOLUMES)])
    assert vocab.sha256 == expected.sha256
    assert (
        vocab.sha256 == SELECTIONS["pixel-min4"].vocab(Detector.from_csv(real_detector.name)).sha256
    )
    np.testing.assert_array_equal(vocab.modules[0], [7, 2, 1])


def test_unknown_module_is_named_with_file_and_row(
    real_event: Event, real_detector: Detector
) -> None:
    check_modules(real_event.hits, real_detector, "hits.csv")
    hits = real_event.hits.copy()
    hits.loc[41, "module_id"] = 99999
    with pytest.raises(InputError, match=r"^hits\.csv: row 42: module \(\d+, \d+, 99999\)"):
        check_modules(hits, real_detector, "hits.csv")


def test_unknown_selection_and_order_name_the_option() -> None:
    with pytest.raises(InputError, match="--selection: unknown selection 'pixel'"):
        get_selection("pixel")
    with pytest.raises(InputError, match="--order: unknown order 'time'"):
        hit_order_key(np.zeros((1, 3)), np.zeros((1, 3)), "time")


# --------------------------------------------------------------------------- hand-made events
def _toy_event(
    particle_hits: dict[int, list[tuple[float, float, float]]], vertex=None, noise: int = 2
):
    """One module per hit: module (8, 2, k) for the k-th hit (1-based)."""
    rows, truth_ids = [], []
    for pid, points in particle_hits.items():
        for point in points:
            rows.append(point)
            truth_ids.append(pid)
    rows += [(1.0, 1.0, 1.0)] * noise
    truth_ids += [0] * noise
    n = len(rows)
    xyz = np.array(rows, dtype=np.float32)
    hits = pd.DataFrame(
        {
            "hit_id": np.arange(1, n + 1, dtype=np.int64),
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
            "volume_id": np.full(n, 8, np.int32),
            "layer_id": np.full(n, 2, np.int32),
            "module_id": np.arange(1, n + 1, dtype=np.int32),
        }
    )
    truth = pd.DataFrame({"hit_id": hits["hit_id"], "particle_id": np.array(truth_ids, np.int64)})
    pids = np.array(sorted(particle_hits), dtype=np.int64)
    vertex = {} if vertex is None else vertex
    vxyz = np.array([vertex.get(int(p), (0.0, 0.0, 0.0)) for p in pids], dtype=np.float32).reshape(
        -1, 3
    )
    particles = pd.DataFrame(
        {
            "particle_id": pids,
            "vx": vxyz[:, 0],
            "vy": vxyz[:, 1],
            "vz": vxyz[:, 2],
            "px": np.full(pids.size, 3.0, np.float32),
            "py": np.full(pids.size, 4.0, np.float32),
            "pz": np.zeros(pids.size, np.float32),
            "q": np.ones(pids.size, np.int32),
            "nhits": np.zeros(pids.size, np.int32),
        }
    )
    vocab = ModuleVocab(np.column_stack([np.full(n, 8), np.full(n, 2), np.arange(1, n + 1)]))
    return hits, truth, particles, vocab


TOY_SELECTION = Selection("toy", (8,), min_hits=3, max_hits=4, truncate_long=False)


def test_hand_made_orders_distance_vertex_and_radius() -> None:
    # Four hits of one particle produced at z = 300 mm: the three orders all differ.
    #        hit 1 (module 1)  hit 2        hit 3         hit 4
    points = [(10, 0, 290), (30, 0, 200), (20, 0, 400), (5, 0, 100)]
    hits, truth, particles, vocab = _toy_event({7: points}, vertex={7: (0, 0, 300)})
    first = vocab.num_special  # token of module (8, 2, 1)
    expected = {
        "distance": [4, 2, 1, 3],  # |x| = 100.1, 202.2, 290.2, 400.5
        "vertex": [1, 3, 2, 4],  # |x - v| = 14.1, 102.0, 104.4, 200.1
        "r": [4, 1, 3, 2],  # r = 5, 10, 20, 30
    }
    for order, modules in expected.items():
        tracks = extract_tracks(hits, truth, particles, vocab, TOY_SELECTION, order)
        np.testing.assert_array_equal(
            tracks.tokens[0], np.array(modules) - 1 + first, err_msg=order
        )
        np.testing.assert_array_equal(tracks.hits[0, :, 2], [points[m - 1][2] for m in modules])
    assert tracks.pt[0] == pytest.approx(5.0) and tracks.eta[0] == 0.0


def test_hand_made_length_cuts_drop_or_truncate() -> None:
    along_z = [(0, 0, float(z)) for z in (40, 10, 30, 20, 50)]  # flight order: 2, 4, 3, 1, 5
    hits, truth, particles, vocab = _toy_event(
        {11: along_z[:2], 12: along_z[:3], 13: along_z[:4], 14: along_z}
    )
    tracks = extract_tracks(hits, truth, particles, vocab, TOY_SELECTION)
    assert tracks.particle_id.tolist() == [12, 13] and tracks.lengths.tolist() == [3, 4]
    truncating = Selection("toy-cut", (8,), min_hits=3, max_hits=4, truncate_long=True)
    tracks = extract_tracks(hits, truth, particles, vocab, truncating)
    assert tracks.particle_id.tolist() == [12, 13, 14] and tracks.lengths.tolist() == [3, 4, 4]
    # Particle 14's hits sit on modules 10..14 (after 2 + 3 + 4 earlier hits): first 4 in flight.
    first14 = 2 + 3 + 4 + vocab.num_special
    np.testing.assert_array_equal(tracks.tokens[2], first14 + np.array([1, 3, 2, 0]))
    assert np.all(tracks.tokens[0, 3:] == 0) and np.all(tracks.hits[0, 3:] == 0)


def test_volume_filter_noise_and_truth_order() -> None:
    hits, truth, particles, vocab = _toy_event({5: [(0, 0, z) for z in (1, 2, 3, 4)]}, noise=3)
    outside = Selection("other", (9,), min_hits=1, max_hits=4, truncate_long=True)
    assert len(extract_tracks(hits, truth, particles, vocab, outside)) == 0
    reference = extract_tracks(hits, truth, particles, vocab, TOY_SELECTION)
    assert reference.particle_id.tolist() == [5]  # noise hits (particle 0) make no track
    shuffled = truth.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = extract_tracks(hits, shuffled, particles, vocab, TOY_SELECTION)
    for name in ("tokens", "lengths", "hits", "particle_id"):
        np.testing.assert_array_equal(getattr(again, name), getattr(reference, name))


def test_empty_event_gives_empty_arrays_of_the_right_width() -> None:
    hits, truth, particles, vocab = _toy_event({}, noise=3)
    tracks = extract_tracks(hits, truth, particles, vocab, TOY_SELECTION)
    assert (
        tracks.tokens.shape == (0, 4)
        and tracks.hits.shape == (0, 4, 3)
        and tracks.vertex.shape == (0, 3)
    )


def test_inconsistent_tables_name_file_and_row() -> None:
    hits, truth, particles, vocab = _toy_event({5: [(0, 0, z) for z in (1, 2, 3)]})
    names = {"hits": "h.csv", "truth": "t.csv", "particles": "p.csv"}
    with pytest.raises(InputError, match=r"^t\.csv: row 1: particle_id 5 is not in p\.csv"):
        extract_tracks(hits, truth, particles.iloc[:0], vocab, TOY_SELECTION, sources=names)
    moved = truth.copy()
    moved.loc[1, "hit_id"] = 77
    with pytest.raises(InputError, match=r"^t\.csv: row 2: hit_id 77 is not in h\.csv"):
        extract_tracks(hits, moved, particles, vocab, TOY_SELECTION, sources=names)
    with pytest.raises(InputError, match=rf"^t\.csv: no rows, but h\.csv holds {len(hits)} hits$"):
        extract_tracks(hits, truth.iloc[:0], particles, vocab, TOY_SELECTION, sources=names)
    doubled = pd.concat([particles, particles])
    with pytest.raises(
        InputError, match=r"^p\.csv: row 2, column 'particle_id': duplicate value 5"
    ):
        extract_tracks(hits, truth, doubled, vocab, TOY_SELECTION, sources=names)
    with pytest.raises(
        InputError, match=r"^h\.csv: row 1: module \(8, 2, 1\).*not in the vocabulary"
    ):
        extract_tracks(
            hits,
            truth,
            particles,
            ModuleVocab(np.array([[8, 2, 99]])),
            TOY_SELECTION,
            sources=names,
        )
