"""What a hit-aware TrackingBERT reads beside the token: its module's geometry, the measured hit.

The model's ``inputs`` (``TrackingBertConfig.inputs``) choose:

* ``tokens``: the module token only (the paper's model); nothing here is used;
* ``geometry``: each module token's embedding plus ``ModuleInputs.geometry`` of its module's
  centre, orientation and size. The table (``module_geometry``, one row per token id) is a
  buffer of the model, saved in ``model.safetensors``, so a model directory stays
  self-contained;
* ``hits``: ``geometry`` plus ``ModuleInputs.hits`` of each **visible** hit's measured position,
  in its module's local frame (u, v scaled by the module's half-sizes, w in mm) and in global
  coordinates (scaled to about unit size). A position is read only where it is finite **and**
  the input token is a module: a hidden hit (``[MASK]``) carries none, whatever is passed.
  ``PositionHead`` predicts a hidden hit's position in the frame of a module (the true one when
  training, the predicted one when evaluating), so the model answers "which module, and where".

Shape legend: ``n`` tokens, ``k`` predicted positions, ``v`` vocabulary, ``d`` hidden.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.detector.frames import ModuleFrames
from tracklm.errors import InputError

GEOMETRY_COLUMNS = (
    "cx", "cy", "cz",
    "rot_xu", "rot_xv", "rot_xw", "rot_yu", "rot_yv", "rot_yw", "rot_zu", "rot_zv", "rot_zw",
    "half_u", "half_v", "is_module",
)  # fmt: skip
"""Columns of the ``module_geometry`` table: centre (mm), local-to-global rotation (row-major,
columns the u, v, w axes), half-sizes in u (the wider end) and v (mm), 1 for modules (0 for
special tokens)."""
N_GEOMETRY = len(GEOMETRY_COLUMNS)
_CENTRE_SCALE_MM = 1000.0
_SIZE_SCALE_MM = 50.0
_LOCAL_CLAMP = 4.0  # normalised local coordinates beyond this are not a hit of the module
# Fourier features of a point (``point_features``): the azimuth at harmonics 1, 2, 4, ..., 256
# (down to 2.5 mm at r = 100 mm), z and r at periods 4000 mm / 2^j (down to about 16 and 62 mm).
_PHI_OCTAVES = 9
_Z_OCTAVES = 9
_R_OCTAVES = 7
N_POINT_FEATURES = 2 * (_PHI_OCTAVES + _Z_OCTAVES + _R_OCTAVES) + 2
N_MODULE_FEATURES = N_POINT_FEATURES + 9 + 2  # the centre's, the rotation, the half-sizes
N_HIT_FEATURES = N_POINT_FEATURES + 3  # the hit's, and (u / half_u, v / half_v, w) on its module


def module_geometry_table(frames: ModuleFrames) -> np.ndarray:
    """(v, ``N_GEOMETRY``) float32 table of ``GEOMETRY_COLUMNS`` from frames indexed by token id.

    Rows whose frame is unknown (NaN: special tokens) are zeros with unit half-sizes and
    ``is_module`` 0.
    """
    v = len(frames)
    table = np.zeros((v, N_GEOMETRY), dtype=np.float64)
    table[:, 0:3] = frames.centres
    table[:, 3:12] = frames.rotations.reshape(v, 9)
    table[:, 12] = np.maximum(frames.minhu, frames.maxhu)
    table[:, 13] = frames.hv
    known = np.isfinite(table[:, :14]).all(axis=1) & (table[:, 12] > 0) & (table[:, 13] > 0)
    table[~known] = 0.0
    table[~known, 12:14] = 1.0
    table[:, 14] = known
    return table.astype(np.float32)


def _octaves(angle_cos: Tensor, angle_sin: Tensor, octaves: int) -> list[Tensor]:
    """cos and sin of 2^j times an angle, j = 0 .. octaves - 1, by angle doubling (no atan2,
    which ONNX lacks)."""
    out = []
    c, s = angle_cos, angle_sin
    for _ in range(octaves):
        out += [c, s]
        c, s = c * c - s * s, 2.0 * s * c
    return out


def point_features(xyz_mm: Tensor) -> Tensor:
    """(..., 3) points in mm -> (..., ``N_POINT_FEATURES``) Fourier features of about unit size.

    A point's azimuth, z and radius at geometrically spaced frequencies, so that a linear layer
    on them can tell apart points a few mm apart anywhere in the detector (the coordinates
    themselves, scaled to the detector's size, would need weights precise to 1e-3).
    """
    x, y, z = xyz_mm.unbind(-1)
    r = torch.sqrt(x * x + y * y).clamp_min(1e-6)
    base = torch.pi / 2000.0  # rad per mm: a period of 4000 mm at the first octave
    parts = _octaves(x / r, y / r, _PHI_OCTAVES)
    parts += _octaves(torch.cos(z * base), torch.sin(z * base), _Z_OCTAVES)
    parts += _octaves(torch.cos(r * base), torch.sin(r * base), _R_OCTAVES)
    parts += [r / _CENTRE_SCALE_MM, z / _CENTRE_SCALE_MM]
    return torch.stack(parts, dim=-1)


def module_features(rows: Tensor) -> Tensor:
    """(..., ``N_GEOMETRY``) table rows -> (..., ``N_MODULE_FEATURES``): the centre's Fourier
    features, the rotation and the half-sizes."""
    return torch.cat(
        [point_features(rows[..., 0:3]), rows[..., 3:12], rows[..., 12:14] / _SIZE_SCALE_MM],
        dim=-1,
    )


def to_local(rows: Tensor, xyz_mm: Tensor) -> Tensor:
    """(..., 3) global points in mm -> (..., 3) (u / half_u, v / half_v, w in mm) in the frames
    of the modules whose table ``rows`` (..., ``N_GEOMETRY``) are given."""
    rotation = rows[..., 3:12].reshape(*rows.shape[:-1], 3, 3)  # (..., 3, 3), columns u, v, w
    local = torch.einsum("...ij,...i->...j", rotation, xyz_mm - rows[..., 0:3])
    return torch.stack(
        [local[..., 0] / rows[..., 12], local[..., 1] / rows[..., 13], local[..., 2]], dim=-1
    )


def to_global(rows: Tensor, uv: Tensor) -> Tensor:
    """(..., 2) normalised (u / half_u, v / half_v) on the modules' planes -> (..., 3) global mm."""
    rotation = rows[..., 3:12].reshape(*rows.shape[:-1], 3, 3)
    local = torch.stack([uv[..., 0] * rows[..., 12], uv[..., 1] * rows[..., 13]], dim=-1)
    return rows[..., 0:3] + torch.einsum("...ij,...j->...i", rotation[..., :, :2], local)


def known_hits(rows: Tensor, hits_mm: Tensor) -> Tensor:
    """(...,) bool: the hit position is given (finite) and the token is a module."""
    return torch.isfinite(hits_mm).all(dim=-1) & (rows[..., 14] > 0.5)


class ModuleInputs(nn.Module):
    """The geometry (and, with ``hits``, the measured hit) part of each token's input embedding.

    Parameters
    ----------
    vocab_size, hidden_size : v and d.
    hits : also embed measured hit positions.
    """

    module_geometry: Tensor  # (v, N_GEOMETRY), see GEOMETRY_COLUMNS

    def __init__(self, vocab_size: int, hidden_size: int, hits: bool) -> None:
        super().__init__()
        self.register_buffer("module_geometry", module_geometry_placeholder(vocab_size))
        self.geometry = _mlp(N_MODULE_FEATURES, hidden_size)
        self.hits: nn.Sequential | None = None
        if hits:
            self.hits = _mlp(N_HIT_FEATURES, hidden_size)

    def set_table(self, table: Tensor | np.ndarray) -> None:
        """Set the (v, ``N_GEOMETRY``) table (``module_geometry_table``); saved with the weights."""
        target = self.module_geometry
        value = torch.as_tensor(table, dtype=target.dtype)
        if value.shape != target.shape:
            raise ValueError(
                f"module geometry of shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(value.to(target.device))

    def module_embeddings(self) -> Tensor:
        """(v, d) the geometry part of every token's embedding (zeros for special tokens).

        Added to the token embeddings at the input and in the tied masked-module decoder, so a
        module's score depends on where it is: modules next to the predicted place score alike.
        """
        rows = self.module_geometry
        out: Tensor = self.geometry(module_features(rows)) * rows[:, 14:15]
        return out

    def forward(self, ids: Tensor, hits_mm: Tensor | None, table: Tensor) -> Tensor:
        """(n,) token ids, (n, 3) hit positions in mm (NaN: unknown) and the (v, d)
        ``module_embeddings`` -> (n, d) additions to the token embeddings."""
        out = table[ids]  # (n, d)
        if self.hits is not None and hits_mm is not None:
            rows = self.module_geometry[ids]  # (n, N_GEOMETRY)
            known = known_hits(rows, hits_mm)  # (n,)
            xyz = torch.where(known[:, None], hits_mm, rows[:, 0:3])  # centre where unknown
            local = to_local(rows, xyz).clamp(-_LOCAL_CLAMP, _LOCAL_CLAMP)
            features = torch.cat([point_features(xyz), local], dim=-1)  # (n, N_HIT_FEATURES)
            out = out + self.hits(features) * known[:, None].to(out.dtype)
        return out


def _mlp(features: int, hidden_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(features, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
    )


def module_geometry_placeholder(vocab_size: int) -> Tensor:
    """An empty geometry table (zeros, unit half-sizes) until the dataset's is set."""
    table = torch.zeros(vocab_size, N_GEOMETRY)
    table[:, 12:14] = 1.0
    return table


class PositionHead(nn.Module):
    """Where in a given module the hidden hit lies: (u / half_u, v / half_v) on its plane (the
    true module when training, the predicted one when evaluating)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.module = nn.Linear(N_MODULE_FEATURES, hidden_size)
        self.out = nn.Linear(hidden_size, 2)

    def forward(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """(k, d) hidden states and (k, ``N_GEOMETRY``) rows of the modules -> (k, 2)."""
        x = F.gelu(self.dense(hidden) + self.module(module_features(rows)))
        out: Tensor = self.out(x)
        return out

    def loss(self, hidden: Tensor, rows: Tensor, true_mm: Tensor) -> Tensor:
        """Mean L1 error, in half-sizes, of the predicted positions of k hidden hits on their
        true modules (``rows`` (k, ``N_GEOMETRY``)), against ``true_mm`` (k, 3); rows without
        a known position or module are skipped; 0 when none is left."""
        keep = torch.isfinite(true_mm).all(dim=-1) & (rows[:, 14] > 0.5)
        hidden, rows, true_mm = hidden[keep], rows[keep], true_mm[keep]
        if hidden.shape[0] == 0:
            return hidden.sum() * 0.0
        target = to_local(rows, true_mm)[:, :2].clamp(-_LOCAL_CLAMP, _LOCAL_CLAMP)
        total: Tensor = (self(hidden, rows).float() - target.float()).abs().sum(dim=-1).mean()
        return total


def check_hits_present(reads_hits: bool, hits_mm: np.ndarray, where: str) -> None:
    """Refuse data without hit positions for a model that reads them.

    Parameters
    ----------
    reads_hits : the model's ``config.reads_hits``.
    hits_mm : (N, L, 3) the tracks' hit positions (a split's ``hits``; memory-mapped is fine:
        only the first 1,000 tracks are read).
    where : the file named in the message (e.g. ``DATA/test/hits.npy``).

    Raises
    ------
    InputError
        When the model reads hits and the first tracks hold no position (all zero or NaN).
    """
    if not reads_hits or len(hits_mm) == 0:
        return
    head = np.asarray(hits_mm[:1000], dtype=np.float64)
    if not np.any(np.isfinite(head) & (head != 0.0)):
        raise InputError(
            f"{where}: holds no hit positions, but the model reads them (inputs: hits); "
            "use a model with inputs tokens or geometry"
        )
