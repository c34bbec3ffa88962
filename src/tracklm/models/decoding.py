"""One token at a time through a causal (``next-module``) TrackingBERT, with a key/value cache.

Under causal attention a position's output depends only on the positions before it, so a track
grows by one token per step at the cost of that one token: each block keeps the keys and values
of every earlier position (``KVCache``), and the new token's query attends to them. The numbers
are the model's own (``TrackingBert.encode`` on the whole sequence gives the same outputs, to
float rounding; ``tests/generate/test_decode.py``). Single tracks only, laid out as
``[CLS] h_0 h_1 ...`` (segment 0, positions 0, 1, ...): every row of a batch is at the same
position, so the cache needs no padding.

Shape legend: ``b`` rows (tracks or beams), ``d`` hidden, ``h`` heads, ``e`` head size, ``T``
positions so far, ``v`` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from tracklm.models.bert import Block, TrackingBert
from tracklm.models.layout import TokenLayout


@dataclass
class KVCache:
    """Keys and values of every position so far, per block: (b, capacity, d) buffers (heads
    side by side in d) of which the first ``length`` positions are filled."""

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    length: int = 0

    def select(self, rows: Tensor) -> KVCache:
        """The cache of rows ``rows`` (m,) (finished tracks leave; beams are reordered)."""
        return KVCache(
            [k.index_select(0, rows) for k in self.keys],
            [v.index_select(0, rows) for v in self.values],
            self.length,
        )


class CausalDecoder:
    """Steps a causal ``TrackingBert`` one token at a time (eval mode, no gradients).

    Parameters
    ----------
    model : a model with ``config.objective == "next-module"``.
    capacity : positions the cache holds (default: the model's ``max_length``).
    """

    def __init__(self, model: TrackingBert, capacity: int | None = None) -> None:
        if not model.config.causal:
            raise ValueError("CausalDecoder needs a next-module (causal) model")
        self.model = model
        self.num_heads = model.config.num_heads
        module_inputs = model.module_inputs
        with torch.no_grad():
            self.geometry = None if module_inputs is None else module_inputs.module_embeddings()
            table = model.decoder_table(self.geometry)  # (v, d)
            bias = model.mlm_head.bias[:, None]  # (v, 1)
            self.decoder_weight = torch.cat([table, bias], dim=1).t().contiguous()  # (d + 1, v)
        limit = model.config.max_length
        self.capacity = limit if capacity is None else min(capacity, limit)

    @torch.no_grad()
    def step(self, tokens: Tensor, cache: KVCache, hits: Tensor | None = None) -> Tensor:
        """Feed one token per row at the next position; extends ``cache`` in place.

        Parameters
        ----------
        tokens : (b,) token ids, or (b, n) for n positions at once (a prefix: one pass).
        cache : the rows' cache (empty before ``[CLS]``).
        hits : (b, 3) (or (b, n, 3)) the tokens' hit positions in mm (NaN: none), for an
            ``inputs: hits`` model; ignored otherwise.

        Returns
        -------
        (b, d) the encoder output at the last position fed (``logits`` scores the token after it).
        """
        model = self.model
        if tokens.dim() == 1:
            tokens = tokens[:, None]
            hits = None if hits is None else hits[:, None]
        b, n = tokens.shape
        start = cache.length
        if start + n > self.capacity:
            raise ValueError(f"position {start + n - 1} exceeds the cache's {self.capacity} positions")  # fmt: skip
        flat = tokens.reshape(-1)
        extra = None
        if model.module_inputs is not None:
            assert self.geometry is not None
            if model.config.reads_hits and hits is None:
                hits = torch.full((b, n, 3), float("nan"), device=tokens.device)
            read = hits.reshape(b * n, 3) if model.config.reads_hits and hits is not None else None
            extra = model.module_inputs(flat, read, self.geometry)
        layout = TokenLayout.of(None, b, n)  # every token real: rows are the (b, n) grid
        x = model.embeddings(tokens, torch.zeros_like(tokens), layout, extra, start)  # (b n, d)
        for index, block in enumerate(model.blocks):
            assert isinstance(block, Block)
            x = self._block(block, x, cache, index, n)
        cache.length += n
        out: Tensor = x.view(b, n, -1)[:, -1]
        return out

    def _block(self, block: Block, x: Tensor, cache: KVCache, index: int, n: int) -> Tensor:
        bn, d = x.shape
        b, h = bn // n, self.num_heads
        e = d // h
        attention = block.attention
        qkv = attention.qkv(x).view(b, n, 3 * d)  # [q, k, v], heads side by side in each
        if index == len(cache.keys):  # the first position: buffers for every position
            cache.keys.append(x.new_empty(b, self.capacity, d))
            cache.values.append(x.new_empty(b, self.capacity, d))
        t = cache.length
        cache.keys[index][:, t : t + n] = qkv[..., d : 2 * d]
        cache.values[index][:, t : t + n] = qkv[..., 2 * d :]
        keys = cache.keys[index][:, : t + n].view(b, 1, t + n, h, e)  # (b, 1, T, h, e)
        values = cache.values[index][:, : t + n].view(b, 1, t + n, h, e)
        q = qkv[..., :d].reshape(b, n, 1, h, e)
        # n queries against T <= a dozen keys per head: elementwise products and sums, no
        # batched matrix products of (n, e) by (e, T)
        scores = (keys * q).sum(-1) * e**-0.5  # (b, n, T, h)
        if n > 1:  # query i (position t + i) sees keys up to t + i
            later = torch.arange(t + n, device=x.device)[None, :] > (t + torch.arange(n, device=x.device))[:, None]  # fmt: skip
            scores = scores.masked_fill(later[None, :, :, None], float("-inf"))
        y = (torch.softmax(scores, dim=2)[..., None] * values).sum(2)  # (b, n, h, e)
        return block.after_attention(x, attention.out(y.reshape(bn, d)))

    @torch.no_grad()
    def logits(self, hidden: Tensor) -> Tensor:
        """(b, d) encoder outputs -> (b, v) scores of the next token: the masked-module head,
        with its bias folded into the matrix product (a column of ones against a row of biases)
        instead of first filling the (b, v) output with it."""
        head = self.model.mlm_head
        x = head.norm(F.gelu(head.dense(hidden)))
        ones = x.new_ones(x.shape[0], 1)
        out: Tensor = torch.mm(torch.cat([x, ones], dim=1), self.decoder_weight)
        return out

    @torch.no_grad()
    def locate(self, hidden: Tensor, modules: Tensor) -> Tensor:
        """(b, 3) predicted positions (mm) of the next hit on ``modules`` (b,) (``inputs: hits``)."""
        return self.model.locate(hidden, modules)
