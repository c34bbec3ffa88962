"""Masked-module evaluation inputs and batched inference.

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

import numpy as np
import torch
from tqdm import tqdm

from tracklm.data.sequences import EncodedInputs

log = logging.getLogger(__name__)

PROTOCOLS = ("masked", "unmasked")
IGNORE_INDEX = -100


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
    labels : (B, W) int64, the true token at the positions to predict, -100 elsewhere.
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


def predict_masked_modules(
    model: torch.nn.Module,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    labels: np.ndarray,
    num_special: int,
    k: int = 5,
    batch_size: int = 1024,
    description: str = "masked modules",
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked module predictions at the labelled positions, and the pair logits.

    Scores are taken over module tokens only (special tokens excluded), so the argmax is always a
    module.

    Parameters
    ----------
    model : a ``TrackingBert`` (forward with ``labels`` returns (K, V) logits in row-major order).
    input_ids, token_type_ids, attention_mask, labels : (B, W) arrays.
    num_special : number of special tokens (module ids start there).
    k : candidates per position.
    batch_size : rows per forward pass.

    Returns
    -------
    ranked : (K, k) int64 module token ids, best first, for the labelled positions in row-major order.
    pair_logits : (B,) float64 logits of pT(B) > pT(A).
    """
    device = next(model.parameters()).device
    ranked, pair = [], []
    model.eval()
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(input_ids), batch_size), desc=description, disable=None, leave=False
        ):
            sl = slice(start, start + batch_size)
            out = model(
                input_ids=torch.as_tensor(input_ids[sl], device=device),
                token_type_ids=torch.as_tensor(token_type_ids[sl], device=device),
                attention_mask=torch.as_tensor(attention_mask[sl], device=device),
                labels=torch.as_tensor(labels[sl], device=device),
            )
            logits = out.mlm_logits[:, num_special:].float()  # (K, modules)
            if logits.shape[0]:
                top = torch.topk(logits, k=min(k, logits.shape[1]), dim=1).indices + num_special
                ranked.append(top.cpu().numpy().astype(np.int64))
            pair.append(out.pair_logits.float().cpu().numpy().astype(np.float64))
    ranked_all = np.concatenate(ranked) if ranked else np.zeros((0, k), dtype=np.int64)
    return ranked_all, np.concatenate(pair) if pair else np.zeros(0)
