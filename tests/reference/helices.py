"""A hand-made pixel-like detector and exact helix tracks through it: an independent reference.

Barrel layers (volume 8) are rings of module centres at fixed radius and z; one endcap (volume 9)
has disks at fixed z with two rings of modules. Tracks are helices from the origin in a 2 T field,
crossing layers in flight order; the hit is the exact crossing point and the module the one whose
centre is nearest. Everything is computed independently of ``tracklm.evaluate.helix``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import TrackArrays

BARREL_RADII_MM = (32.0, 72.0, 116.0, 172.0)
BARREL_NPHI = (8, 16, 24, 32)
BARREL_Z_MM = np.arange(-245.0, 246.0, 70.0)  # 8 rings
DISK_Z_MM = (320.0, 380.0, 460.0)
DISK_RINGS = ((66.0, 12), (140.0, 20))
B_FIELD_T = 2.0


def toy_modules() -> pd.DataFrame:
    """Module table (volume_id, layer_id, module_id, cx, cy, cz) of the toy detector."""
    rows = []
    for i, (radius, nphi) in enumerate(zip(BARREL_RADII_MM, BARREL_NPHI)):
        module = 1
        for z in BARREL_Z_MM:
            for k in range(nphi):
                phi = 2 * np.pi * (k + 0.5) / nphi
                rows.append((8, 2 * (i + 1), module, radius * np.cos(phi), radius * np.sin(phi), z))
                module += 1
    for i, z in enumerate(DISK_Z_MM):
        module = 1
        for radius, nphi in DISK_RINGS:
            for k in range(nphi):
                phi = 2 * np.pi * (k + 0.5) / nphi
                rows.append((9, 2 * (i + 1), module, radius * np.cos(phi), radius * np.sin(phi), z))
                module += 1
    return pd.DataFrame(rows, columns=["volume_id", "layer_id", "module_id", "cx", "cy", "cz"])


def helix_points(pt_gev, phi0, cot_theta, charge, s_mm):
    """Points at transverse arc lengths s on a helix from the origin (field along +z)."""
    radius = pt_gev / (0.299792458 * B_FIELD_T) * 1000.0
    # positive charges turn clockwise: centre to the right of the direction of motion
    cx, cy = charge * radius * np.sin(phi0), -charge * radius * np.cos(phi0)
    start = np.arctan2(-cy, -cx)
    phase = start - charge * np.asarray(s_mm) / radius
    return np.stack(
        [cx + radius * np.cos(phase), cy + radius * np.sin(phase), cot_theta * np.asarray(s_mm)],
        axis=-1,
    )


def layer_crossings(pt_gev, phi0, cot_theta, charge):
    """[(layer key, xyz)] in flight order for one helix, by dense sampling of the path."""
    s = np.linspace(0.0, 1500.0, 60001)
    xyz = helix_points(pt_gev, phi0, cot_theta, charge, s)
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    out = []
    for i, radius in enumerate(BARREL_RADII_MM):
        j = np.flatnonzero((r[:-1] < radius) & (r[1:] >= radius))
        if len(j) and abs(xyz[j[0], 2]) < 280:
            out.append((s[j[0]], (8, 2 * (i + 1)), xyz[j[0]]))
    for i, z in enumerate(DISK_Z_MM):
        j = np.flatnonzero((xyz[:-1, 2] < z) & (xyz[1:, 2] >= z))
        if len(j) and 40 < r[j[0]] < 170:
            out.append((s[j[0]], (9, 2 * (i + 1)), xyz[j[0]]))
    out.sort(key=lambda item: item[0])
    return [(key, point) for _, key, point in out]


def toy_tracks(
    modules: pd.DataFrame,
    vocab: ModuleVocab,
    n_events: int,
    per_event: int,
    seed: int,
    max_length: int = 8,
    overlap_probability: float = 0.25,
) -> TrackArrays:
    """Helix tracks from the origin with 4 to ``max_length`` hits, ``per_event`` per event."""
    rng = np.random.default_rng(seed)
    by_layer = {key: g for key, g in modules.groupby(["volume_id", "layer_id"])}
    records = []
    while len(records) < n_events * per_event:
        pt = rng.uniform(0.5, 5.0)
        charge = rng.choice([-1, 1])
        phi0 = rng.uniform(-np.pi, np.pi)
        cot = rng.uniform(-0.5, 3.0)
        crossings = layer_crossings(pt, phi0, cot, charge)
        tokens, hits = [], []
        for key, point in crossings:
            group = by_layer[key]
            centres = group[["cx", "cy", "cz"]].to_numpy()
            order = np.argsort(np.linalg.norm(centres - point, axis=1))
            # the nearest module, then sometimes an overlapping neighbour (a double hit)
            for rank in (0, 1) if rng.random() < overlap_probability else (0,):
                best = group.iloc[int(order[rank])]
                tokens.append(
                    int(
                        vocab.encode(
                            np.array([best.volume_id]),
                            np.array([best.layer_id]),
                            np.array([best.module_id]),
                        )[0]
                    )
                )
                hits.append(point)
        if not 4 <= len(tokens) <= max_length:
            continue
        records.append((tokens, hits, pt, charge, phi0, cot, len(records) // per_event))
    n = len(records)
    tokens = np.zeros((n, max_length), np.int32)
    hits = np.zeros((n, max_length, 3), np.float32)
    lengths = np.zeros(n, np.int32)
    for i, (t, h, *_rest) in enumerate(records):
        lengths[i] = len(t)
        tokens[i, : len(t)] = t
        hits[i, : len(t)] = h
    return TrackArrays(
        tokens=tokens,
        lengths=lengths,
        hits=hits,
        pt=np.array([r[2] for r in records], np.float32),
        eta=np.arcsinh(np.array([r[5] for r in records], np.float32)),
        phi=np.array([r[4] for r in records], np.float32),
        charge=np.array([r[3] for r in records], np.int8),
        vertex=np.zeros((n, 3), np.float32),
        event_id=np.array([r[6] for r in records], np.int64),
        particle_id=np.arange(n, dtype=np.int64) + 1,
    )
