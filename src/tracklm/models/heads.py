"""The two pre-training heads of TrackingBERT, masked modules and the pair task, and what the
model returns (``bert.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.models import cpu_kernels
from tracklm.models.config import TrackingBertConfig


@dataclass
class TrackingBertOutput:
    """What ``TrackingBert.forward`` returns.

    Attributes
    ----------
    loss : mlm_loss + pair_loss (those that were asked for), or None without labels.
    mlm_loss : mean cross-entropy over labelled positions, or None.
    pair_loss : mean binary cross-entropy of the pair logit, or None.
    position_loss : mean L1 error (in module half-sizes) of the hidden hits' predicted
        positions, or None (``inputs: hits`` with ``hit_labels`` only); weighted by
        ``config.position_loss_weight`` in ``loss``.
    mlm_logits : (k, v) at the labelled positions in row-major order when labels are given,
        else (b, t, v).
    pair_logits : (b,) logit of pT(B) > pT(A).
    pair_scores : (2b,) with ``pair_head: difference``, the score of each track (the b tracks A,
        then the b tracks B; ``pair_logits`` is score(B) - score(A)); None otherwise.
    hidden_states : (b, t, d) encoder output (zeros at padding) without labels; None with labels,
        where the last block computes only the positions the heads read (``TrackingBert.encode``
        gives every position).
    """

    loss: Tensor | None
    mlm_loss: Tensor | None
    pair_loss: Tensor | None
    mlm_logits: Tensor
    pair_logits: Tensor
    hidden_states: Tensor | None
    position_loss: Tensor | None = None
    pair_scores: Tensor | None = None


class HeadOutputs(NamedTuple):
    """What ``TrackingBert.heads_at`` returns (see there)."""

    mlm_logits: Tensor
    pair_logits: Tensor | None
    hidden_states: Tensor | None
    rows: Tensor | None = None  # (k, d) hidden states at ``at`` (None without ``at``)
    pair_scores: Tensor | None = None  # (2b,) per-track scores of a difference head, else None


class MaskedModuleHead(nn.Module):
    """Scores every vocabulary token at some positions; decoder tied to the token embeddings."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = cpu_kernels.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, token_embedding: Tensor) -> Tensor:
        """(..., d) hidden states and the (v, d) embedding table -> (..., v) logits."""
        x = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(x, token_embedding, self.bias)


class PairHead(nn.Module):
    """Pooler (dense + tanh), then one logit of pT(B) > pT(A) (or ``num_outputs``).

    It reads one summary token per row (``TrackingBert.summary_positions``; the tasks' track
    heads, and the pair head of ``pair_head: cls``). With ``difference`` (``pair_head:
    difference``) it reads two rows per pair, the
    ``[SEP]`` ending track A and the one ending track B (``TrackingBert.pair_positions``), scores
    each with the same pooler and classifier, and returns score(B) - score(A).
    """

    def __init__(
        self, config: TrackingBertConfig, num_outputs: int = 1, difference: bool = False
    ) -> None:
        super().__init__()
        if difference and num_outputs != 1:
            raise ValueError("a difference head has one output")
        self.num_outputs = num_outputs
        self.difference = difference
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, num_outputs)

    def forward(self, hidden: Tensor) -> Tensor:
        """(b, t, d) hidden states -> (b,) logits ((b, num_outputs) when num_outputs > 1), read at
        ``[CLS]`` (a task head's use; the pair task goes through ``TrackingBert.heads_at``)."""
        return self.score(hidden[:, 0])

    def score(self, rows: Tensor) -> Tensor:
        """(n, d) hidden states -> (n,) scores ((n, num_outputs) when num_outputs > 1)."""
        pooled = torch.tanh(self.pooler(rows))  # (n, d)
        logits: Tensor = self.classifier(pooled)  # (n, num_outputs)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits

    def classify(self, rows: Tensor) -> Tensor:
        """The pair logits from the rows at ``TrackingBert.pair_positions``: (b, d) summary rows,
        or (2b, d) with ``difference`` (the b rows ending track A, then the b ending track B)."""
        return self.classify_with_scores(rows)[0]

    def classify_with_scores(self, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """``classify``, and with ``difference`` the (2b,) scores of the tracks (else None)."""
        scores = self.score(rows)
        if not self.difference:
            return scores, None
        b = scores.shape[0] // 2
        return scores[b:] - scores[:b], scores


def in_batch_pair_loss(scores: Tensor, pt: Tensor, block: int = 256) -> Tensor:
    """The pair task asked of every two tracks of a batch: mean binary cross-entropy of
    score(j) - score(i) against pT(j) > pT(i), over the pairs i < j of each block of ``block``
    consecutive tracks (the whole batch of the CPU presets; blocks keep a GPU batch of 5,000
    pairs from building a 10,000-square matrix).

    Parameters
    ----------
    scores : (n,) per-track scores of a ``difference`` pair head (``pair_scores``).
    pt : (n,) the tracks' transverse momenta, in the same order.
    block : tracks compared with each other.
    """
    losses, pairs = scores.new_zeros((), dtype=torch.float32), 0
    for start in range(0, scores.shape[0], block):
        s = scores[start : start + block].float()
        p = pt[start : start + block].float()
        upper = torch.triu(torch.ones(len(s), len(s), dtype=torch.bool, device=s.device), 1)
        logits = (s[None, :] - s[:, None])[upper]  # score(j) - score(i) for i < j
        targets = (p[None, :] > p[:, None])[upper].float()
        losses = losses + F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        pairs += logits.numel()
    return losses / max(pairs, 1)
