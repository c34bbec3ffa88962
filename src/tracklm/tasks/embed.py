"""``tracklm embed``: the learned module embeddings as a table, a 2D picture and a number.

The table (parquet) has one row per module of the model's vocabulary, in vocabulary order:
``volume_id, layer_id, module_id, cx, cy, cz`` (centre in mm), then ``e0 ... e{D-1}`` (the
token-embedding row of the module). For models that also read geometry or hits
(``config.inputs`` ``geometry`` or ``hits``) it is still the token-embedding row alone: the learned,
free part of a module's input. Their geometry projection is a fixed function of the module's
centre, orientation and size, so adding it would make nearby modules similar by construction and
the neighbour fraction below would no longer measure what was learned. The sidecar records
``embedding: token`` and the model's ``inputs``. The model directory holds only the module ids
(``vocab.json``), so centres come from a detector geometry: the built-in TrackML detector unless
another is given (``detector=``; the command line always uses the built-in one). A vocabulary
module absent from that geometry is an ``InputError``.

What the embedding learned, as one number: for each module, the fraction of its ``k`` nearest
modules in embedding space (cosine similarity) that are geometric neighbours, i.e. whose centres
lie within ``radius_mm`` (default 50 mm: neighbours in phi and z on the same layer, and the
facing modules of the adjacent pixel layer). It is compared with the same fraction for seeded
random vectors of the same shape and with the chance level (the mean fraction of all other
modules within ``radius_mm``). The numbers go to a sidecar JSON (``FILE.json`` beside
``FILE.parquet``) and to the log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from tracklm._fs import atomic_output_file, make_parent, write_json
from tracklm.detector.geometry import Detector
from tracklm.errors import InputError
from tracklm.io.dataset import modules_table
from tracklm.models.bert import TrackingBert

logger = logging.getLogger(__name__)

NEIGHBOUR_K = 10
NEIGHBOUR_RADIUS_MM = 50.0


def embedding_neighbour_fraction(
    embeddings: np.ndarray,
    centres_mm: np.ndarray,
    k: int = NEIGHBOUR_K,
    radius_mm: float = NEIGHBOUR_RADIUS_MM,
) -> float:
    """Mean fraction of each module's ``k`` nearest embeddings (cosine) that are geometric neighbours.

    Parameters
    ----------
    embeddings : (M, D) one vector per module.
    centres_mm : (M, 3) module centres in mm.
    k : neighbours in embedding space per module (the module itself excluded).
    radius_mm : two modules are geometric neighbours when their centres are at most this far apart.

    Returns
    -------
    float in [0, 1] (``nan`` with fewer than 2 modules).
    """
    vectors = np.asarray(embeddings, dtype=np.float64)
    centres = np.asarray(centres_mm, dtype=np.float64)
    m = len(vectors)
    if m < 2:
        return float("nan")
    k = min(k, m - 1)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    fractions = np.empty(m)
    for start in range(0, m, 1024):
        stop = min(start + 1024, m)
        similarity = unit[start:stop] @ unit.T  # (b, M)
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]  # (b, k)
        distance = np.linalg.norm(centres[nearest] - centres[start:stop, None, :], axis=2)
        fractions[start:stop] = np.mean(distance <= radius_mm, axis=1)
    return float(fractions.mean())


def chance_neighbour_fraction(
    centres_mm: np.ndarray, radius_mm: float = NEIGHBOUR_RADIUS_MM
) -> float:
    """Expected neighbour fraction for embeddings unrelated to geometry: the mean fraction of the
    other modules whose centres lie within ``radius_mm``."""
    centres = np.asarray(centres_mm, dtype=np.float64)
    if len(centres) < 2:
        return float("nan")
    counts = cKDTree(centres).query_ball_point(centres, radius_mm, return_length=True) - 1
    return float(np.mean(counts / (len(centres) - 1)))


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(M, 2) projection of (M, D) embeddings: PCA (numpy SVD) or UMAP (needs ``umap-learn``)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    if method == "pca":
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise InputError(
                "--projection umap: umap-learn is not installed (pip install umap-learn)"
            ) from None
        return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors))
    raise InputError(f"--projection: unknown projection {method!r} (choose pca or umap)")


def embedding_figure(
    points_2d: np.ndarray, volume_id: np.ndarray, layer_id: np.ndarray, title: str
) -> Figure:
    """Two scatter panels of the projected module embeddings, coloured by volume and by layer.

    Parameters
    ----------
    points_2d : (M, 2) projected embeddings.
    volume_id, layer_id : (M,) ids of each module.
    title : figure title (e.g. the projection and the model).
    """
    figure = Figure(figsize=(11, 5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, values, name in ((axes[0], volume_id, "volume"), (axes[1], layer_id, "layer")):
        labels, codes = np.unique(np.asarray(values), return_inverse=True)
        scatter = ax.scatter(
            points_2d[:, 0], points_2d[:, 1], c=codes, s=3, cmap="tab20", alpha=0.8
        )
        bar = figure.colorbar(scatter, ax=ax, ticks=np.arange(len(labels)))
        bar.ax.set_yticklabels([str(v) for v in labels])
        bar.set_label(f"{name}_id")
        ax.set_title(f"coloured by {name}")
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    figure.suptitle(title)
    return figure


def neighbour_statistics(
    embeddings: np.ndarray, centres_mm: np.ndarray, k: int, radius_mm: float, seed: int
) -> dict[str, Any]:
    """The neighbour fraction of the embeddings beside seeded random vectors and the chance level.

    Parameters
    ----------
    embeddings : (M, D) one vector per module.
    centres_mm : (M, 3) module centres in mm.
    k, radius_mm : see ``embedding_neighbour_fraction``.
    seed : seed of the random vectors of the same shape.

    Returns
    -------
    dict with dimension, k, radius_mm, definition, neighbour_fraction, random_fraction,
    random_seed and chance_fraction (the keys of the sidecar JSON after model, detector and
    n_modules).
    """
    random_vectors = np.random.default_rng(seed).standard_normal(embeddings.shape)
    return {
        "dimension": int(embeddings.shape[1]),
        "k": int(k),
        "radius_mm": float(radius_mm),
        "definition": (
            "mean over modules of the fraction of their k nearest modules in embedding space "
            "(cosine similarity) whose centres lie within radius_mm"
        ),
        "neighbour_fraction": embedding_neighbour_fraction(embeddings, centres_mm, k, radius_mm),
        "random_fraction": embedding_neighbour_fraction(random_vectors, centres_mm, k, radius_mm),
        "random_seed": int(seed),
        "chance_fraction": chance_neighbour_fraction(centres_mm, radius_mm),
    }


def _detector(detector: Detector | str | os.PathLike[str] | None) -> Detector:
    if isinstance(detector, Detector):
        return detector
    return Detector.load("trackml" if detector is None else detector)


def run_embed(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    plot: str | os.PathLike[str] | None = None,
    projection: str = "pca",
    *,
    detector: Detector | str | os.PathLike[str] | None = None,
    k: int = NEIGHBOUR_K,
    radius_mm: float = NEIGHBOUR_RADIUS_MM,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the module embedding table (parquet), its neighbour statistics (JSON) and a plot.

    Parameters
    ----------
    model : model directory (``RUN/model``).
    out : parquet file to write; the statistics go to the same name with suffix ``.json``.
    plot : PNG of the 2D projection (none when None).
    projection : ``pca`` (default) or ``umap`` (needs ``umap-learn``).
    detector : geometry for the module centres: a ``Detector``, ``"trackml"`` or a
        ``detectors.csv`` path; the built-in TrackML detector when None.
    k, radius_mm : parameters of the neighbour fraction (module docstring).
    seed : seed of the random-vector reference (and of UMAP).

    Returns
    -------
    The statistics written to the sidecar JSON.
    """
    out = Path(out)
    if projection not in ("pca", "umap"):
        raise InputError(f"--projection: unknown projection {projection!r} (choose pca or umap)")
    encoder = TrackingBert.from_pretrained(model)
    vocab = encoder.vocab
    assert vocab is not None
    geometry = _detector(detector)
    try:
        table = modules_table(vocab, geometry)
    except InputError as exc:
        raise InputError(
            f"--model {model}: {exc} ({geometry.name}; centres come from that geometry)"
        ) from None
    vectors = encoder.embedding_table().detach().float().cpu().numpy()[table["token"].to_numpy()]
    centres = table[["cx", "cy", "cz"]].to_numpy(np.float64)

    frame = table.drop(columns=["token"]).reset_index(drop=True)
    frame = pd.concat(
        [frame, pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])], axis=1
    )
    stats = {
        "model": str(model),
        "detector": geometry.name,
        "n_modules": len(frame),
        "embedding": "token",
        "inputs": encoder.config.inputs,
        **neighbour_statistics(vectors, centres, k, radius_mm, seed),
    }
    figure = None
    if plot is not None:
        # Everything that can fail runs before the first file is written (no partial output).
        figure = embedding_figure(
            project_2d(vectors, projection, seed),
            frame["volume_id"].to_numpy(),
            frame["layer_id"].to_numpy(),
            f"module embeddings ({projection})",
        )
    for path in (out, plot):
        if path is not None:
            make_parent(Path(path))
    with atomic_output_file(out) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    write_json(out.with_suffix(".json"), stats)
    logger.info(
        "module embeddings: %d modules x %d dims -> %s; neighbour fraction (k=%d, %.0f mm) %.3f "
        "vs random %.3f (chance %.3f)",
        stats["n_modules"],
        stats["dimension"],
        out,
        k,
        radius_mm,
        stats["neighbour_fraction"],
        stats["random_fraction"],
        stats["chance_fraction"],
    )
    if plot is not None and figure is not None:
        with atomic_output_file(plot) as tmp:
            figure.savefig(tmp, format="png", dpi=120)
    return stats
