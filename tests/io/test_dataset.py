"""Prepared dataset arrays: streaming writer, memory-mapped reader, dataset directory checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.dataset import SplitWriter, TrackArrays, load_split, modules_table, open_dataset


def random_tracks(n: int, width: int, seed: int, event_id: int = 1) -> TrackArrays:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, width + 1, n).astype(np.int32)
    valid = np.arange(width)[None, :] < lengths[:, None]
    tokens = np.where(valid, rng.integers(6, 100, (n, width)), 0).astype(np.int32)
    return TrackArrays(
        tokens=tokens,
        lengths=lengths,
        hits=(rng.normal(size=(n, width, 3)) * valid[..., None]).astype(np.float32),
        pt=rng.exponential(1.0, n).astype(np.float32),
        eta=rng.normal(size=n).astype(np.float32),
        phi=rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        charge=rng.choice(np.array([-1, 1], np.int8), n),
        vertex=rng.normal(size=(n, 3)).astype(np.float32),
        event_id=np.full(n, event_id, np.int64),
        particle_id=rng.integers(1, 2**62, n, dtype=np.int64),
    )


def test_split_writer_round_trip_over_several_appends(tmp_path: Path) -> None:
    parts = [random_tracks(n, 8, seed, event_id=seed) for seed, n in enumerate([5, 0, 17, 1])]
    with SplitWriter(tmp_path / "train", 8) as writer:
        for part in parts:
            writer.append(part)
        assert writer.n_tracks == 23
    loaded = load_split(tmp_path / "train")
    expected = TrackArrays.concatenate(parts, 8)
    assert len(loaded) == 23 and loaded.max_length == 8
    for name, dtype in TrackArrays.DTYPES.items():
        array = getattr(loaded, name)
        assert isinstance(array, np.memmap) and array.dtype == dtype, name
        np.testing.assert_array_equal(array, getattr(expected, name), err_msg=name)
    in_memory = load_split(tmp_path / "train", mmap=False)
    assert not isinstance(in_memory.tokens, np.memmap)
    np.testing.assert_array_equal(in_memory.take(np.array([2, 0])).pt, expected.pt[[2, 0]])


def test_empty_split_keeps_its_shapes(tmp_path: Path) -> None:
    SplitWriter(tmp_path / "val", 12).close()
    loaded = load_split(tmp_path / "val")
    assert len(loaded) == 0
    assert (
        loaded.tokens.shape == (0, 12)
        and loaded.hits.shape == (0, 12, 3)
        and loaded.vertex.shape == (0, 3)
    )


def test_split_writer_refuses_the_wrong_width(tmp_path: Path) -> None:
    with (
        SplitWriter(tmp_path / "train", 8) as writer,
        pytest.raises(ValueError, match=r"tokens\.npy"),
    ):
        writer.append(random_tracks(3, 9, 0))


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    with SplitWriter(tmp_path / "test", 4) as writer:
        writer.append(random_tracks(2, 4, 1))
    (tmp_path / "test" / "pt.npy").unlink()
    with pytest.raises(InputError, match=r"test/pt\.npy: missing"):
        load_split(tmp_path / "test")


class _TwoModuleDetector:
    def rows(self, volume, layer, module):
        return np.where(np.asarray(module) == 1, 0, 1)

    centres = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def test_open_dataset_checks_the_vocabulary_hash(tmp_path: Path) -> None:
    vocab = ModuleVocab(np.array([[8, 2, 2], [8, 2, 1]]))
    vocab.save(tmp_path / "vocab.json")
    modules = modules_table(vocab, _TwoModuleDetector())
    assert modules["token"].tolist() == [6, 7] and modules["module_id"].tolist() == [1, 2]
    modules.to_parquet(tmp_path / "modules.parquet")
    (tmp_path / "manifest.json").write_text(
        json.dumps({"stage": "prepare", "vocab_sha256": vocab.sha256})
    )
    dataset = open_dataset(tmp_path)
    assert dataset.vocab == vocab
    pd.testing.assert_frame_equal(dataset.modules, modules)
    centres = dataset.module_centres
    assert np.isnan(centres[:6]).all() and centres[7].tolist() == [4.0, 5.0, 6.0]
    (tmp_path / "manifest.json").write_text(json.dumps({"vocab_sha256": "0" * 64}))
    with pytest.raises(InputError, match=r"vocab_sha256 does not match vocab\.json"):
        open_dataset(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(InputError, match=r"manifest\.json: missing"):
        open_dataset(tmp_path)


def _copy(toy_data: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(toy_data, tmp_path / "data"))


def test_open_dataset_refuses_a_manifest_that_disagrees_with_the_arrays(
    toy_data: Path, tmp_path: Path
) -> None:
    data = _copy(toy_data, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["n_tracks"]["val"] += 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        InputError, match=r"manifest\.json: n_tracks\.val is \d+, but .*val/lengths\.npy holds"
    ):
        open_dataset(data)


@pytest.mark.parametrize(
    ("field", "edit", "problem"),
    [
        (
            "tokens",
            lambda a: np.where(a == a.max(), 10**6, a),
            r"tokens\.npy: track \d+: token id 1000000 outside",
        ),
        ("lengths", lambda a: a + 1, r"lengths\.npy: track \d+: length 9 outside \[0, 8\]"),
        ("pt", lambda a: a[:-1], r"pt\.npy: shape \(\d+,\), expected"),
        ("charge", lambda a: a.astype(np.float64), r"charge\.npy: dtype float64, expected int8"),
    ],
)
def test_open_dataset_refuses_arrays_that_do_not_fit(
    toy_data: Path, tmp_path: Path, field: str, edit, problem: str
) -> None:
    data = _copy(toy_data, tmp_path)
    path = data / "train" / f"{field}.npy"
    np.save(path, edit(np.load(path)))
    with pytest.raises(InputError, match=problem):
        open_dataset(data)


def test_open_dataset_refuses_a_module_table_that_is_not_the_vocabulary(
    toy_data: Path, tmp_path: Path
) -> None:
    data = _copy(toy_data, tmp_path)
    modules = pd.read_parquet(data / "modules.parquet")
    modules.iloc[1:].to_parquet(data / "modules.parquet", index=False)
    with pytest.raises(InputError, match=r"modules\.parquet: the module table does not match"):
        open_dataset(data)
    (data / "modules.parquet").write_bytes(b"PAR1 cut")
    with pytest.raises(InputError, match=r"modules\.parquet: unreadable"):
        open_dataset(data)
