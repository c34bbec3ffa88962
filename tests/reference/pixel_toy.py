"""A toy pixel detector with exact helix tracks through it, as a prepared dataset: a reference.

Only for tests whose thresholds state what this clean geometry allows (the task baselines);
everything else uses the simulated ``toy_data`` fixture of ``tests/conftest.py``.

Barrel (volume 8): six cylinders of flat-ish module centres on rings in phi and z. Endcap
(volume 9): three disks at +z with two rings. Tracks are exact helices from the origin in a 2 T
field along +z (a positive particle turns clockwise seen from +z); hits are the exact crossings,
in flight order, and the module is the one whose (phi, z) or (phi, r) cell holds the crossing.
Computed here independently of ``tracklm.evaluate.helix``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tracklm.detector.geometry import TRACKML_COLUMNS, Detector
from tracklm.detector.vocab import ModuleVocab
from tracklm.io.dataset import SplitWriter, TrackArrays

BARREL_R_MM = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0)
BARREL_NPHI = (12, 24, 36, 54, 80, 108)
BARREL_Z_MM = np.arange(-280.0, 281.0, 70.0)  # 9 rings, 70 mm apart
BARREL_HALF_Z_MM = 315.0
DISK_Z_MM = (400.0, 480.0, 560.0)
DISK_RINGS = ((66.0, 12), (140.0, 24))  # (centre radius, modules); ring boundary at 103 mm
DISK_R_RANGE_MM = (30.0, 180.0)
MAX_HITS = 8
PT_PER_MM = 0.299792458 * 2.0 / 1000.0  # GeV per mm of radius at 2 T


def toy_modules() -> pd.DataFrame:
    """Module table (volume_id, layer_id, module_id, cx, cy, cz) of the toy detector."""
    rows = []
    for i, (radius, nphi) in enumerate(zip(BARREL_R_MM, BARREL_NPHI)):
        phi = 2 * np.pi * (np.arange(nphi) + 0.5) / nphi
        for iz, z in enumerate(BARREL_Z_MM):
            for ip in range(nphi):
                rows.append(
                    (
                        8,
                        2 * (i + 1),
                        iz * nphi + ip + 1,
                        radius * np.cos(phi[ip]),
                        radius * np.sin(phi[ip]),
                        z,
                    )
                )
    for i, z in enumerate(DISK_Z_MM):
        offset = 0
        for radius, nphi in DISK_RINGS:
            phi = 2 * np.pi * (np.arange(nphi) + 0.5) / nphi
            for ip in range(nphi):
                rows.append(
                    (
                        9,
                        2 * (i + 1),
                        offset + ip + 1,
                        radius * np.cos(phi[ip]),
                        radius * np.sin(phi[ip]),
                        z,
                    )
                )
            offset += nphi
    return pd.DataFrame(rows, columns=["volume_id", "layer_id", "module_id", "cx", "cy", "cz"])


def toy_detector() -> Detector:
    table = toy_modules()
    for column in TRACKML_COLUMNS:
        if column not in table:
            table[column] = 0.0
    return Detector(table[list(TRACKML_COLUMNS)], name="toy")


def _module_of(x: float, y: float, z: float, volume: int, layer_index: int) -> int:
    phi = np.arctan2(y, x) % (2 * np.pi)
    if volume == 8:
        nphi = BARREL_NPHI[layer_index]
        ip = int(phi / (2 * np.pi / nphi)) % nphi
        iz = int(np.clip(np.round((z - BARREL_Z_MM[0]) / 70.0), 0, len(BARREL_Z_MM) - 1))
        return iz * nphi + ip + 1
    r = np.hypot(x, y)
    ring = 0 if r < 103.0 else 1
    nphi = DISK_RINGS[ring][1]
    ip = int(phi / (2 * np.pi / nphi)) % nphi
    return (0 if ring == 0 else DISK_RINGS[0][1]) + ip + 1


def toy_tracks(n: int, seed: int, vocab: ModuleVocab, first_event: int = 0) -> TrackArrays:
    """``n`` helix tracks (4 to 8 hits each) through the toy detector."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("tokens", "lengths", "hits", "pt", "eta", "phi", "charge")}
    while len(out["pt"]) < n:
        pt = float(np.exp(rng.uniform(np.log(0.4), np.log(10.0))))
        eta = float(rng.uniform(-0.6, 1.7))
        phi0 = float(rng.uniform(-np.pi, np.pi))
        q = int(rng.choice([-1, 1]))
        radius = pt / PT_PER_MM
        # Centre of the circle: to the right of the direction for q > 0 (clockwise turn).
        cx, cy = q * radius * np.sin(phi0), -q * radius * np.cos(phi0)
        theta0 = np.arctan2(-cy, -cx)  # angle of the origin seen from the centre

        def point(
            s: float, cx=cx, cy=cy, theta0=theta0, q=q, radius=radius, eta=eta
        ) -> tuple[float, float, float]:
            angle = theta0 - q * s / radius  # q > 0 turns clockwise: the angle decreases
            return cx + radius * np.cos(angle), cy + radius * np.sin(angle), s * np.sinh(eta)

        crossings = []
        for i, r in enumerate(BARREL_R_MM):
            if r < 2 * radius:
                s = 2 * radius * np.arcsin(r / (2 * radius))
                x, y, z = point(s)
                if abs(z) <= BARREL_HALF_Z_MM:
                    crossings.append((s, x, y, z, 8, i))
        if eta > 0.05:
            for i, zd in enumerate(DISK_Z_MM):
                s = zd / np.sinh(eta)
                if s < np.pi * radius:
                    x, y, z = point(s)
                    if DISK_R_RANGE_MM[0] <= np.hypot(x, y) <= DISK_R_RANGE_MM[1]:
                        crossings.append((s, x, y, z, 9, i))
        crossings.sort()
        crossings = crossings[:MAX_HITS]
        if len(crossings) < 4:
            continue
        tokens = np.zeros(MAX_HITS, dtype=np.int32)
        hits = np.zeros((MAX_HITS, 3), dtype=np.float32)
        for k, (_, x, y, z, volume, i) in enumerate(crossings):
            module = _module_of(x, y, z, volume, i)
            tokens[k] = vocab.encode(
                np.array([volume]), np.array([2 * (i + 1)]), np.array([module])
            )[0]
            hits[k] = (x, y, z)
        out["tokens"].append(tokens)
        out["lengths"].append(len(crossings))
        out["hits"].append(hits)
        out["pt"].append(pt)
        out["eta"].append(eta)
        out["phi"].append(phi0)
        out["charge"].append(q)
    count = len(out["pt"])
    return TrackArrays(
        tokens=np.stack(out["tokens"]),
        lengths=np.asarray(out["lengths"], dtype=np.int32),
        hits=np.stack(out["hits"]),
        pt=np.asarray(out["pt"], dtype=np.float32),
        eta=np.asarray(out["eta"], dtype=np.float32),
        phi=np.asarray(out["phi"], dtype=np.float32),
        charge=np.asarray(out["charge"], dtype=np.int8),
        vertex=np.zeros((count, 3), dtype=np.float32),
        event_id=(first_event + np.arange(count) // 50).astype(np.int64),
        particle_id=np.arange(count, dtype=np.int64),
    )


def write_toy_dataset(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """A dataset directory (manifest, vocab, modules, splits) with ``sizes`` tracks per split."""
    modules = toy_modules()
    vocab = ModuleVocab(modules[["volume_id", "layer_id", "module_id"]].to_numpy())
    path.mkdir(parents=True)
    vocab.save(path / "vocab.json")
    table = modules.sort_values(["volume_id", "layer_id", "module_id"]).reset_index(drop=True)
    table.insert(0, "token", vocab.encode(table.volume_id, table.layer_id, table.module_id))
    table.to_parquet(path / "modules.parquet", index=False)
    for i, (split, n) in enumerate(sizes.items()):
        with SplitWriter(path / split, MAX_HITS) as writer:
            writer.append(toy_tracks(n, seed + i, vocab, first_event=1000 * i))
    manifest = {"stage": "prepare", "n_tracks": sizes, "vocab_sha256": vocab.sha256}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path
