"""Detector geometry: the module table of a TrackML-format detector.

``Detector`` holds the table (``detectors.csv`` columns, see ``detector/table.py``) and answers
id lookups; the local frames and bounds of its modules live in ``Detector.frames``
(``detector/frames.py``). ``Detector.load("trackml")`` builds the built-in detector from its
description (``detector/builtin.py``, which does not import this module). Lengths in mm.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.detector.builtin import builtin_module_table
from tracklm.detector.frames import ModuleFrames
from tracklm.detector.table import (
    ID_COLUMNS,
    PITCH_ALIASES,
    PIXEL_VOLUMES,
    ROTATION_COLUMNS,
    TRACKML_COLUMNS,
    module_keys,
)
from tracklm.errors import InputError
from tracklm.io.tables import numeric_column, read_table

# Checks of the columns beyond "a finite number": (dtype, minimum, minimum excluded).
_COLUMN_RULES: dict[str, tuple[type, float | None, bool]] = {
    **{column: (np.int32, 0, False) for column in ID_COLUMNS},
    **{column: (np.float64, 0, True) for column in ("module_t", "module_maxhu", "module_hv")},
    "module_minhu": (np.float64, 0, False),  # 0 would be a triangle: odd, not impossible
    "pitch_u": (np.float64, 0, True),
    "pitch_v": (np.float64, 0, True),
}
# |R^T R - I| allowed: TrackML stores the rotations to 6 significant digits (errors near 1e-6).
_ROTATION_TOLERANCE = 1e-3

__all__ = [
    "ID_COLUMNS",
    "PIXEL_VOLUMES",
    "ROTATION_COLUMNS",
    "TRACKML_COLUMNS",
    "Detector",
    "module_keys",
]


@dataclass(frozen=True, eq=False)
class Detector:
    """A detector as its module table (TrackML ``detectors.csv`` columns), sorted by id triple.

    Attributes
    ----------
    modules : DataFrame with ``TRACKML_COLUMNS``; ids int32, geometry float64 (mm).
    name : ``"trackml"`` for the built-in detector, else the file it was read from.
    """

    modules: pd.DataFrame
    name: str = "custom"
    _keys: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table = self.modules.sort_values(list(ID_COLUMNS), kind="stable").reset_index(drop=True)
        object.__setattr__(self, "modules", table)
        keys = module_keys(table["volume_id"], table["layer_id"], table["module_id"])
        duplicated = np.flatnonzero(np.diff(keys) == 0)
        if duplicated.size:
            volume, layer, module = (int(table[c].to_numpy()[duplicated[0]]) for c in ID_COLUMNS)
            raise InputError(f"{self.name}: module ({volume}, {layer}, {module}) is listed twice")
        object.__setattr__(self, "_keys", keys)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Detector:
        """Read a TrackML ``detectors.csv`` (``pitch_u/pitch_v`` or ``pitchX/pitchY`` layout).

        Raises ``InputError`` naming the file (and the row and column where there is one) for a
        missing or repeated column, a file without modules, a value that is not a finite number
        (or not a whole non-negative number for an id), a module without size (thickness,
        half-lengths or pitches not above 0) and a rotation that is not orthonormal. A module
        listed twice is refused when the ``Detector`` is built.
        """
        path = Path(path)
        table = read_table(path, what="detector file")
        for alias, name in PITCH_ALIASES.items():
            if alias in table.columns and name in table.columns:
                raise InputError(
                    f"{path}: both {alias!r} and {name!r} columns (one pitch layout only)"
                )
        table = table.rename(columns=PITCH_ALIASES)
        missing = [column for column in TRACKML_COLUMNS if column not in table.columns]
        if missing:
            raise InputError(f"{path}: missing column {missing[0]!r}")
        if len(table) == 0:
            raise InputError(f"{path}: no modules (only a header)")
        table = table[list(TRACKML_COLUMNS)].copy()
        for column in TRACKML_COLUMNS:
            dtype, minimum, strict = _COLUMN_RULES.get(column, (np.float64, None, False))
            table[column] = numeric_column(
                table, column, dtype, path, minimum=minimum, strict=strict
            )
        _check_rotations(table, path)
        return cls(table, name=str(path))

    @classmethod
    def builtin(cls, name: str = "trackml") -> Detector:
        """The built-in detector ``name`` (only ``"trackml"``), generated from its description.

        The result is cached: repeated calls return the same (immutable) object.

        Raises
        ------
        InputError : for an unknown name.
        """
        return _builtin_detector(name)

    @classmethod
    def load(cls, spec: str | os.PathLike[str]) -> Detector:
        """``"trackml"`` for the built-in detector, otherwise a path to a ``detectors.csv``."""
        if str(spec) == "trackml":
            return cls.builtin("trackml")
        return cls.from_csv(spec)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the module table in TrackML's ``detectors.csv`` layout (``pitch_u/pitch_v``)."""
        self.modules.to_csv(path, index=False, float_format="%.7g")

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.modules)

    @property
    def ids(self) -> np.ndarray:
        """(M, 3) int32 array of (volume_id, layer_id, module_id)."""
        ids: np.ndarray = self.modules[list(ID_COLUMNS)].to_numpy(np.int32)
        return ids

    @property
    def centres(self) -> np.ndarray:
        """(M, 3) module centres in mm."""
        centres: np.ndarray = self.modules[["cx", "cy", "cz"]].to_numpy(np.float64)
        return centres

    @property
    def rotations(self) -> np.ndarray:
        """(M, 3, 3) local-to-global rotations; columns are the u, v, w axes."""
        rotations: np.ndarray = self.modules[list(ROTATION_COLUMNS)].to_numpy(np.float64)
        return rotations.reshape(-1, 3, 3)

    def select_volumes(self, volumes: tuple[int, ...] | list[int]) -> Detector:
        """The sub-detector made of the given volumes."""
        keep = self.modules["volume_id"].isin(list(volumes)).to_numpy()
        return Detector(self.modules.loc[keep].reset_index(drop=True), name=self.name)

    def rows(
        self, volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray
    ) -> np.ndarray:
        """Row index of each (volume, layer, module) in ``modules``; -1 where the module does not exist."""
        keys = module_keys(volume_id, layer_id, module_id)
        index = np.searchsorted(self._keys, keys)
        index = np.clip(index, 0, len(self._keys) - 1)
        found = self._keys[index] == keys
        return np.where(found, index, -1)

    # ------------------------------------------------------------------ local frames
    @functools.cached_property
    def frames(self) -> ModuleFrames:
        """Local frames and bounds of the modules, indexed by row of ``modules``."""
        return ModuleFrames.from_table(self.modules)

    def frames_by_token(self, modules: pd.DataFrame, vocab_size: int | None = None) -> ModuleFrames:
        """The frames of a dataset's modules, indexed by token id (NaN for special tokens).

        Parameters
        ----------
        modules : the dataset's module table (columns token, volume_id, layer_id, module_id).
        vocab_size : number of frames (default: the largest token + 1).

        Raises
        ------
        ValueError : when a module of the table is missing from this detector.
        """
        size = int(vocab_size if vocab_size is not None else modules["token"].max() + 1)
        rows = self.rows(
            modules["volume_id"].to_numpy(),
            modules["layer_id"].to_numpy(),
            modules["module_id"].to_numpy(),
        )
        if np.any(rows < 0):
            raise ValueError(
                f"{int(np.sum(rows < 0))} modules of the dataset are not in the detector"
            )
        return self.frames.reindexed(rows, modules["token"].to_numpy(np.int64), size)

    def contains(self, rows: np.ndarray, xyz: np.ndarray, tolerance_mm: float = 1e-3) -> np.ndarray:
        """Whether each point (N, 3) lies on its module ``rows`` (N,): within the bounds and the
        sensor thickness, plus ``tolerance_mm`` (``ModuleFrames.contains``)."""
        return self.frames.contains(rows, xyz, tolerance_mm)


def _check_rotations(table: pd.DataFrame, path: Path) -> None:
    """Refuse a module whose rotation columns (u, v, w axes) are not orthonormal."""
    rotations = table[list(ROTATION_COLUMNS)].to_numpy(np.float64).reshape(-1, 3, 3)
    error = np.abs(np.einsum("nij,nik->njk", rotations, rotations) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero(error > _ROTATION_TOLERANCE)
    if bad.size:
        raise InputError(
            f"{path}: row {int(bad[0]) + 1}: the rotation (rot_xu ... rot_zw) is not orthonormal"
        )


@functools.cache
def _builtin_detector(name: str) -> Detector:
    return Detector(builtin_module_table(name), name=name)
