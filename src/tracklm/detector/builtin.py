"""The built-in TrackML detector, generated from a short parametric description.

``builtin_module_table("trackml")`` reads ``detector/trackml.yaml`` (package data) and lays out all
18,728 modules of the TrackML detector: pixel volumes 7/8/9, short strips 12/13/14 and long
strips 16/17/18. Conventions follow TrackML's ``detectors.csv`` so that the same
(volume_id, layer_id, module_id) names the same physical module:

- Barrels: ``module_id = iz * n_phi + iphi + 1`` with ``iphi`` counting up in phi from
  ``-pi + step / 2`` and ``iz`` counting up in z. Local axes: w is the outward normal turned by the
  tilt angle, v is +z, u = v x w.
- Endcaps: layer ids 2, 4, ... count up in signed z, so in the -z volumes layer 2 is the disk
  farthest from the interaction point. Local axes: v points outward along the module's radius,
  w along +z on the +z side and -z on the -z side, u = v x w. Module ids go sector by sector in
  phi (sector count and offset in the description), inner ring first within a sector, then up
  in phi.

Lengths in mm, angles in rad. This module produces the module table only; ``Detector.load``
and ``Detector.builtin`` (``detector/geometry.py``) wrap it in a cached ``Detector``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tracklm.detector.table import TRACKML_COLUMNS
from tracklm.errors import InputError

BUILTIN_DETECTORS = ("trackml",)


def _module_table(
    volume_id: int,
    layer_id: int,
    centres_mm: np.ndarray,
    axes: np.ndarray,
    *,
    thickness_mm: float,
    min_half_width_mm: np.ndarray | float,
    max_half_width_mm: np.ndarray | float,
    half_length_mm: float,
    pitch_u_mm: float,
    pitch_v_mm: float,
) -> pd.DataFrame:
    """Module rows of one layer, numbered 1 ... M in the given order.

    Parameters
    ----------
    centres_mm : (M, 3) module centres.
    axes : (M, 3, 3) local-to-global rotations; columns are the u, v, w axes.
    """
    count = len(centres_mm)
    columns: dict[str, Any] = {
        "volume_id": np.full(count, volume_id, dtype=np.int32),
        "layer_id": np.full(count, layer_id, dtype=np.int32),
        "module_id": np.arange(1, count + 1, dtype=np.int32),
        "cx": centres_mm[:, 0],
        "cy": centres_mm[:, 1],
        "cz": centres_mm[:, 2],
    }
    for i, global_axis in enumerate("xyz"):
        for j, local_axis in enumerate("uvw"):
            columns[f"rot_{global_axis}{local_axis}"] = axes[:, i, j]
    columns["module_t"] = np.full(count, thickness_mm)
    columns["module_minhu"] = np.broadcast_to(np.asarray(min_half_width_mm, float), (count,))
    columns["module_maxhu"] = np.broadcast_to(np.asarray(max_half_width_mm, float), (count,))
    columns["module_hv"] = np.full(count, half_length_mm)
    columns["pitch_u"] = np.full(count, pitch_u_mm)
    columns["pitch_v"] = np.full(count, pitch_v_mm)
    table: pd.DataFrame = pd.DataFrame(columns, columns=list(TRACKML_COLUMNS))
    return table


def _sector_phi(count: int) -> np.ndarray:
    """Centre phi (rad) of ``count`` equal sectors, the first at ``-pi + step / 2``."""
    step = 2.0 * np.pi / count
    return -np.pi + (np.arange(count) + 0.5) * step


def _barrel_layer(
    volume: dict[str, Any], layer_id: int, radius_mm: float, n_phi: int
) -> pd.DataFrame:
    """One barrel layer at ``radius_mm``: ``n_phi`` modules around, ``volume["n_z"]`` along z."""
    n_z = int(volume["n_z"])
    z_step = float(volume["z_step"])
    iz, iphi = np.divmod(np.arange(n_z * n_phi), n_phi)
    phi = _sector_phi(n_phi)[iphi]
    # Neighbouring z rings alternate in radius so their modules overlap along z without touching.
    radius = radius_mm + np.where(iz % 2 == 0, 1.0, -1.0) * float(volume["stagger"])
    z = (iz - 0.5 * (n_z - 1)) * z_step
    centres = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=1)

    normal_phi = phi + float(volume["tilt"])
    axes = np.zeros((len(phi), 3, 3))
    axes[:, 0, 0] = -np.sin(normal_phi)  # u: across the module, in the transverse plane
    axes[:, 1, 0] = np.cos(normal_phi)
    axes[:, 2, 1] = 1.0  # v: along the beam
    axes[:, 0, 2] = np.cos(normal_phi)  # w: outward normal, tilted
    axes[:, 1, 2] = np.sin(normal_phi)
    return _module_table(
        int(volume["volume_id"]),
        layer_id,
        centres,
        axes,
        thickness_mm=float(volume["thickness"]),
        min_half_width_mm=float(volume["half_width"]),
        max_half_width_mm=float(volume["half_width"]),
        half_length_mm=float(volume["half_length"]),
        pitch_u_mm=float(volume["pitch_u"]),
        pitch_v_mm=float(volume["pitch_v"]),
    )


def _disk_layer(
    endcap: dict[str, Any], volume_id: int, layer_id: int, disk_z_mm: float
) -> pd.DataFrame:
    """One disk at signed ``disk_z_mm``: all rings, numbered in TrackML's sector order."""
    side = 1.0 if disk_z_mm > 0 else -1.0
    rings = endcap["rings"]
    numbering = endcap["numbering"]
    sectors = int(numbering["sectors"])
    ring_index: list[np.ndarray] = []
    sector_position: list[np.ndarray] = []
    phi: list[np.ndarray] = []
    radius: list[np.ndarray] = []
    abs_z: list[np.ndarray] = []
    min_hu: list[np.ndarray] = []
    max_hu: list[np.ndarray] = []
    for index, ring in enumerate(rings):
        count = int(ring["modules"])
        position = np.arange(count)
        stagger = np.asarray(ring["z_stagger"], dtype=float)
        ring_index.append(np.full(count, index))
        sector_position.append((position + 0.5) * sectors / count - float(numbering["offset"]))
        phi.append(_sector_phi(count))
        radius.append(np.full(count, float(ring["radius"])))
        offsets = float(ring["z_offset"]) + stagger[position % len(stagger)]
        abs_z.append(abs(disk_z_mm) + offsets)
        min_hu.append(np.full(count, float(ring["half_width"][0])))
        max_hu.append(np.full(count, float(ring["half_width"][1])))
    ring_of = np.concatenate(ring_index)
    phi_of = np.concatenate(phi)
    radius_of = np.concatenate(radius)

    # TrackML numbers a disk's modules sector by sector in phi (counting from -pi), the inner
    # ring first within a sector, then up in phi. A module exactly on a sector boundary goes to
    # the upper sector where sin(2 phi) > 0 and to the lower one elsewhere. Sector count, offset
    # and this tie rule are fitted to reproduce TrackML's numbering, not physics.
    position_of = np.concatenate(sector_position)
    nearest = np.round(position_of)
    on_boundary = np.abs(position_of - nearest) < 1e-9
    sector_of = np.where(on_boundary, nearest, np.floor(position_of))
    sector_of = sector_of - (on_boundary & (np.sin(2.0 * phi_of) < 0))
    order = np.lexsort((phi_of, ring_of, sector_of))

    phi_of = phi_of[order]
    radius_of = radius_of[order]
    cos_phi, sin_phi = np.cos(phi_of), np.sin(phi_of)
    centres = np.stack(
        [radius_of * cos_phi, radius_of * sin_phi, side * np.concatenate(abs_z)[order]], axis=1
    )
    axes = np.zeros((len(phi_of), 3, 3))
    # v outward along the radius; w = side * z; u = v x w keeps the frame right-handed.
    axes[:, 0, 0] = side * sin_phi
    axes[:, 1, 0] = -side * cos_phi
    axes[:, 0, 1] = cos_phi
    axes[:, 1, 1] = sin_phi
    axes[:, 2, 2] = side
    return _module_table(
        volume_id,
        layer_id,
        centres,
        axes,
        thickness_mm=float(endcap["thickness"]),
        min_half_width_mm=np.concatenate(min_hu)[order],
        max_half_width_mm=np.concatenate(max_hu)[order],
        half_length_mm=float(endcap["half_length"]),
        pitch_u_mm=float(endcap["pitch_u"]),
        pitch_v_mm=float(endcap["pitch_v"]),
    )


def _load_description(name: str) -> dict[str, Any]:
    text = resources.files("tracklm.detector").joinpath(f"{name}.yaml").read_text()
    description: dict[str, Any] = yaml.safe_load(text)
    return description


def builtin_module_table(name: str = "trackml") -> pd.DataFrame:
    """The module table of the built-in detector ``name``, generated from its description.

    Parameters
    ----------
    name : only ``"trackml"`` (the TrackML challenge detector, 18,728 modules).

    Returns
    -------
    DataFrame : one row per module, TrackML ``detectors.csv`` columns (mm); not yet sorted.

    Raises
    ------
    InputError : for an unknown detector name.
    """
    if name not in BUILTIN_DETECTORS:
        raise InputError(
            f"detector {name!r}: no such built-in detector (known: {', '.join(BUILTIN_DETECTORS)})"
        )
    description = _load_description(name)
    tables: list[pd.DataFrame] = []
    for volume in description["barrels"]:
        for index, (radius_mm, n_phi) in enumerate(volume["layers"]):
            tables.append(_barrel_layer(volume, 2 * (index + 1), float(radius_mm), int(n_phi)))
    for endcap in description["endcaps"]:
        negative_volume, positive_volume = (int(v) for v in endcap["volume_ids"])
        disk_z = sorted(float(z) for z in endcap["disk_z"])
        # Layer ids count up in signed z: on the -z side the farthest disk is layer 2.
        for volume_id, signed_z in (
            (negative_volume, [-z for z in reversed(disk_z)]),
            (positive_volume, disk_z),
        ):
            for index, z_mm in enumerate(signed_z):
                tables.append(_disk_layer(endcap, volume_id, 2 * (index + 1), z_mm))
    return pd.concat(tables, ignore_index=True)
