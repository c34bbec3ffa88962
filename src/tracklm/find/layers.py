"""The finder's view of the detector: layers as cylinders and disks, and which layer triples seed.

A layer is one (volume_id, layer_id) of the evaluated volumes (``detector_layers``). Which layers
a particle crosses in turn is read off the geometry alone: trajectories from the beam line are
sampled over pseudorapidity, vertex z and curvature, crossed with every layer, and the first
layers each one meets become the seeding layer triples (with one layer skipped for a missing hit
in later rounds). No event or truth information is used, so any TrackML-format geometry works.

Lengths in mm, momenta in GeV, field in tesla.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.geometry import Detector
from tracklm.detector.layers import detector_layers
from tracklm.errors import InputError
from tracklm.tracking.constants import GEV_PER_TESLA_METRE

# Sampled trajectories: pseudorapidity grid, vertex z (mm) and pT (GeV) per trajectory.
_SAMPLE_ETA = np.linspace(-4.0, 4.0, 1601)
_SAMPLE_Z0_MM = (-150.0, -50.0, 0.0, 50.0, 150.0)
_SAMPLE_PT_GEV = (0.3, 1.0, np.inf)
# Tracks keep the layers they crossed as bits of one int64.
_MAX_LAYERS = 63


@dataclass(frozen=True)
class FinderLayers:
    """The evaluated layers as simple surfaces, and the layer triples that seed.

    Attributes
    ----------
    volume_id, layer_id : (L,) ids, sorted.
    is_barrel : (L,) True for a cylinder (r = ``radius_mm``), False for a disk (z = ``z_mm``).
    radius_mm, z_mm : (L,) mean radius and z of the module centres.
    r_min_mm, r_max_mm, z_min_mm, z_max_mm : (L,) extent of the module outlines.
    seed_triples : layer-index triples by kind, most used first: ``"first"`` the first three
        layers a trajectory crosses, ``"skipped"`` those with one of the first four skipped (a
        missing hit), ``"consecutive"`` any three layers crossed in a row (particles made
        inside the detector start anywhere), ``"overlap"`` two of the first four layers in a
        row, the second one twice (a particle that leaves two hits, on overlapping modules, on
        each of only two layers).
    """

    volume_id: np.ndarray
    layer_id: np.ndarray
    is_barrel: np.ndarray
    radius_mm: np.ndarray
    z_mm: np.ndarray
    r_min_mm: np.ndarray
    r_max_mm: np.ndarray
    z_min_mm: np.ndarray
    z_max_mm: np.ndarray
    seed_triples: dict[str, tuple[tuple[int, int, int], ...]]

    def __len__(self) -> int:
        return int(self.volume_id.shape[0])

    @classmethod
    def from_detector(
        cls,
        detector: Detector,
        volumes: tuple[int, ...],
        b_field_t: float,
        support: float = 0.005,
    ) -> FinderLayers:
        """The layers of ``volumes`` in ``detector`` and their seeding triples.

        Parameters
        ----------
        detector : the geometry.
        volumes : volume ids to keep.
        b_field_t : solenoid field (tesla) bending the sampled trajectories.
        support : smallest fraction of sampled trajectories a triple must serve.
        """
        selected = detector.select_volumes(list(volumes))
        if len(selected) == 0:
            raise InputError(
                f"--volumes: no module of volumes {','.join(map(str, volumes))} in the detector"
            )
        layers = detector_layers(selected)
        if len(layers) > _MAX_LAYERS:
            raise InputError(
                f"--volumes: {len(layers)} layers, the finder handles at most {_MAX_LAYERS}"
            )
        fields = {
            "volume_id": np.array([la.volume_id for la in layers], dtype=np.int64),
            "layer_id": np.array([la.layer_id for la in layers], dtype=np.int64),
            "is_barrel": np.array([la.is_barrel for la in layers], dtype=bool),
            "radius_mm": np.array([la.radius_mm for la in layers]),
            "z_mm": np.array([la.z_mm for la in layers]),
            "r_min_mm": np.array([la.r_min_mm for la in layers]),
            "r_max_mm": np.array([la.r_max_mm for la in layers]),
            "z_min_mm": np.array([la.z_min_mm for la in layers]),
            "z_max_mm": np.array([la.z_max_mm for la in layers]),
        }
        order, count = _sampled_layer_sequences(fields, b_field_t)
        return cls(**fields, seed_triples=_seed_triples(order, count, support))

    def index(self, volume_id: np.ndarray, layer_id: np.ndarray) -> np.ndarray:
        """(N,) layer index of each (volume, layer), -1 where it is not one of these layers."""
        key = self.volume_id * 100_000 + self.layer_id
        query = np.asarray(volume_id, dtype=np.int64) * 100_000 + np.asarray(layer_id, np.int64)
        where = np.searchsorted(key, query)
        where = np.clip(where, 0, len(key) - 1)
        return np.where(key[where] == query, where, -1)

    def name(self, index: int) -> str:
        """``volume:layer`` of a layer index, for messages."""
        return f"{int(self.volume_id[index])}:{int(self.layer_id[index])}"


def _sampled_layer_sequences(
    fields: dict[str, np.ndarray], b_field_t: float
) -> tuple[np.ndarray, np.ndarray]:
    """The layers (indices, in flight order) each sampled beam-line trajectory crosses.

    A trajectory from (0, 0, z0) with curvature k (1/mm) and cot(theta) reaches radius
    r = 2 sin(k s / 2) / k at transverse arc length s, and z = z0 + s cot(theta).

    Returns
    -------
    order : (T, L) layer indices in crossing order (only the first ``count`` of a row count).
    count : (T,) layers each trajectory crosses.
    """
    grid = np.meshgrid(_SAMPLE_ETA, _SAMPLE_Z0_MM, _SAMPLE_PT_GEV, indexing="ij")
    eta, z0, pt = (axis.ravel() for axis in grid)
    cot = np.sinh(eta)
    k = GEV_PER_TESLA_METRE * abs(b_field_t) / 1000.0 / pt  # 1/mm, 0 for infinite pT
    n_layers = len(fields["volume_id"])
    s_cross = np.full((len(eta), n_layers), np.inf)
    for index in range(n_layers):
        if fields["is_barrel"][index]:
            radius = fields["radius_mm"][index]
            half = np.where(k > 0, k * radius / 2.0, 0.0)
            ok = half < 1.0
            s = np.where(
                k > 0, 2.0 * np.arcsin(np.clip(half, 0, 1)) / np.where(k > 0, k, 1), radius
            )
            z = z0 + s * cot
            ok &= (z >= fields["z_min_mm"][index]) & (z <= fields["z_max_mm"][index])
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (fields["z_mm"][index] - z0) / cot
            s = np.where(np.isfinite(s) & (s > 0), s, -1.0)
            ok = (s > 0) & (k * s < np.pi)
            s = np.where(ok, s, 0.0)
            r = np.where(k > 0, 2.0 * np.sin(k * s / 2.0) / np.where(k > 0, k, 1), s)
            ok &= (r >= fields["r_min_mm"][index]) & (r <= fields["r_max_mm"][index])
        s_cross[:, index] = np.where(ok, s, np.inf)
    return np.argsort(s_cross, axis=1), np.isfinite(s_cross).sum(axis=1)


# Which crossed layers (positions in a trajectory's sequence) make a seed triple, by kind.
_TRIPLE_POSITIONS = {
    "first": ((0, 1, 2),),
    "skipped": ((1, 2, 3), (0, 2, 3), (0, 1, 3), (2, 3, 4)),
    "consecutive": tuple((a, a + 1, a + 2) for a in range(16)),
    "overlap": ((0, 1, 1), (1, 2, 2), (2, 3, 3)),
}


def _seed_triples(
    order: np.ndarray, count: np.ndarray, support: float
) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """Layer triples by kind (see ``FinderLayers.seed_triples``), most served first."""
    n = max(int((count >= 3).sum()), 1)
    kept: dict[str, tuple[tuple[int, int, int], ...]] = {}
    for kind, positions in _TRIPLE_POSITIONS.items():
        rows = []
        for position in positions:
            valid = (count >= 3) & (count > max(position))
            if position[-1] < order.shape[1]:
                rows.append(order[valid][:, list(position)])
        if not rows:
            kept[kind] = ()
            continue
        triples, served = np.unique(np.concatenate(rows), axis=0, return_counts=True)
        rank = np.lexsort((triples[:, 2], triples[:, 1], triples[:, 0], -served))
        kept[kind] = tuple(
            (int(a), int(b), int(c)) for (a, b, c), m in zip(triples[rank], served[rank])
            if m >= support * n
        )  # fmt: skip
    first = set(kept["first"])
    kept["skipped"] = tuple(t for t in kept["skipped"] if t not in first)
    return kept
