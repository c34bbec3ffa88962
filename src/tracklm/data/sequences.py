"""Model inputs from token arrays: ``[CLS] A [SEP] B [SEP]`` pairs and ``[CLS] A [SEP]`` singles.

Pure numpy and vectorized: one call builds a whole batch. Used by training, evaluation and tasks,
so every stage places tokens identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracklm.detector.vocab import ModuleVocab


@dataclass
class EncodedInputs:
    """A batch of model inputs; B sequences, W the width.

    Attributes
    ----------
    input_ids : (B, W) int64 token ids.
    token_type_ids : (B, W) int64 segment ids: 0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``, 0 on padding.
    attention_mask : (B, W) bool, True on real tokens.
    offset_a : (B,) int64 input position of track A's first hit (always 1).
    offset_b : (B,) int64 input position of track B's first hit (-1 for single tracks).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    offset_a: np.ndarray
    offset_b: np.ndarray


def _gather_hits(tokens: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(tokens, np.clip(index, 0, tokens.shape[1] - 1), axis=1)


def encode_pairs(
    tokens_a: np.ndarray,
    lengths_a: np.ndarray,
    tokens_b: np.ndarray | None,
    lengths_b: np.ndarray | None,
    vocab: ModuleVocab,
    width: int,
) -> EncodedInputs:
    """Lay out ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` when ``tokens_b`` is None).

    Parameters
    ----------
    tokens_a, tokens_b : (B, L) int token ids of the tracks, padded after their length.
    lengths_a, lengths_b : (B,) number of hits.
    vocab : gives the ids of ``[CLS]``, ``[SEP]``, ``[PAD]``.
    width : W, the padded input width (19 for the paper's pairs of up to 8 hits).
    """
    tokens_a = np.asarray(tokens_a)
    la = np.asarray(lengths_a, dtype=np.int64)[:, None]
    batch = tokens_a.shape[0]
    pair = tokens_b is not None
    lb = np.asarray(lengths_b, dtype=np.int64)[:, None] if pair else np.zeros_like(la)
    needed = 2 + la + (lb + 1 if pair else 0)
    if np.any(needed > width):
        raise ValueError(
            f"a sequence needs {int(needed.max())} positions, more than the width {width}"
        )

    j = np.arange(width, dtype=np.int64)[None, :]
    in_a = (j >= 1) & (j <= la)
    sep_a = j == la + 1
    ids = np.full((batch, width), vocab.pad_id, dtype=np.int64)
    ids[j.repeat(batch, 0) == 0] = vocab.cls_id
    ids = np.where(in_a, _gather_hits(tokens_a, j - 1 + 0 * la), ids)
    ids = np.where(sep_a, vocab.sep_id, ids)
    types = np.zeros((batch, width), dtype=np.int64)
    if pair:
        start_b = la + 2
        in_b = (j >= start_b) & (j < start_b + lb)
        sep_b = j == start_b + lb
        ids = np.where(in_b, _gather_hits(np.asarray(tokens_b), j - start_b), ids)
        ids = np.where(sep_b, vocab.sep_id, ids)
        types[in_b | sep_b] = 1
        offset_b = start_b[:, 0]
    else:
        offset_b = np.full(batch, -1, dtype=np.int64)
    attention = j < needed
    return EncodedInputs(
        input_ids=ids,
        token_type_ids=types,
        attention_mask=attention,
        offset_a=np.ones(batch, dtype=np.int64),
        offset_b=offset_b,
    )


def place_hits(
    encoded: EncodedInputs,
    hits_a: np.ndarray,
    lengths_a: np.ndarray,
    hits_b: np.ndarray | None = None,
    lengths_b: np.ndarray | None = None,
) -> np.ndarray:
    """Hit positions laid out like ``encoded``'s tokens, for models that read hits.

    Parameters
    ----------
    encoded : the inputs from ``encode_pairs`` of the same tracks.
    hits_a, hits_b : (B, L, 3) hit positions in mm of tracks A and B.
    lengths_a, lengths_b : (B,) number of hits.

    Returns
    -------
    (B, W, 3) float32 positions, NaN at every position that is not a hit (``[CLS]``, ``[SEP]``,
    padding). Hide the hits to predict with ``hide_hits``.
    """
    batch, width = encoded.input_ids.shape
    out = np.full((batch, width, 3), np.nan, dtype=np.float32)
    j = np.arange(width)[None, :]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(encoded.offset_a, hits_a, lengths_a)]
    if hits_b is not None and lengths_b is not None:
        parts.append((encoded.offset_b, hits_b, lengths_b))
    for offset, hits, lengths in parts:
        hits = np.asarray(hits, dtype=np.float32)
        index = j - np.asarray(offset)[:, None]  # (B, W) hit index at each position
        inside = (index >= 0) & (index < np.asarray(lengths)[:, None])
        safe = np.clip(index, 0, hits.shape[1] - 1)
        gathered = np.take_along_axis(hits, safe[..., None], axis=1)  # (B, W, 3)
        out = np.where(inside[..., None], gathered, out)
    return out


def hide_hits(
    hits: np.ndarray, labels: np.ndarray, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """Split laid-out positions into what the model may read and what it must predict.

    Parameters
    ----------
    hits : (B, W, 3) positions from ``place_hits``.
    labels : (B, W) token labels, ``ignore_index`` except at the positions to predict.

    Returns
    -------
    visible : (B, W, 3) a copy with NaN at every labelled position: a hidden hit carries no
        position (nor does a labelled hit whose token was replaced or kept).
    targets : (B, W, 3) the true positions at the labelled positions, NaN elsewhere.
    """
    labelled = (np.asarray(labels) != ignore_index)[..., None]
    visible = np.where(labelled, np.float32(np.nan), hits).astype(np.float32)
    targets = np.where(labelled, hits, np.float32(np.nan)).astype(np.float32)
    return visible, targets


def next_module_targets(
    encoded: EncodedInputs, hits: np.ndarray | None = None, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets of the ``next-module`` objective: each real position predicts the next token.

    The last hit of a track predicts its ``[SEP]`` (the end of the track); in pairs, track A's
    ``[SEP]`` predicts B's first module. Nothing is hidden: under causal attention position p
    sees no position after it, so the inputs stay as they are.

    Parameters
    ----------
    encoded : inputs from ``encode_pairs`` (unmasked).
    hits : (B, W, 3) positions from ``place_hits`` (a model that reads hits), or None.

    Returns
    -------
    labels : (B, W) int64 the token at p + 1 at every real position p but the last, and
        ``ignore_index`` there and on padding.
    hit_labels : (B, W, 3) the position of the hit at p + 1 (NaN where p + 1 holds no hit), or
        None without ``hits``.
    """
    ids, real = encoded.input_ids, encoded.attention_mask
    labels = np.full_like(ids, ignore_index)
    labels[:, :-1] = np.where(real[:, 1:], ids[:, 1:], ignore_index)
    if hits is None:
        return labels, None
    hit_labels = np.full_like(hits, np.nan)
    hit_labels[:, :-1] = hits[:, 1:]
    return labels, hit_labels
