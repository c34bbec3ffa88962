"""Masked-module evaluation inputs, and the one batched masked-module inference loop.

``masked_module_logits`` runs the pre-trained masked-module head at chosen positions in batches,
with special tokens excluded (``module_logits_only``); ``tracklm evaluate`` and the downstream
tasks' zero-shot scores both use it.

Pairing scheme (seeded, deterministic): within each event the selected tracks are put in a random
order and joined in a cycle, pair i = (track i, the next track of the cycle). So every track is
track A of exactly one pair and track B of exactly one other pair, and both tracks of a pair come
from the same event, as in training. Tracks alone in their event are joined in one cycle of their
own (a lone track overall is paired with itself).

Masking: for a chosen side (A or B) and hit index per pair, the hit's input position is replaced
by ``[MASK]`` under protocol ``masked``; under ``unmasked`` the true token stays in the input, which
reproduces the public code's inflated figure (the model can copy the answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from tracklm.data.masking import IGNORE_INDEX
from tracklm.data.sequences import EncodedInputs, hide_hits
from tracklm.models.bert import TrackingBert

log = logging.getLogger(__name__)

PROTOCOLS = ("masked", "unmasked")


def pair_partners(event_id: np.ndarray, seed: int) -> np.ndarray:
    """Partner (track B) of every track (as track A), cycling within events.

    Parameters
    ----------
    event_id : (N,) event of each track.
    seed : random seed of the order inside each event.

    Returns
    -------
    (N,) int64 index of the track B paired with each track A; a permutation, so every track is
    also track B exactly once.
    """
    event_id = np.asarray(event_id)
    n = len(event_id)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(event_id[order], kind="stable")]  # events contiguous, shuffled inside
    ev = event_id[order]
    start = np.r_[0, np.flatnonzero(ev[1:] != ev[:-1]) + 1]
    size = np.diff(np.r_[start, n])
    group_start = np.repeat(start, size)
    group_end = np.repeat(start + size, size)
    i = np.arange(n)
    nxt = np.where(i + 1 < group_end, i + 1, group_start)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[nxt]
    group_size = np.empty(n, dtype=np.int64)
    group_size[order] = np.repeat(size, size)
    alone = np.flatnonzero(group_size == 1)
    if len(alone) > 1:
        partner[alone] = np.roll(alone, -1)
    return partner


def mask_inputs(
    encoded: EncodedInputs,
    side: str,
    hit_index: np.ndarray,
    true_tokens: np.ndarray,
    mask_id: int,
    protocol: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Input ids with hits hidden, and the labels marking the positions to predict.

    Parameters
    ----------
    encoded : the clean pair inputs (B rows).
    side : ``"A"`` or ``"B"``: which track of each pair is masked.
    hit_index : (B, M) hit indices to mask in that track (M distinct per row).
    true_tokens : (B, M) their true token ids.
    mask_id : id of ``[MASK]``.
    protocol : ``"masked"`` (replace by ``[MASK]``) or ``"unmasked"`` (leave the true token).

    Returns
    -------
    input_ids : (B, W) int64, a copy.
    labels : (B, W) int64, the true token at the positions to predict, ``IGNORE_INDEX`` elsewhere.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    offset = encoded.offset_a if side == "A" else encoded.offset_b
    hit_index = np.asarray(hit_index, dtype=np.int64)
    position = offset[:, None] + hit_index  # (B, M)
    rows = np.broadcast_to(np.arange(len(position))[:, None], position.shape)
    input_ids = encoded.input_ids.copy()
    labels = np.full_like(input_ids, IGNORE_INDEX)
    labels[rows, position] = true_tokens
    if protocol == "masked":
        input_ids[rows, position] = mask_id
    return input_ids, labels


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_logits_only(logits: Tensor, num_special: int) -> Tensor:
    """Logits with the special tokens made impossible, so every prediction is a module.

    The special tokens (ids ``0 .. num_special - 1``) get ``-inf``: an argmax or top-k then picks
    modules only, a softmax spreads the probability over modules only, and column ``j`` stays
    token id ``j``.

    Parameters
    ----------
    logits : (..., v) scores of every token.
    num_special : number of special tokens (module ids start there).

    Returns
    -------
    (..., v) logits, a new tensor.
    """
    special = torch.arange(logits.shape[-1], device=logits.device) < num_special
    return logits.masked_fill(special, float("-inf"))


def masked_module_logits(
    model: TrackingBert,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    positions: np.ndarray,
    num_special: int,
    reduce: Callable[[Tensor, slice], Tensor],
    *,
    batch_size: int,
    description: str | None = None,
    hits: np.ndarray | None = None,
) -> np.ndarray:
    """The pre-trained masked-module head at chosen positions, in batches of rows.

    The one batched masked-inference loop of ``tracklm evaluate`` and the downstream tasks' zero-shot
    scores. Special tokens are excluded with ``module_logits_only`` before ``reduce`` sees the logits.

    Parameters
    ----------
    model : a ``TrackingBert`` (eval mode is set here).
    input_ids, token_type_ids, attention_mask : (B, W) model inputs (``[MASK]`` where wanted).
    positions : (K, 2) int (row, input position) pairs, rows ascending (e.g. ``np.argwhere`` of a
        label array, which is row-major).
    num_special : number of special tokens (module ids start there).
    reduce : maps a batch's (k, v) logits and its slice of the K pairs to what is kept (top-k
        tokens, a log-probability...), so no (K, v) matrix is held at once.
    batch_size : rows per forward pass.
    description : progress-bar text; no bar when None.
    hits : (B, W, 3) visible hit positions in mm, NaN where unknown and at every asked
        position (``data.sequences.hide_hits``), for a model that reads hits; else None.

    Returns
    -------
    The concatenation over batches of ``reduce``'s output, as numpy ((0,) when K = 0).
    """
    out = [
        reduce(logits, batch).cpu().numpy()
        for logits, _, batch in _masked_batches(
            model, input_ids, token_type_ids, attention_mask, positions, num_special,
            batch_size=batch_size, description=description, hits=hits,
        )
    ]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0,))


def _masked_batches(
    model: TrackingBert,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    positions: np.ndarray,
    num_special: int,
    *,
    batch_size: int,
    description: str | None,
    hits: np.ndarray | None,
) -> Iterator[tuple[Tensor, Tensor, slice]]:
    """The loop of ``masked_module_logits``: per batch of rows, the (k, v) float logits with
    special tokens excluded, the (k, d) hidden rows (``TrackingBert.locate`` reads them) and the
    batch's slice of the K pairs; under ``torch.inference_mode``."""
    device = next(model.parameters()).device
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    if np.any(np.diff(positions[:, 0]) < 0):
        raise ValueError("positions must be sorted by row")
    starts = range(0, len(input_ids), batch_size)
    model.eval()
    with torch.inference_mode():
        for start in tqdm(
            starts,
            desc=description,
            disable=True if description is None else None,
            leave=False,
        ):
            stop = start + batch_size
            lo, hi = np.searchsorted(positions[:, 0], [start, stop])
            if hi == lo:
                continue
            heads = model.masked_heads(
                torch.as_tensor(input_ids[start:stop], device=device),
                torch.as_tensor(token_type_ids[start:stop], device=device),
                torch.as_tensor(attention_mask[start:stop], device=device),
                torch.as_tensor(positions[lo:hi] - np.array([start, 0]), device=device),
                _rows_of(hits, start, stop, device),
            )
            assert heads.rows is not None
            logits = module_logits_only(heads.mlm_logits.float(), num_special)  # (k, v)
            yield logits, heads.rows, slice(int(lo), int(hi))


def _rows_of(hits: np.ndarray | None, start: int, stop: int, device: torch.device) -> Tensor | None:
    return None if hits is None else torch.as_tensor(hits[start:stop], device=device)


def predict_masked_modules(
    model: TrackingBert,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    labels: np.ndarray,
    num_special: int,
    k: int = 5,
    batch_size: int = 1024,
    description: str = "masked modules",
    hits: np.ndarray | None = None,
) -> np.ndarray:
    """Ranked module predictions at the labelled positions (special tokens never predicted).

    Parameters
    ----------
    model : a ``TrackingBert``.
    input_ids, token_type_ids, attention_mask, labels : (B, W) arrays; ``labels`` is
        ``IGNORE_INDEX`` except at the positions to predict.
    num_special : number of special tokens (module ids start there).
    k : candidates per position.
    batch_size : rows per forward pass.
    description : progress-bar text.
    hits : (B, W, 3) visible hit positions for a model that reads hits (see
        ``masked_module_logits``), else None.

    Returns
    -------
    (K, k) int64 module token ids, best first, for the labelled positions in row-major order.
    """
    positions = np.argwhere(np.asarray(labels) != IGNORE_INDEX)  # (K, 2), row-major

    def top_k(logits: Tensor, _: slice) -> Tensor:
        return torch.topk(logits, k=min(k, logits.shape[1] - num_special), dim=1).indices

    ranked = masked_module_logits(
        model, input_ids, token_type_ids, attention_mask, positions, num_special, top_k,
        batch_size=batch_size, description=description, hits=hits,
    )  # fmt: skip
    return ranked.reshape(len(positions), -1).astype(np.int64)


def predict_pair_logits(
    model: TrackingBert,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    batch_size: int = 1024,
    description: str = "pair task",
    hits: np.ndarray | None = None,
) -> np.ndarray:
    """Logits of the pre-training pair head, pT(B) > pT(A), one per row.

    Parameters
    ----------
    model : a ``TrackingBert``.
    input_ids, token_type_ids, attention_mask : (B, W) pair inputs.
    batch_size : rows per forward pass.
    description : progress-bar text.
    hits : (B, W, 3) hit positions for a model that reads hits (none hidden), else None.

    Returns
    -------
    (B,) float64 logits.
    """
    device = next(model.parameters()).device
    parts = []
    model.eval()
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(input_ids), batch_size), desc=description, disable=None, leave=False
        ):
            sl = slice(start, start + batch_size)
            ids = torch.as_tensor(input_ids[sl], device=device)
            out = model(
                input_ids=ids,
                token_type_ids=torch.as_tensor(token_type_ids[sl], device=device),
                attention_mask=torch.as_tensor(attention_mask[sl], device=device),
                labels=torch.full_like(ids, IGNORE_INDEX),  # the heads read [CLS] only
                hits=_rows_of(hits, sl.start, sl.stop, device),
            )
            parts.append(out.pair_logits.float().cpu().numpy().astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)


def rank_and_locate(
    model: TrackingBert,
    encoded: EncodedInputs,
    input_ids: np.ndarray,
    labels: np.ndarray,
    num_special: int,
    hits: np.ndarray | None,
    batch_size: int,
    description: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's 5 best modules for every labelled hit, and where it puts the hit.

    Parameters
    ----------
    model : a ``TrackingBert``.
    encoded : the clean inputs (segments and attention mask are read).
    input_ids, labels : (B, W) masked inputs and the positions to predict (``mask_inputs``).
    num_special : number of special tokens.
    hits : (B, W, 3) every hit's position laid out like the inputs (``place_hits``) when the
        model reads hits, else None. The labelled positions are hidden here (``hide_hits``):
        the model never sees a hidden hit's position.
    batch_size, description : rows per forward pass, progress-bar text.

    Returns
    -------
    ranked : (K, 5) int64 module tokens, best first, labelled positions in row-major order.
    positions : (K, 3) float64 predicted positions in mm on the plane of the best module
        (``inputs: hits`` models), else None.
    """
    visible = None if hits is None else hide_hits(hits, labels)[0]
    locate = visible is not None and model.config.reads_hits
    asked = np.argwhere(np.asarray(labels) != IGNORE_INDEX)  # (K, 2), row-major
    ranked, located = [], []
    for logits, rows, _ in _masked_batches(
        model, input_ids, encoded.token_type_ids, encoded.attention_mask, asked, num_special,
        batch_size=batch_size, description=description, hits=visible,
    ):  # fmt: skip
        top = torch.topk(logits, k=min(5, logits.shape[1] - num_special), dim=1).indices
        ranked.append(top.cpu().numpy())
        if locate:
            located.append(model.locate(rows, top[:, 0]).double().cpu().numpy())
    best = np.concatenate(ranked).astype(np.int64) if ranked else np.zeros((0, 5), np.int64)
    if not locate:
        return best, None
    return best, np.concatenate(located) if located else np.zeros((0, 3))
