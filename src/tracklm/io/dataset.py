"""Prepared track datasets: fixed-width token arrays per split, memory-mapped for training.

Layout of a dataset directory (written by ``tracklm prepare``)::

    DATA/manifest.json  vocab.json  modules.parquet
    DATA/{train,val,test}/<field>.npy     one .npy file per field of ``TrackArrays``

Every ``.npy`` opens with ``mmap_mode="r"``, so a dataset larger than memory trains. Writers append
event by event (``SplitWriter``), so preparing one keeps only a few events in memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from tracklm.detector.frames import ModuleFrames
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError
from tracklm.io.native import read_parquet
from tracklm.manifest import sha256_file
from tracklm.tracking.constants import TRACKML_FIELD_TESLA

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class TrackArrays:
    """Tracks of one split (or one event) as aligned arrays; N tracks, L the padded length.

    Attributes
    ----------
    tokens : (N, L) int32 module token ids in flight order, ``[PAD]`` (0) after the last hit.
    lengths : (N,) int32 number of hits.
    hits : (N, L, 3) float32 hit positions x, y, z in mm (0 where padded).
    pt : (N,) float32 transverse momentum in GeV at production.
    eta, phi : (N,) float32 pseudorapidity and azimuth (rad) of the momentum at production.
    charge : (N,) int8 charge in units of e.
    vertex : (N, 3) float32 production vertex in mm.
    event_id : (N,) int64 event number.
    particle_id : (N,) int64 TrackML particle id.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    hits: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    charge: np.ndarray
    vertex: np.ndarray
    event_id: np.ndarray
    particle_id: np.ndarray

    DTYPES: ClassVar[dict[str, type]] = {
        "tokens": np.int32,
        "lengths": np.int32,
        "hits": np.float32,
        "pt": np.float32,
        "eta": np.float32,
        "phi": np.float32,
        "charge": np.int8,
        "vertex": np.float32,
        "event_id": np.int64,
        "particle_id": np.int64,
    }

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.tokens.shape[1])

    def take(self, index: np.ndarray | slice) -> TrackArrays:
        """The tracks at ``index`` (in memory)."""
        return TrackArrays(**{name: np.asarray(getattr(self, name)[index]) for name in self.DTYPES})

    @classmethod
    def empty(cls, max_length: int) -> TrackArrays:
        shapes = {"tokens": (0, max_length), "hits": (0, max_length, 3), "vertex": (0, 3)}
        return cls(
            **{name: np.zeros(shapes.get(name, (0,)), dtype) for name, dtype in cls.DTYPES.items()}
        )

    @classmethod
    def concatenate(cls, parts: list[TrackArrays], max_length: int) -> TrackArrays:
        if not parts:
            return cls.empty(max_length)
        return cls(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.DTYPES}
        )


_HEADER_BYTES = 128  # reserved so the final shape can be written in place


def _npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': {shape!r}, }}"
    body = _HEADER_BYTES - 10
    if len(text) + 1 > body:
        raise ValueError("shape too large for the reserved .npy header")
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", body)
        + (text.ljust(body - 1) + "\n").encode("latin1")
    )


class _GrowingNpy:
    """A .npy file whose first axis grows as rows are appended."""

    def __init__(self, path: Path, dtype: Any, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.rows = 0
        # Open across appends until close(), which also rewrites the header.
        self.handle = open(path, "wb")  # noqa: SIM115
        self.handle.write(_npy_header(self.dtype, (0, *row_shape)))

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path.name}: rows of shape {values.shape[1:]}, expected {self.row_shape}"
            )
        self.handle.write(values.tobytes())
        self.rows += values.shape[0]

    def close(self) -> None:
        self.handle.seek(0)
        self.handle.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.handle.close()


class SplitWriter:
    """Append tracks to ``directory/<field>.npy``, one event batch at a time.

    Parameters
    ----------
    directory : the split's directory (created).
    max_length : padded width L of ``tokens`` and ``hits``.
    """

    def __init__(self, directory: str | os.PathLike[str], max_length: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_length = max_length
        row_shapes = {"tokens": (max_length,), "hits": (max_length, 3), "vertex": (3,)}
        self._files = {
            name: _GrowingNpy(self.directory / f"{name}.npy", dtype, row_shapes.get(name, ()))
            for name, dtype in TrackArrays.DTYPES.items()
        }

    def append(self, tracks: TrackArrays) -> None:
        for name, handle in self._files.items():
            handle.append(getattr(tracks, name))

    @property
    def n_tracks(self) -> int:
        return self._files["lengths"].rows

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_split(directory: str | os.PathLike[str], *, mmap: bool = True) -> TrackArrays:
    """Open one split directory as ``TrackArrays`` (memory-mapped unless ``mmap=False``)."""
    directory = Path(directory)
    arrays = {}
    for name in TrackArrays.DTYPES:
        path = directory / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"{path}: missing (not a tracklm dataset split?)") from None
        except (ValueError, OSError, EOFError) as exc:
            # a cut file: numpy cannot map the bytes its header promises (or read the header)
            raise InputError(f"{path}: unreadable ({_first_line(exc)})") from None
    return TrackArrays(**arrays)


def check_split(directory: str | os.PathLike[str], vocab_size: int) -> TrackArrays:
    """Open one split and check that its arrays agree with each other and with the vocabulary.

    Parameters
    ----------
    directory : the split's directory.
    vocab_size : number of tokens of the dataset's vocabulary (tokens must lie below it).

    Returns
    -------
    The split, memory-mapped.

    Raises
    ------
    InputError
        Naming the file whose dtype or shape differs from the layout (``TrackArrays``) or whose
        tokens or lengths are out of range.
    """
    directory = Path(directory)
    tracks = load_split(directory)
    n, width = len(tracks), tracks.tokens.shape[-1] if tracks.tokens.ndim == 2 else -1
    shapes = {"tokens": (n, width), "hits": (n, width, 3), "vertex": (n, 3)}
    for name, dtype in TrackArrays.DTYPES.items():
        array = getattr(tracks, name)
        path = directory / f"{name}.npy"
        if array.dtype != np.dtype(dtype):
            raise InputError(f"{path}: dtype {array.dtype}, expected {np.dtype(dtype)}")
        expected = shapes.get(name, (n,))
        if array.shape != expected:
            raise InputError(
                f"{path}: shape {array.shape}, expected {expected} "
                f"({n} tracks in lengths.npy, tracks of up to {width} hits)"
            )
    if n:
        _check_range(tracks.tokens, 0, vocab_size - 1, directory / "tokens.npy", "token id")
        _check_range(tracks.lengths, 0, width, directory / "lengths.npy", "length")
    return tracks


def _check_range(values: np.ndarray, low: int, high: int, path: Path, what: str) -> None:
    """Refuse an array with a value outside [low, high] (naming the first such track)."""
    smallest, largest = int(values.min()), int(values.max())
    if smallest < low or largest > high:
        outside = (values < low) | (values > high)
        track = int(np.flatnonzero(outside.reshape(len(values), -1).any(axis=1))[0])
        value = smallest if smallest < low else largest
        raise InputError(f"{path}: track {track}: {what} {value} outside [{low}, {high}]")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class PreparedDataset:
    """A dataset directory written by ``tracklm prepare``."""

    path: Path
    manifest: dict[str, Any]
    vocab: ModuleVocab
    modules: pd.DataFrame = dataclasses.field(repr=False)

    def split(self, name: str, *, mmap: bool = True) -> TrackArrays:
        if name not in SPLITS:
            raise InputError(f"--split: unknown split {name!r} (choose from {', '.join(SPLITS)})")
        return load_split(self.path / name, mmap=mmap)

    @property
    def b_field_t(self) -> float:
        """The magnetic field (tesla, along +z) the dataset's events were made with.

        ``prepare`` records it in ``manifest.json`` under ``magnetic_field.tesla``; datasets
        prepared before it did read as the TrackML field (2 T), which they were all made with.
        """
        record = self.manifest.get("magnetic_field") or {}
        return float(record.get("tesla", TRACKML_FIELD_TESLA))

    @property
    def module_centres(self) -> np.ndarray:
        """(V, 3) float64 centre of the module of every token id; NaN for special tokens."""
        centres = np.full((len(self.vocab), 3), np.nan)
        tokens = self.modules["token"].to_numpy()
        centres[tokens] = self.modules[["cx", "cy", "cz"]].to_numpy(np.float64)
        return centres

    def frames(self) -> ModuleFrames:
        """The modules' frames and bounds by token id, from the detector the dataset was prepared with.

        ``manifest.json`` records it under ``inputs.detector.name`` (``"trackml"`` or a
        ``detectors.csv`` path; a relative path that older versions recorded, missing from the
        working directory, is looked for beside the recorded events, and used if its sha256 is
        the recorded one). When it is absent, unreadable or does not hold every module of
        the dataset, the frames are guessed from the module centres (``ModuleFrames.approximate``)
        and a warning says so.
        """
        from tracklm.detector.geometry import Detector  # the detector imports io.tables

        inputs = self.manifest.get("inputs") or {}
        name = _detector_path(inputs)
        if name:
            try:
                return Detector.load(name).frames_by_token(self.modules, len(self.vocab))
            except Exception as exc:  # any failure: fall back, and say so
                log.warning("detector %s not usable for module frames (%s); guessing", name, exc)
        else:
            log.warning("dataset records no detector; module frames guessed from centres")
        return ModuleFrames.approximate(self.modules, len(self.vocab))


def open_dataset(path: str | os.PathLike[str]) -> PreparedDataset:
    """Open a dataset directory and check that its files agree with each other.

    Raises ``InputError`` naming the missing, unreadable or disagreeing file: the manifest, the
    vocabulary (its hash against the manifest's), ``modules.parquet`` (against the vocabulary)
    and each split present (``check_split``: dtypes, shapes, track counts against the manifest,
    token ids and lengths in range).
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset directory")
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{manifest_path}: missing (not a tracklm dataset?)") from None
    except (OSError, ValueError):  # ValueError: bad JSON, or bytes that are not UTF-8
        raise InputError(f"{manifest_path}: not valid JSON") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{manifest_path}: expected a JSON object")
    vocab = ModuleVocab.load(root / "vocab.json")
    if manifest.get("vocab_sha256") not in (None, vocab.sha256):
        raise InputError(f"{manifest_path}: vocab_sha256 does not match vocab.json")
    modules = _read_modules(root / "modules.parquet", vocab)
    counts = manifest.get("n_tracks")
    max_length = manifest.get("max_length")
    for name in SPLITS:
        expected = counts.get(name) if isinstance(counts, dict) else None
        if not (root / name).is_dir() and expected is None:
            continue
        tracks = check_split(root / name, len(vocab))
        if expected is not None and len(tracks) != expected:
            raise InputError(
                f"{manifest_path}: n_tracks.{name} is {expected!r}, but "
                f"{root / name / 'lengths.npy'} holds {len(tracks)} tracks"
            )
        if max_length is not None and tracks.max_length != max_length:
            raise InputError(
                f"{manifest_path}: max_length is {max_length!r}, but {root / name / 'tokens.npy'} "
                f"holds tracks of up to {tracks.max_length} hits"
            )
    return PreparedDataset(path=root, manifest=manifest, vocab=vocab, modules=modules)


MODULE_COLUMNS = ("token", "volume_id", "layer_id", "module_id", "cx", "cy", "cz")


def _read_modules(path: Path, vocab: ModuleVocab) -> pd.DataFrame:
    """``modules.parquet``, checked to list the vocabulary's modules in token order."""
    try:
        modules = read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path}: unreadable ({_first_line(exc)})") from None
    missing = [column for column in MODULE_COLUMNS if column not in modules.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}")
    tokens = np.arange(vocab.num_special, len(vocab))
    ids = modules[["volume_id", "layer_id", "module_id"]].to_numpy()
    if (
        len(modules) != len(tokens)
        or not np.array_equal(modules["token"].to_numpy(), tokens)
        or not np.array_equal(ids, vocab.modules)
    ):
        raise InputError(f"{path}: the module table does not match vocab.json")
    return modules


def modules_table(vocab: ModuleVocab, detector: Any) -> pd.DataFrame:
    """The vocabulary's module table: token, volume_id, layer_id, module_id, cx, cy, cz."""
    triples = vocab.modules
    rows = detector.rows(triples[:, 0], triples[:, 1], triples[:, 2])
    if np.any(rows < 0):
        missing = tuple(int(v) for v in triples[int(np.flatnonzero(rows < 0)[0])])
        raise InputError(f"vocabulary module {missing} is not in the detector geometry")
    centres = detector.centres[rows]
    table: pd.DataFrame = pd.DataFrame(
        {
            "token": np.arange(vocab.num_special, len(vocab), dtype=np.int32),
            "volume_id": triples[:, 0].astype(np.int32),
            "layer_id": triples[:, 1].astype(np.int32),
            "module_id": triples[:, 2].astype(np.int32),
            "cx": centres[:, 0],
            "cy": centres[:, 1],
            "cz": centres[:, 2],
        }
    )
    return table


def _detector_path(inputs: dict[str, Any]) -> str | None:
    """The detector a dataset was prepared with (``inputs.detector.name``), a relative
    ``detectors.csv`` path that is not found here replaced by the file of that name beside the
    recorded events when its sha256 is the recorded one."""
    detector = inputs.get("detector") or {}
    name: str | None = detector.get("name")
    if not name or Path(name).is_absolute() or Path(name).is_file() or not inputs.get("events"):
        return name
    beside = Path(inputs["events"]) / Path(name).name
    if beside.is_file() and detector.get("sha256") == sha256_file(beside):
        return str(beside)
    return name
