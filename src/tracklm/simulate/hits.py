"""Hits from module crossings: inefficiency, pitch smearing on the module plane, and noise."""

from __future__ import annotations

import numpy as np

from tracklm.detector.frames import ModuleFrames

_SQRT12 = np.sqrt(12.0)


def smear_on_module(
    frames: ModuleFrames, rows: np.ndarray, true_mm: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Measured positions (N, 3): true points smeared by pitch/sqrt(12) in local u and v.

    The result lies on the module plane (w = 0) and inside the module bounds (the smeared u, v
    are clipped to them; a strip's long pitch would otherwise push hits off the sensor).
    """
    uvw = frames.to_local(rows, true_mm)
    u = uvw[:, 0] + rng.standard_normal(rows.size) * frames.pitch_u[rows] / _SQRT12
    v = uvw[:, 1] + rng.standard_normal(rows.size) * frames.pitch_v[rows] / _SQRT12
    hv = frames.hv[rows]
    v = np.clip(v, -hv, hv)
    half = frames.half_width(rows, v)
    u = np.clip(u, -half, half)
    return frames.to_global(rows, np.stack([u, v, np.zeros_like(u)], axis=1))


def noise_hits(
    frames: ModuleFrames, module_rows: np.ndarray, n_hits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_hits`` noise hits spread uniformly over the modules ``module_rows``.

    Returns
    -------
    rows : (n,) module row of each noise hit. position_mm : (n, 3) points on those modules.
    """
    if n_hits == 0 or module_rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    rows = module_rows[rng.integers(0, module_rows.size, n_hits)]
    v = rng.uniform(-1.0, 1.0, n_hits) * frames.hv[rows]
    u = rng.uniform(-1.0, 1.0, n_hits) * frames.half_width(rows, v)
    return rows, frames.to_global(rows, np.stack([u, v, np.zeros_like(u)], axis=1))
