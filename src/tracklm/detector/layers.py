"""Detector layers as simple surfaces: barrel cylinders and disk planes.

A layer is one (volume_id, layer_id). Two views of the layers exist, for two kinds of input:

``DetectorLayer`` (``detector_layers(detector)``)
    A layer of a full detector geometry, over module rows. Its kind is read off the module
    normals, its extent off the module outlines (exact). The simulator propagates through these
    and the point -> module lookup (``detector/locator.py``) bins them.
``TokenLayers`` (``TokenLayers.from_modules(dataset.modules)``)
    All layers of a dataset's module table, where only token ids and module centres are known:
    kind and extent from the centres, a KD-tree of centres per layer. Helices are crossed with
    these (``TokenLayers.intersect``), and modules ranked by whether they contain a crossing
    (``TokenLayers.rank_modules``, with the ``ModuleFrames`` of the tokens); baselines and
    downstream tasks use them.

Lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from tracklm.detector.frames import DEFAULT_HALF_MODULE_MM, ModuleFrames, centres_form_barrel

if TYPE_CHECKING:
    from tracklm.detector.geometry import Detector

BARREL = 0
DISK = 1


@dataclass(frozen=True, eq=False)
class DetectorLayer:
    """One layer of a detector geometry as a simple surface.

    Attributes
    ----------
    volume_id, layer_id : the layer's ids.
    kind : ``BARREL`` (cylinder) or ``DISK`` (plane of constant z).
    radius_mm : mean radius of the module centres (barrel; mean centre radius for a disk).
    z_mm : mean z of the module centres (disk; for a barrel the centre of its z extent).
    r_min_mm, r_max_mm, z_min_mm, z_max_mm : extent of the module outlines.
    rows : (n,) int64 module rows of the layer in ``Detector.modules``.
    """

    volume_id: int
    layer_id: int
    kind: int
    radius_mm: float
    z_mm: float
    r_min_mm: float
    r_max_mm: float
    z_min_mm: float
    z_max_mm: float
    rows: np.ndarray

    @property
    def is_barrel(self) -> bool:
        return self.kind == BARREL


def detector_layers(detector: Detector) -> list[DetectorLayer]:
    """The layers of ``detector`` as barrel cylinders or disk planes, sorted by (volume, layer).

    A layer is a disk when its module normals point mostly along z (mean ``|w_z|`` > 1/sqrt(2)),
    otherwise a barrel.
    """
    frames = detector.frames
    outline = frames.outline()
    r_outline = np.hypot(outline[..., 0], outline[..., 1])
    z_outline = outline[..., 2]
    ids = detector.ids.astype(np.int64)
    layer_key = ids[:, 0] * 100_000 + ids[:, 1]
    # Rows are sorted by (volume, layer, module), so each layer is one contiguous block.
    starts = np.flatnonzero(np.r_[True, layer_key[1:] != layer_key[:-1]])
    ends = np.r_[starts[1:], len(layer_key)]
    layers: list[DetectorLayer] = []
    for start, end in zip(starts, ends):
        rows = np.arange(start, end, dtype=np.int64)
        normal_z = np.abs(frames.normals[rows, 2]).mean()
        centre_r = np.hypot(frames.centres[rows, 0], frames.centres[rows, 1])
        layers.append(
            DetectorLayer(
                volume_id=int(ids[start, 0]),
                layer_id=int(ids[start, 1]),
                kind=DISK if normal_z > np.sqrt(0.5) else BARREL,
                radius_mm=float(centre_r.mean()),
                z_mm=float(frames.centres[rows, 2].mean()),
                r_min_mm=float(r_outline[rows].min()),
                r_max_mm=float(r_outline[rows].max()),
                z_min_mm=float(z_outline[rows].min()),
                z_max_mm=float(z_outline[rows].max()),
                rows=rows,
            )
        )
    return layers


class Trajectory(Protocol):
    """N tracks that can be crossed with cylinders and z planes (``tracking.helix.HelixFit``)."""

    def intersect_cylinder(
        self, radius_mm: np.ndarray, s_lo: np.ndarray, s_hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def intersect_plane_z(self, z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass
class TokenLayers:
    """The layers of a dataset's module table as surfaces, with a KD-tree of centres per layer.

    Attributes
    ----------
    volume_id, layer_id : (Y,) ids of the Y layers, sorted.
    is_barrel : (Y,) True for a barrel layer (a cylinder), False for a disk (a plane z = const).
    radius_mm : (Y,) mean centre radius of the layer's modules (barrels).
    z_mm : (Y,) mean centre z of the layer's modules (disks).
    coverage_lo_mm, coverage_hi_mm : (Y,) extent of the layer along its surface: z for barrels, r
        for disks; the outermost module centres widened by half the largest gap between
        neighbouring rings of centres (about half a module length), so a crossing outside it
        misses the layer (azimuth is always covered).
    layer_of_token : (V,) layer index of every token id (-1 for special tokens).
    tokens : list of (M_y,) token ids per layer; ``trees`` the matching KD-trees of centres.
    """

    volume_id: np.ndarray
    layer_id: np.ndarray
    is_barrel: np.ndarray
    radius_mm: np.ndarray
    z_mm: np.ndarray
    coverage_lo_mm: np.ndarray
    coverage_hi_mm: np.ndarray
    layer_of_token: np.ndarray
    tokens: list[np.ndarray]
    trees: list[cKDTree]

    @classmethod
    def from_modules(cls, modules: pd.DataFrame, vocab_size: int | None = None) -> TokenLayers:
        """Build from a module table with columns token, volume_id, layer_id, cx, cy, cz (mm).

        A layer is a barrel when its module centres spread less in radius than in z.
        """
        table = modules.sort_values(["volume_id", "layer_id", "token"])
        size = int(vocab_size if vocab_size is not None else table["token"].max() + 1)
        layer_of_token = np.full(size, -1, dtype=np.int64)
        fields: dict[str, list[Any]] = {
            k: [] for k in ("volume_id", "layer_id", "is_barrel", "radius", "z", "lo", "hi")
        }
        tokens: list[np.ndarray] = []
        trees: list[cKDTree] = []
        for index, ((volume, layer), group) in enumerate(
            table.groupby(["volume_id", "layer_id"], sort=True)
        ):
            centres = group[["cx", "cy", "cz"]].to_numpy(np.float64)
            r = np.hypot(centres[:, 0], centres[:, 1])
            barrel = centres_form_barrel(centres)
            along = centres[:, 2] if barrel else r
            rings = np.unique(np.round(along, 0))
            widen = 0.5 * float(np.diff(rings).max()) if len(rings) > 1 else DEFAULT_HALF_MODULE_MM
            token = group["token"].to_numpy(np.int64)
            layer_of_token[token] = index
            fields["volume_id"].append(volume)
            fields["layer_id"].append(layer)
            fields["is_barrel"].append(barrel)
            fields["radius"].append(float(r.mean()))
            fields["z"].append(float(centres[:, 2].mean()))
            fields["lo"].append(float(along.min()) - widen)
            fields["hi"].append(float(along.max()) + widen)
            tokens.append(token)
            trees.append(cKDTree(centres))
        return cls(
            volume_id=np.asarray(fields["volume_id"], dtype=np.int64),
            layer_id=np.asarray(fields["layer_id"], dtype=np.int64),
            is_barrel=np.asarray(fields["is_barrel"], dtype=bool),
            radius_mm=np.asarray(fields["radius"]),
            z_mm=np.asarray(fields["z"]),
            coverage_lo_mm=np.asarray(fields["lo"]),
            coverage_hi_mm=np.asarray(fields["hi"]),
            layer_of_token=layer_of_token,
            tokens=tokens,
            trees=trees,
        )

    def __len__(self) -> int:
        return int(self.volume_id.shape[0])

    def module_table(self) -> pd.DataFrame:
        """The module table these layers were built from: token, cx, cy, cz, volume_id, layer_id."""
        frames = []
        for index, (token, tree) in enumerate(zip(self.tokens, self.trees)):
            frame = pd.DataFrame(np.asarray(tree.data), columns=["cx", "cy", "cz"])
            frame.insert(0, "token", token)
            frame["volume_id"] = self.volume_id[index]
            frame["layer_id"] = self.layer_id[index]
            frames.append(frame)
        table: pd.DataFrame = pd.concat(frames)
        return table

    def intersect(
        self, track: Trajectory, layer: np.ndarray, s_lo: np.ndarray, s_hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intersect each track with a layer surface (cylinder for barrels, plane for disks).

        Parameters
        ----------
        track : N tracks (a ``HelixFit``).
        layer : (N,) layer index per track.
        s_lo, s_hi : (N,) arc-length window used to choose between two barrel crossings.

        Returns
        -------
        xyz_mm (N, 3), s_mm (N,), crosses (N,) bool: as ``HelixFit.intersect_cylinder``.
        """
        layer = np.asarray(layer, dtype=np.int64)
        barrel = self.is_barrel[layer]
        xyz_b, s_b, ok_b = track.intersect_cylinder(self.radius_mm[layer], s_lo, s_hi)
        xyz_d, s_d, ok_d = track.intersect_plane_z(self.z_mm[layer])
        xyz = np.where(barrel[:, None], xyz_b, xyz_d)
        return xyz, np.where(barrel, s_b, s_d), np.where(barrel, ok_b, ok_d)

    def covers(self, layer: np.ndarray, xyz_mm: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each point lies within its layer's coverage (z on barrels, r on disks)."""
        layer = np.asarray(layer, dtype=np.int64)
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64)
        along = np.where(self.is_barrel[layer], xyz_mm[:, 2], np.hypot(xyz_mm[:, 0], xyz_mm[:, 1]))
        result: np.ndarray = (along >= self.coverage_lo_mm[layer]) & (
            along <= self.coverage_hi_mm[layer]
        )
        return result

    def nearest_modules(
        self, layer: np.ndarray, xyz_mm: np.ndarray, k: int = 1, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` modules of each given layer whose centres are nearest to each point.

        Parameters
        ----------
        layer : (N,) layer index.
        xyz_mm : (N, 3) points.
        k : number of modules per point, nearest first.
        exclude : (N, E) token ids that may not be returned (e.g. modules the track already
            crossed: a track never has two hits on one module), -1 or 0 for none.

        Returns
        -------
        tokens : (N, k) int64 (-1 where the layer has too few modules).
        distance_mm : (N, k) distances of the centres to the points (inf where no module).
        """
        layer = np.asarray(layer, dtype=np.int64)
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64)
        extra = 0 if exclude is None else exclude.shape[1]
        want = k + extra
        tokens = np.full((len(layer), want), -1, dtype=np.int64)
        distance = np.full((len(layer), want), np.inf)
        for index in np.unique(layer):
            rows = np.flatnonzero(layer == index)
            tree = self.trees[index]
            kk = min(want, tree.n)
            d, i = tree.query(xyz_mm[rows], k=kk)
            d, i = d.reshape(len(rows), kk), i.reshape(len(rows), kk)
            tokens[rows, :kk] = self.tokens[index][i]
            distance[rows, :kk] = d
        if exclude is not None:
            banned = np.any(tokens[:, :, None] == exclude[:, None, :], axis=2) & (tokens >= 0)
            tokens = np.where(banned, -1, tokens)
            distance = np.where(banned, np.inf, distance)
            order = np.argsort(distance, axis=1, kind="stable")
            tokens = np.take_along_axis(tokens, order, axis=1)
            distance = np.take_along_axis(distance, order, axis=1)
        return tokens[:, :k], distance[:, :k]

    def rank_modules(
        self,
        frames: ModuleFrames,
        layer: np.ndarray,
        xyz_mm: np.ndarray,
        k: int = 5,
        exclude: np.ndarray | None = None,
        direction: np.ndarray | None = None,
        candidates: int = 32,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` modules of each point's layer that contain it, or come closest to, best first.

        Parameters
        ----------
        frames : the modules' frames and bounds, indexed by token id.
        layer : (N,) layer index of each point.
        xyz_mm : (N, 3) points.
        k : modules returned per point.
        exclude : (N, E) token ids never returned.
        direction : (N, 3) unit track directions; points are then moved onto each candidate's
            plane along them (``ModuleFrames.to_local_on_plane``).
        candidates : how many nearest centres of the layer are considered.

        Modules that contain the point come first (of overlapping ones, the one whose centre is
        nearest in normalised local coordinates, hypot(u / half-width, v / hv)), then the others
        by ``ModuleFrames.outside_local``.

        Returns
        -------
        tokens (N, k) int64 (-1 where none) and their ranking scores (N, k): below 1e-3 for a
        containing module, else the ``outside`` score (inf where none).
        """
        tokens, _ = self.nearest_modules(layer, xyz_mm, k=candidates, exclude=exclude)
        xyz = np.broadcast_to(np.asarray(xyz_mm, dtype=np.float64)[:, None, :], (*tokens.shape, 3))
        t = frames.clipped(tokens)
        if direction is None:
            uvw = frames.to_local(t, xyz)
        else:
            d = np.broadcast_to(np.asarray(direction, dtype=np.float64)[:, None, :], xyz.shape)
            uvw = frames.to_local_on_plane(t, xyz, d)
        outside = np.where(tokens >= 0, frames.outside_local(t, uvw), np.inf)
        # Containing modules first; among overlapping ones, the point relatively nearest the
        # centre (both normalised coordinates count, not only the larger one).
        central = np.hypot(
            uvw[..., 0] / (0.5 * (frames.minhu[t] + frames.maxhu[t])), uvw[..., 1] / frames.hv[t]
        )
        score = np.where(outside <= 1.0, central / np.sqrt(2.0) * 1e-3, outside)
        order = np.argsort(score, axis=1, kind="stable")[:, :k]
        tokens = np.take_along_axis(tokens, order, axis=1)
        score = np.take_along_axis(score, order, axis=1)
        return np.where(np.isfinite(score), tokens, -1), score
