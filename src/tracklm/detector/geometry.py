"""Detector geometry: the module table of a TrackML-format detector.

A module is a flat sensor with a local frame (u, v, w): u across, v along, w the normal. Local
to global: ``xyz = R @ uvw + centre`` where the columns of ``R`` are the u, v, w axes in global
coordinates, i.e. ``R[i, j] = rot_{xyz[i]}{uvw[j]}`` in ``detectors.csv``. Lengths in mm.
Bounds: ``|v| <= module_hv``; ``|u| <= h(v)`` with the half-width growing linearly from
``module_minhu`` at ``v = -module_hv`` to ``module_maxhu`` at ``v = +module_hv`` (trapezoids on disks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.errors import InputError

ID_COLUMNS = ("volume_id", "layer_id", "module_id")
ROTATION_COLUMNS = tuple(f"rot_{g}{a}" for g in "xyz" for a in "uvw")
TRACKML_COLUMNS = (
    *ID_COLUMNS,
    "cx",
    "cy",
    "cz",
    *ROTATION_COLUMNS,
    "module_t",
    "module_minhu",
    "module_maxhu",
    "module_hv",
    "pitch_u",
    "pitch_v",
)
# The Codalab release names the pitch columns differently; both layouts are read.
PITCH_ALIASES = {"pitchX": "pitch_u", "pitchY": "pitch_v"}
PIXEL_VOLUMES = (7, 8, 9)


def module_keys(volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray) -> np.ndarray:
    """Pack (volume, layer, module) into one sortable int64 key per module."""
    volume = np.asarray(volume_id, dtype=np.int64)
    layer = np.asarray(layer_id, dtype=np.int64)
    module = np.asarray(module_id, dtype=np.int64)
    return (volume << 40) | (layer << 24) | module


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

    def __post_init__(self) -> None:
        table = self.modules.sort_values(list(ID_COLUMNS), kind="stable").reset_index(drop=True)
        object.__setattr__(self, "modules", table)
        keys = module_keys(table["volume_id"], table["layer_id"], table["module_id"])
        duplicated = np.flatnonzero(np.diff(keys) == 0)
        if duplicated.size:
            volume, layer, module = (int(table[c].iat[int(duplicated[0])]) for c in ID_COLUMNS)
            raise InputError(f"{self.name}: module ({volume}, {layer}, {module}) is listed twice")
        object.__setattr__(self, "_keys", keys)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Detector:
        """Read a TrackML ``detectors.csv`` (``pitch_u/pitch_v`` or ``pitchX/pitchY`` layout)."""
        path = Path(path)
        try:
            table = pd.read_csv(path, engine="pyarrow")
        except FileNotFoundError:
            raise InputError(f"{path}: no such detector file") from None
        except Exception as exc:
            raise InputError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
        table = table.rename(columns=PITCH_ALIASES)
        missing = [column for column in TRACKML_COLUMNS if column not in table.columns]
        if missing:
            raise InputError(f"{path}: missing column {missing[0]!r}")
        table = table[list(TRACKML_COLUMNS)]
        for column in TRACKML_COLUMNS:
            values = pd.to_numeric(table[column], errors="coerce")
            bad = np.flatnonzero(values.isna().to_numpy())
            if bad.size:
                raise InputError(f"{path}: row {int(bad[0]) + 1}, column {column!r}: not a number")
            table[column] = values
        for column in ID_COLUMNS:
            table[column] = table[column].astype(np.int32)
        for column in TRACKML_COLUMNS[3:]:
            table[column] = table[column].astype(np.float64)
        return cls(table, name=str(path))

    @classmethod
    def builtin(cls, name: str = "trackml") -> Detector:
        """The built-in detector generated from its parametric description (package data)."""
        from tracklm.detector.builtin import build_detector

        return build_detector(name)

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
        return self.modules[list(ID_COLUMNS)].to_numpy(np.int32)

    @property
    def centres(self) -> np.ndarray:
        """(M, 3) module centres in mm."""
        return self.modules[["cx", "cy", "cz"]].to_numpy(np.float64)

    @property
    def rotations(self) -> np.ndarray:
        """(M, 3, 3) local-to-global rotations; columns are the u, v, w axes."""
        return self.modules[list(ROTATION_COLUMNS)].to_numpy(np.float64).reshape(-1, 3, 3)

    def select_volumes(self, volumes: tuple[int, ...] | list[int]) -> Detector:
        """The sub-detector made of the given volumes."""
        keep = self.modules["volume_id"].isin(list(volumes)).to_numpy()
        return Detector(self.modules.loc[keep].reset_index(drop=True), name=self.name)

    def rows(
        self, volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray
    ) -> np.ndarray:
        """Row index of each (volume, layer, module) in ``modules``; -1 where the module does not exist."""
        keys = module_keys(volume_id, layer_id, module_id)
        index = np.searchsorted(self._keys, keys)  # type: ignore[attr-defined]
        index = np.clip(index, 0, len(self._keys) - 1)  # type: ignore[attr-defined]
        found = self._keys[index] == keys  # type: ignore[attr-defined]
        return np.where(found, index, -1)

    # ------------------------------------------------------------------ local frames
    def to_local(self, rows: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """Global points (N, 3) to the local (u, v, w) frames of modules ``rows`` (N,)."""
        rotation = self.rotations[rows]
        offset = np.asarray(xyz, dtype=np.float64) - self.centres[rows]
        return np.einsum("nji,nj->ni", rotation, offset)

    def to_global(self, rows: np.ndarray, uvw: np.ndarray) -> np.ndarray:
        """Local points (N, 3) on modules ``rows`` (N,) to global coordinates."""
        rotation = self.rotations[rows]
        return (
            np.einsum("nij,nj->ni", rotation, np.asarray(uvw, dtype=np.float64))
            + self.centres[rows]
        )

    def half_width(self, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Half-width in u (mm) of modules ``rows`` at local ``v`` (trapezoid bounds)."""
        table = self.modules
        minhu = table["module_minhu"].to_numpy()[rows]
        maxhu = table["module_maxhu"].to_numpy()[rows]
        hv = table["module_hv"].to_numpy()[rows]
        return minhu + (maxhu - minhu) * (np.asarray(v) + hv) / (2.0 * hv)

    def contains(self, rows: np.ndarray, xyz: np.ndarray, tolerance_mm: float = 1e-3) -> np.ndarray:
        """Whether each point lies on its module: within the bounds and the sensor thickness."""
        uvw = self.to_local(rows, xyz)
        hv = self.modules["module_hv"].to_numpy()[rows]
        half_t = 0.5 * self.modules["module_t"].to_numpy()[rows]
        inside_v = np.abs(uvw[:, 1]) <= hv + tolerance_mm
        inside_u = (
            np.abs(uvw[:, 0]) <= self.half_width(rows, np.clip(uvw[:, 1], -hv, hv)) + tolerance_mm
        )
        inside_w = np.abs(uvw[:, 2]) <= half_t + tolerance_mm
        return inside_u & inside_v & inside_w
