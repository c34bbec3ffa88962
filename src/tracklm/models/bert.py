"""TrackingBERT: a BERT encoder over detector-module tokens, with its two pre-training heads.

One file, one typed config, read top to bottom (nanoGPT style). The encoder is a post-LayerNorm
BERT, numerically the same as ``transformers.BertModel`` with exact GELU (tested), so published
BERT knowledge carries over. Attention has a fused query/key/value projection and runs through
``torch.nn.functional.scaled_dot_product_attention``, except when training on the CPU, where a
hand-written attention with its own backward is faster (``PackedAttention``), and in exported
graphs (plain products). Dropout draws its mask 16 bits at a time on the CPU (``dropout``).
The encoder works on the real (unpadded) tokens only (``TokenLayout``); with labels, its last
block computes only the positions the heads read.

Heads:

* masked-module head (MLM): dense + GELU + LayerNorm, then a decoder whose weight is the token
  embedding table (tied) plus a bias. With labels it runs only on the labelled positions, which
  matters because the vocabulary (about 4,010 tokens) dwarfs the hidden size (64).
* pair head: pooler (dense + tanh) on the ``[CLS]`` token, then one logit of pT(B) > pT(A).

Shape legend: ``b`` batch, ``t`` tokens (input width), ``n`` real (unpadded) tokens in the batch,
``d`` hidden, ``h`` heads, ``e`` head size (d / h), ``f`` feed-forward width, ``v`` vocabulary,
``k`` labelled positions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tracklm import config as config_lib
from tracklm._fs import atomic_output_file
from tracklm.detector.vocab import ModuleVocab
from tracklm.errors import InputError

IGNORE_INDEX = -100
"""Label value meaning "no label" (as in ``torch.nn.functional.cross_entropy``)."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
CARD_FILE = "README.md"


# ----------------------------------------------------------------------------- config
@dataclass
class TrackingBertConfig:
    """Everything that defines a TrackingBERT architecture.

    Attributes
    ----------
    vocab_size : v, number of tokens (special tokens + modules); set from the dataset's vocabulary.
    hidden_size : d, width of the token representations.
    num_layers : number of encoder blocks.
    num_heads : attention heads; must divide ``hidden_size``.
    intermediate_size : f, width of the feed-forward layer.
    max_length : number of positions the model knows (19 for pairs of up to 8 hits).
    dropout : dropout on embeddings and on each block's residual branches.
    attention_dropout : dropout on the attention probabilities.
    position_embedding : ``"learned"`` (a trained table) or ``"sinusoidal"`` (fixed, not saved).
    type_vocab_size : number of segments (2: track A, track B).
    layer_norm_eps : LayerNorm epsilon (1e-12 as in BERT).
    initializer_range : standard deviation of the normal initialisation.
    pad_token_id : id of ``[PAD]``; its embedding starts at zero and receives no input gradient.
    """

    vocab_size: int = 4010
    hidden_size: int = 64
    num_layers: int = 12
    num_heads: int = 8
    intermediate_size: int = 512
    max_length: int = 19
    dropout: float = 0.05
    attention_dropout: float = 0.05
    position_embedding: Literal["learned", "sinusoidal"] = "learned"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        sizes = (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_length",
            "type_vocab_size",
        )
        for name in sizes:
            if getattr(self, name) < 1:
                raise InputError(
                    f"model config: {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.hidden_size % self.num_heads:
            raise InputError(
                f"model config: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.position_embedding not in ("learned", "sinusoidal"):
            raise InputError(
                f"model config: position_embedding {self.position_embedding!r} is not 'learned' or 'sinusoidal'"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(
                    f"model config: {name} must lie in [0, 1), got {getattr(self, name)}"
                )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise InputError(
                f"model config: pad_token_id {self.pad_token_id} outside the vocabulary"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrackingBertConfig:
        """A named architecture: ``tiny`` (tests), ``small`` (quick runs) or ``paper`` (arXiv:2402.10239).

        Parameters
        ----------
        name : preset name.
        overrides : fields to change, e.g. ``vocab_size=len(vocab)``; unknown names raise ``InputError``.
        """
        if name not in _PRESETS:
            raise InputError(f"model preset {name!r} is unknown (known: {', '.join(_PRESETS)})")
        return config_lib.from_dict(
            cls, {**_PRESETS[name], **overrides}, where=f"model preset {name}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-friendly data."""
        return config_lib.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> TrackingBertConfig:
        """Build a config from a mapping; unknown keys and wrong types raise ``InputError``."""
        return config_lib.from_dict(cls, data, where=where)


_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
             "dropout": 0.1, "attention_dropout": 0.1},
    "small": {"hidden_size": 64, "num_layers": 4, "num_heads": 8, "intermediate_size": 256,
              "dropout": 0.1, "attention_dropout": 0.1},
    "paper": {"hidden_size": 64, "num_layers": 12, "num_heads": 8, "intermediate_size": 512,
              "dropout": 0.05, "attention_dropout": 0.05, "max_length": 19},
}  # fmt: skip


# ----------------------------------------------------------------------------- output
@dataclass
class TrackingBertOutput:
    """What ``TrackingBert.forward`` returns.

    Attributes
    ----------
    loss : mlm_loss + pair_loss (those that were asked for), or None without labels.
    mlm_loss : mean cross-entropy over labelled positions, or None.
    pair_loss : mean binary cross-entropy of the pair logit, or None.
    mlm_logits : (k, v) at the labelled positions in row-major order when labels are given,
        else (b, t, v).
    pair_logits : (b,) logit of pT(B) > pT(A).
    hidden_states : (b, t, d) encoder output. With labels, only at the labelled positions and
        ``[CLS]`` (the rest, which no head reads, is skipped in the last block and left at zero);
        ``TrackingBert.encode`` gives every position.
    """

    loss: Tensor | None
    mlm_loss: Tensor | None
    pair_loss: Tensor | None
    mlm_logits: Tensor
    pair_logits: Tensor
    hidden_states: Tensor


# ----------------------------------------------------------------------------- modules
@dataclass
class TokenLayout:
    """Where the encoder's packed token rows sit in the (b, t) input grid.

    The encoder works on the n real tokens only, packed as (n, d) rows: every per-token layer
    (projections, feed-forward, LayerNorm, dropout) then skips the padding, about a fifth of
    the positions for pairs of 4 to 8 hits. Attention unpacks to the grid and masks padded keys.

    Attributes
    ----------
    batch, width : b and t.
    real : (n,) indices of the real tokens in the flattened (b * t) grid, row-major; None when
        every token is real (then n = b * t and packing is a reshape).
    key_mask : (b, 1, 1, t) True where a key may be attended to, or None without padding.
    gather : move rows between the packed rows and the grid with gathers only (no scatter), and
        run attention through row gathers (``SelfAttention.attend_by_gathers``): the layout of
        exported graphs, where ONNX Runtime's ScatterND and Transpose are slow.
    """

    batch: int
    width: int
    real: Tensor | None
    key_mask: Tensor | None
    gather: bool = False
    _key_bias: Tensor | None = None
    _head_key_bias: Tensor | None = None
    _source: Tensor | None = None
    _any_source: Tensor | None = None
    _head_rows: tuple[Tensor, Tensor] | None = None

    def source(self) -> Tensor:
        """(b * t,) the packed row of each grid position; padding points at row n (built once)."""
        if self._source is None:
            flat = self.key_mask.reshape(-1) if self.key_mask is not None else None
            if self.real is None or flat is None:
                self._source = torch.arange(self.batch * self.width, device=self.device())
            else:
                rank = flat.long().cumsum(0) - 1
                self._source = torch.where(flat, rank, torch.full_like(rank, self.real.shape[0]))
        return self._source

    def device(self) -> torch.device:
        mask = self.key_mask if self.key_mask is not None else self.real
        return mask.device if mask is not None else torch.device("cpu")

    def spread(self, rows: Tensor) -> Tensor:
        """(n, c) -> (b, t, c) with a copy of some real row at each padded position.

        One gather, where ``unpack`` fills the whole grid with zeros first: for the inputs of
        attention, whose padded keys are masked and padded queries dropped, any finite values
        will do at the padding (their gradients are zero).
        """
        if self.real is None:
            return rows.view(self.batch, self.width, -1)
        return rows.index_select(0, self.any_source()).view(self.batch, self.width, -1)

    def any_source(self) -> Tensor:
        """(b * t,) the packed row of each grid position, row 0 at padding (built once)."""
        if self._any_source is None:
            source = self.source()
            n = self.real.shape[0] if self.real is not None else source.shape[0]
            self._any_source = torch.where(source < n, source, torch.zeros_like(source))
        return self._any_source

    def head_rows(self, num_heads: int) -> tuple[Tensor, Tensor]:
        """Row indices for attention by gathers, with h heads of size e (built once).

        Returns (b, h, t) the row of each (batch row, head, position) in the packed projections
        viewed as (n * 3h, e) rows [query rows; add h for keys, 2h for values], padding pointing
        at row 0's; and (n, h) the row of each packed token and head in a (b * h * t, e) grid.
        """
        if self._head_rows is None:  # one model, one head count per layout
            b, t, h = self.batch, self.width, num_heads
            device = self.device()
            heads = torch.arange(h, device=device)
            source = self.any_source()  # padding: any real row will do, its keys are masked
            query = source.view(b, 1, t) * (3 * h) + heads.view(1, h, 1)  # (b, h, t)
            real = self.real if self.real is not None else torch.arange(b * t, device=device)
            row, position = real // t, real % t  # (n,)
            out = (row[:, None] * h + heads[None, :]) * t + position[:, None]  # (n, h)
            self._head_rows = (query, out)
        return self._head_rows

    def key_bias(self, dtype: torch.dtype) -> Tensor:
        """(b, 1, 1, t) 0 where a key may be attended to, -inf at padding (built once per dtype)."""
        assert self.key_mask is not None
        if self._key_bias is None or self._key_bias.dtype != dtype:
            zeros = torch.zeros(self.key_mask.shape, dtype=dtype, device=self.key_mask.device)
            self._key_bias = zeros.masked_fill_(~self.key_mask, float("-inf"))
        return self._key_bias

    def pack(self, grid: Tensor) -> Tensor:
        """(b, t, ...) -> (n, ...) real rows."""
        flat = grid.reshape(self.batch * self.width, *grid.shape[2:])
        return flat if self.real is None else flat.index_select(0, self.real)

    def unpack(self, rows: Tensor) -> Tensor:
        """(n, c) -> (b, t, c), zeros at padded positions."""
        if self.real is not None and self.gather:  # the rows and one zero row, gathered
            padded = torch.cat([rows, rows.new_zeros(1, rows.shape[-1])])
            return padded.index_select(0, self.source()).view(self.batch, self.width, -1)
        if self.real is not None:
            grid = rows.new_zeros(self.batch * self.width, rows.shape[-1])
            rows = grid.index_copy_(0, self.real, rows)
        return rows.view(self.batch, self.width, -1)

    def head_key_bias(self, num_heads: int, dtype: torch.dtype) -> Tensor:
        """(b * h, 1, t) additive key mask repeated per head (built once per dtype)."""
        if self._head_key_bias is None or self._head_key_bias.dtype != dtype:
            bias = self.key_bias(dtype).expand(self.batch, num_heads, 1, self.width)
            self._head_key_bias = bias.reshape(self.batch * num_heads, 1, self.width)
        return self._head_key_bias


_DROPOUT_STEPS = 1 << 16  # CPU dropout draws 16-bit uniform integers


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout; on the CPU with a mask drawn 16 random bits per element (``dropout_multiplier``).

    ``torch.nn.functional.dropout`` draws one 32-bit number per element on the CPU (Mersenne
    Twister), which made dropout a tenth of a ``paper`` training step. Here each 64 random bits
    give four 16-bit uniform integers, so ``p`` is rounded to a multiple of 2^-16 (0.05 becomes
    0.050003). Other devices, and compiled code, use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return x * dropout_multiplier(x.shape, p, x.dtype)


def dropout_multiplier(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU tensor of ``shape``: 0 with probability ``p`` (rounded to a multiple of 2^-16), else
    1 / (1 - p). (Measured cheaper, forward and backward, than ``masked_fill`` or ``where``.)"""
    dropped = round(p * _DROPOUT_STEPS)
    n = math.prod(shape)
    # One draw from torch's generator seeds a small fast generator (SFC64) for the bits: 2-3x
    # cheaper than torch's Mersenne Twister, and still reproducible from torch.manual_seed and
    # from a checkpoint's RNG state.
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    bits = torch.from_numpy(np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n])
    keep = bits.view(shape) >= dropped - _DROPOUT_STEPS // 2
    return keep.to(dtype).mul_(_DROPOUT_STEPS / (_DROPOUT_STEPS - dropped))


class Dropout(nn.Module):
    """``nn.Dropout`` through ``dropout`` (cheaper random numbers on the CPU)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def sinusoidal_positions(config: TrackingBertConfig) -> Tensor:
    """(max_length, d) fixed sine/cosine position table of "Attention is all you need"."""
    position = torch.arange(config.max_length, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, config.hidden_size, 2, dtype=torch.float32)
        * (-math.log(10000.0) / config.hidden_size)
    )
    table = torch.zeros(config.max_length, config.hidden_size)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: config.hidden_size // 2])
    return table


class Embeddings(nn.Module):
    """Token + segment + position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        if config.position_embedding == "learned":
            self.position = nn.Embedding(config.max_length, config.hidden_size)
        else:
            self.position = None
            self.register_buffer("sinusoid", sinusoidal_positions(config), persistent=False)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, layout: TokenLayout) -> Tensor:
        """(b, t) ids and segments -> (n, d) embedded real tokens."""
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device).expand_as(input_ids)  # (b, t)
        table = (
            self.position.weight if self.position is not None else self.sinusoid
        )  # (max_length, d)
        x = (
            self.token(layout.pack(input_ids))
            + self.segment(layout.pack(token_type_ids))
            + table[layout.pack(positions)]
        )  # (n, d)
        return self.dropout(self.norm(x))


PACKED_ATTENTION = True
"""Use ``PackedAttention`` when training on the CPU in float32 (set False to compare)."""


class PackedAttention(torch.autograd.Function):
    """Attention from packed (n, 3d) query/key/value rows to packed (n, d) outputs, with dropout.

    The CPU training path. Attention at t = 19 and head size 8 is about 3% of a ``paper``
    step's arithmetic but took about a quarter of its time, in many small ops and layout
    copies. Written out with its own backward it makes one per-head copy of q, k, v (which the
    backward reuses), folds the 1/sqrt(e) scale and the key mask into ``baddbmm``, reads
    transposed operands in place, and saves no intermediate autograd would recompute. The
    dropout multiplier (``dropout_multiplier``) is drawn by the caller. Measured 3% faster per
    ``paper`` step than the generic path with dropout, 5-7% faster than
    ``scaled_dot_product_attention`` without (``tests/models/test_fast_paths.py`` checks it
    against both and against ``gradcheck``).

    Inputs: qkv (n, 3d); layout; h heads; keep (b*h, t, t) dropout multiplier or None.
    """

    @staticmethod
    def forward(ctx: Any, qkv: Tensor, layout: TokenLayout, h: int, keep: Tensor | None) -> Tensor:
        b, t = layout.batch, layout.width
        d = qkv.shape[1] // 3
        e = d // h
        grid = layout.spread(qkv).view(b, t, 3, h, e).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = grid.view(3, b * h, t, e).unbind(0)
        if layout.key_mask is None:
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(e**-0.5)  # (b*h, t, t)
        else:
            bias = layout.head_key_bias(h, qkv.dtype)  # (b*h, 1, t), -inf at padded keys
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=e**-0.5)
        probs = torch.softmax(scores, dim=-1)
        weights = probs if keep is None else probs * keep
        y = torch.bmm(weights, v).view(b, h, t, e)
        out = layout.pack(y.permute(0, 2, 1, 3).reshape(b, t, d))
        ctx.save_for_backward(grid, probs, weights, keep)
        ctx.layout, ctx.h = layout, h
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grid, probs, weights, keep = ctx.saved_tensors
        layout, h = ctx.layout, ctx.h
        b, t = layout.batch, layout.width
        d = grad_out.shape[1]
        e = d // h
        grad_y = layout.unpack(grad_out).view(b, t, h, e).permute(0, 2, 1, 3).reshape(b * h, t, e)
        q, k, v = grid.view(3, b * h, t, e).unbind(0)
        grad_grid = torch.empty_like(grid).view(3, b * h, t, e)
        torch.bmm(weights.transpose(1, 2), grad_y, out=grad_grid[2])  # dv
        grad_weights = torch.bmm(grad_y, v.transpose(1, 2))  # (b*h, t, t)
        if keep is not None:
            grad_weights.mul_(keep)
        grad_scores = torch._softmax_backward_data(grad_weights, probs, -1, probs.dtype)
        scale = e**-0.5
        torch.baddbmm(grad_grid[0], grad_scores, k, beta=0.0, alpha=scale, out=grad_grid[0])  # dq
        torch.baddbmm(
            grad_grid[1], grad_scores.transpose(1, 2), q, beta=0.0, alpha=scale, out=grad_grid[1]
        )  # dk
        grad_qkv = layout.pack(
            grad_grid.view(3, b, h, t, e).permute(1, 3, 0, 2, 4).reshape(b, t, 3 * d)
        )
        return grad_qkv, None, None, None


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout
        self.query_prescaled = False  # set by the ONNX export, which scales the query weights

    def prescale_queries(self) -> None:
        """Fold the 1/sqrt(e) of the scores into the query weights (for an exported copy)."""
        d, h = self.out.in_features, self.num_heads
        with torch.no_grad():
            self.qkv.weight[:d] *= (d // h) ** -0.5
            self.qkv.bias[:d] *= (d // h) ** -0.5
        self.query_prescaled = True

    def forward(self, x: Tensor, layout: TokenLayout, rows: Tensor | None = None) -> Tensor:
        """(n, d) packed tokens -> (n, d), or (m, d) at the packed ``rows`` (m,) only."""
        y = self.attend(x, layout)  # (n, d), before the output projection
        return self.out(y if rows is None else y.index_select(0, rows))

    def attend(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """(n, d) packed tokens -> (n, d) attention output, heads concatenated."""
        b, t, d, h = layout.batch, layout.width, x.shape[-1], self.num_heads
        if layout.gather:
            return self.attend_by_gathers(x, layout)
        if (
            self.training
            and PACKED_ATTENTION
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
        ):
            keep = None
            if self.attention_dropout > 0.0:
                keep = dropout_multiplier((b * h, t, t), self.attention_dropout, x.dtype)
            return PackedAttention.apply(self.qkv(x), layout, h, keep)
        qkv = layout.spread(self.qkv(x))  # (b, t, 3d), copies of a real row at padding
        q, k, v = qkv.view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # (b, h, t, e) each
        if (self.training and self.attention_dropout > 0.0) or torch.jit.is_tracing():
            # With dropout, SDPA on the CPU falls back to a generic path (a "safe" softmax that
            # scans for fully masked rows, bool-mask conversions, Bernoulli draws), and exported
            # to ONNX it becomes the same plus IsNaN/Where nodes: the plain products with an
            # additive key mask are measured faster in both (about 10% of a training step, 13%
            # of ONNX Runtime inference).
            scores = torch.matmul(q * (d // h) ** -0.5, k.transpose(-1, -2))  # (b, h, t, t)
            if layout.key_mask is not None:
                scores = scores + layout.key_bias(scores.dtype)  # -inf at padded keys
            weights = dropout(torch.softmax(scores, dim=-1), self.attention_dropout, self.training)
            y = torch.matmul(weights, v)  # (b, h, t, e)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=layout.key_mask
            )  # (b, h, t, e); key_mask (b, 1, 1, t)
        return layout.pack(y.transpose(1, 2).reshape(b, t, d))  # (n, d)

    def attend_by_gathers(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """``attend`` for exported graphs: rows of head size e move by Gather, not by
        Split, Transpose and ScatterND (2x cheaper per element in ONNX Runtime)."""
        b, t, d, h = layout.batch, layout.width, x.shape[-1], self.num_heads
        e = d // h
        query, out = layout.head_rows(h)  # (b, h, t), (n, h)
        rows = self.qkv(x).reshape(-1, e)  # (n * 3h, e): [q heads, k heads, v heads] per token
        q, k, v = rows[query], rows[query + h], rows[query + 2 * h]  # (b, h, t, e) each
        if not self.query_prescaled:
            q = q * e**-0.5
        scores = torch.matmul(q, k.transpose(-1, -2))  # (b, h, t, t)
        if layout.key_mask is not None:
            scores = scores + layout.key_bias(scores.dtype)
        y = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, h, t, e)
        return y.reshape(b * h * t, e)[out].reshape(-1, d)  # (n, d)


class FeedForward(nn.Module):
    """Position-wise d -> f -> d with exact GELU."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Post-LayerNorm encoder block, as in the original BERT."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, layout: TokenLayout, rows: Tensor | None = None) -> Tensor:
        """(n, d) packed tokens -> (n, d); with ``rows`` (m,), the outputs at those rows only.

        Every token still serves as a key and value; only the per-token work after attention
        (output projection, feed-forward, LayerNorms) is limited to ``rows``.
        """
        attended = self.attention(x, layout, rows)
        if rows is not None:
            x = x.index_select(0, rows)
        x = self.attention_norm(x + self.dropout(attended))
        return self.output_norm(x + self.dropout(self.feed_forward(x)))


class MaskedModuleHead(nn.Module):
    """Scores every vocabulary token at some positions; decoder tied to the token embeddings."""

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, token_embedding: Tensor) -> Tensor:
        """(…, d) hidden states and the (v, d) embedding table -> (…, v) logits."""
        x = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(x, token_embedding, self.bias)


class PairHead(nn.Module):
    """Pooler (dense + tanh) on ``[CLS]``, then one logit of pT(B) > pT(A) (or ``num_outputs``)."""

    def __init__(self, config: TrackingBertConfig, num_outputs: int = 1) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, num_outputs)

    def forward(self, hidden: Tensor) -> Tensor:
        """(b, t, d) hidden states -> (b,) logits ((b, num_outputs) when num_outputs > 1)."""
        return self.classify(hidden[:, 0])

    def classify(self, cls: Tensor) -> Tensor:
        """(b, d) hidden states at ``[CLS]`` -> (b,) logits ((b, num_outputs) when num_outputs > 1)."""
        pooled = torch.tanh(self.pooler(cls))  # (b, d)
        logits = self.classifier(pooled)  # (b, num_outputs)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits


# ----------------------------------------------------------------------------- model
class TrackingBert(nn.Module):
    """TrackingBERT encoder with its masked-module and pair heads.

    Parameters
    ----------
    config : the architecture.

    Attributes
    ----------
    vocab : the ``ModuleVocab`` the model was trained with (set by ``from_pretrained``), or None.
    """

    def __init__(self, config: TrackingBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.mlm_head = MaskedModuleHead(config)
        self.pair_head = PairHead(config)
        self.vocab: ModuleVocab | None = None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ encoder
    def embedding_table(self) -> Tensor:
        """(v, d) token embedding weight (also the masked-module decoder weight)."""
        return self.embeddings.token.weight

    def num_parameters(self) -> int:
        """Number of trainable numbers (the tied table counted once)."""
        return sum(p.numel() for p in self.parameters())

    def encode(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        pack: bool | Literal["gather"] = True,
        at: Tensor | None = None,
    ) -> Tensor:
        """Encoder output.

        Parameters
        ----------
        input_ids : (b, t) token ids, t <= ``config.max_length``.
        token_type_ids : (b, t) segment ids (0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``); zeros if None.
        attention_mask : (b, t) bool or 0/1, True on real tokens; all real if None. Each row needs
            at least one real token. Outputs at real positions do not depend on the padding.
        pack : run the per-token layers on the real tokens only (default); False computes every
            position of the (b, t) grid and masks padded keys only; ``"gather"`` packs too but
            moves rows with gathers only (``TokenLayout.gather``; used for the ONNX export).
        at : (m,) positions in the flattened (b * t) grid (``row * t + position``) whose output
            is wanted, or None for all. The last block then computes only those (its keys and
            values still come from every token): the heads read about a third of the tokens in
            training and one per pair in masked-hit prediction.

        Returns
        -------
        (b, t, d) hidden states, zeros at padded positions; with ``at``, (m, d) at those positions.
        """
        t = input_ids.shape[1]
        if t > self.config.max_length:
            raise InputError(
                f"input width {t} exceeds the model's max_length {self.config.max_length}"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        b = input_ids.shape[0]
        layout = TokenLayout(batch=b, width=t, real=None, key_mask=None, gather=pack == "gather")
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            # An all-real batch needs neither mask nor packing; a traced or compiled graph must
            # keep both, since the next batch may have padding.
            tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
            if tracing or not bool(attention_mask.all()):
                if pack:
                    layout.real = attention_mask.reshape(-1).nonzero().squeeze(1)  # (n,)
                layout.key_mask = attention_mask[:, None, None, :]  # (b, 1, 1, t)
        x = self.embeddings(input_ids, token_type_ids, layout)  # (n, d)
        for block in self.blocks[:-1]:
            x = block(x, layout)
        if at is None:
            hidden = layout.unpack(self.blocks[-1](x, layout))  # (b, t, d)
            if layout.key_mask is not None and layout.real is None:  # unpacked: zero the padding
                hidden = hidden * attention_mask[:, :, None].to(hidden.dtype)
            return hidden
        rows = at if layout.real is None else layout.source().index_select(0, at)  # (m,) packed
        if layout.real is not None:  # a padded position: any row, zeroed below
            rows = rows.clamp(max=layout.real.shape[0] - 1)
        hidden = self.blocks[-1](x, layout, rows)  # (m, d)
        if layout.key_mask is not None:  # zeros at padded positions, as without ``at``
            hidden = hidden * attention_mask.reshape(-1).index_select(0, at)[:, None].to(
                hidden.dtype
            )
        return hidden

    # ------------------------------------------------------------------ heads
    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        pair_labels: Tensor | None = None,
    ) -> TrackingBertOutput:
        """Encoder, masked-module head and pair head, with losses when labels are given.

        Parameters
        ----------
        input_ids, token_type_ids, attention_mask : see ``encode``.
        labels : (b, t) true token ids at the positions to predict, -100 elsewhere. The masked-module
            head then runs only on those k positions.
        pair_labels : (b,) 1 where pT(B) > pT(A), 0 otherwise (float or int); -100 ignores a row.

        Returns
        -------
        TrackingBertOutput.
        """
        b, t = input_ids.shape
        if labels is None:
            hidden = self.encode(input_ids, token_type_ids, attention_mask)  # (b, t, d)
            mlm_logits = self.mlm_head(hidden, self.embedding_table())  # (b, t, v)
            pair_logits = self.pair_head(hidden)  # (b,)
            mlm_loss = None
        else:
            # The heads read the labelled positions and [CLS] only: the last block skips the rest.
            flat_labels = labels.reshape(-1)  # (b*t,)
            where = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)  # (k,) row-major
            cls = torch.arange(b, device=input_ids.device) * t  # (b,)
            at = torch.cat([where, cls])
            rows = self.encode(input_ids, token_type_ids, attention_mask, at=at)  # (k + b, d)
            hidden = rows.new_zeros(b * t, rows.shape[-1]).index_copy(0, at, rows).view(b, t, -1)
            k = where.shape[0]
            mlm_logits = self.mlm_head(rows[:k], self.embedding_table())  # (k, v)
            pair_logits = self.pair_head.classify(rows[k:])  # (b,)
            targets = flat_labels.index_select(0, where)
            if k > 0:
                mlm_loss = F.cross_entropy(mlm_logits.float(), targets)
            else:
                mlm_loss = mlm_logits.sum() * 0.0  # keeps the graph, no labelled position
        pair_loss = None
        if pair_labels is not None:
            pair_targets = pair_labels.to(pair_logits.dtype)
            keep = pair_labels != IGNORE_INDEX
            pair_loss = F.binary_cross_entropy_with_logits(
                pair_logits[keep].float(), pair_targets[keep].float()
            )
        losses = [x for x in (mlm_loss, pair_loss) if x is not None]
        loss = sum(losses[1:], losses[0]) if losses else None
        return TrackingBertOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            pair_loss=pair_loss,
            mlm_logits=mlm_logits,
            pair_logits=pair_logits,
            hidden_states=hidden,
        )

    def predict_masked(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None,
        attention_mask: Tensor | None,
        positions: Tensor,
    ) -> Tensor:
        """Masked-module logits at chosen positions only (for evaluation).

        Parameters
        ----------
        input_ids, token_type_ids, attention_mask : see ``encode``; (b, t).
        positions : (k, 2) integer (row, input position) pairs, e.g. ``offset_a + hit_index``.

        Returns
        -------
        (k, v) logits, one row per pair, in the order given.
        """
        positions = positions.to(device=input_ids.device, dtype=torch.long)
        at = positions[:, 0] * input_ids.shape[1] + positions[:, 1]  # (k,) in the (b * t) grid
        selected = self.encode(input_ids, token_type_ids, attention_mask, at=at)  # (k, d)
        return self.mlm_head(selected, self.embedding_table())  # (k, v)

    # ------------------------------------------------------------------ vocabulary
    def check_vocab(self, vocab: ModuleVocab) -> None:
        """Refuse a dataset vocabulary that differs from the model's own (by SHA-256)."""
        if self.vocab is not None and self.vocab.sha256 != vocab.sha256:
            raise InputError(
                f"model vocabulary sha256 {self.vocab.sha256} differs from dataset's {vocab.sha256}"
            )
        if len(vocab) != self.config.vocab_size:
            raise InputError(
                f"model vocab_size {self.config.vocab_size} differs from the dataset vocabulary's {len(vocab)} tokens"
            )

    # ------------------------------------------------------------------ save / load
    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        vocab: ModuleVocab,
        card: dict[str, Any] | None = None,
    ) -> None:
        """Write ``config.json``, ``model.safetensors``, ``vocab.json`` and a ``README.md`` model card.

        Parameters
        ----------
        directory : created if missing; existing model files in it are replaced (each atomically).
        vocab : the vocabulary the model was trained with; its size must equal ``config.vocab_size``.
        card : extra facts for the model card (data, selection, steps, metrics, ...), JSON-friendly.
        """
        if len(vocab) != self.config.vocab_size:
            raise InputError(
                f"vocabulary has {len(vocab)} tokens but the model's vocab_size is {self.config.vocab_size}"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_output_file(directory / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        tensors = {
            name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()
        }
        with atomic_output_file(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "vocab_sha256": vocab.sha256})
        vocab.save(directory / VOCAB_FILE)
        with atomic_output_file(directory / CARD_FILE) as tmp:
            tmp.write_text(self.model_card(vocab, card))
        self.vocab = vocab

    def model_card(self, vocab: ModuleVocab, card: dict[str, Any] | None = None) -> str:
        """Markdown model card: architecture, size, vocabulary and any facts given in ``card``."""
        c = self.config
        lines = [
            "# TrackingBERT model",
            "",
            "A BERT encoder over detector-module tokens (arXiv:2402.10239), pre-trained with tracklm.",
            "Load it with `tracklm.TrackingBert.from_pretrained(directory)`.",
            "",
            "## Architecture",
            "",
            f"- layers: {c.num_layers}, hidden size: {c.hidden_size}, heads: {c.num_heads}, "
            f"feed-forward: {c.intermediate_size} (GELU, post-LayerNorm)",
            f"- positions: {c.max_length} ({c.position_embedding}), segments: {c.type_vocab_size}",
            f"- dropout: {c.dropout}, attention dropout: {c.attention_dropout}",
            "- heads: masked-module prediction (decoder tied to the token embeddings), "
            "pair task pT(B) > pT(A)",
            f"- parameters: {self.num_parameters():,}",
            "",
            "## Vocabulary",
            "",
            f"- tokens: {len(vocab)} ({vocab.num_special} special, {len(vocab.modules)} modules)",
            f"- sha256: `{vocab.sha256}`",
        ]
        if card:
            lines += ["", "## Training and results", ""]
            for key, value in card.items():
                text = (
                    json.dumps(value, sort_keys=True)
                    if isinstance(value, (dict, list))
                    else str(value)
                )
                lines.append(f"- {key}: {text}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> TrackingBert:
        """Rebuild a model from a directory written by ``save_pretrained``; runs no code from it.

        Parameters
        ----------
        directory : the model directory.
        map_location : device for the weights.

        Returns
        -------
        The model in eval mode, with ``model.vocab`` set.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError(f"{directory}: no model directory")
        config_path = directory / CONFIG_FILE
        try:
            data = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise InputError(f"{config_path}: missing (not a tracklm model directory?)") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{config_path}: expected a JSON object")
        config = TrackingBertConfig.from_dict(data, where=str(config_path))
        vocab = ModuleVocab.load(directory / VOCAB_FILE)
        if len(vocab) != config.vocab_size:
            raise InputError(
                f"{directory / VOCAB_FILE}: {len(vocab)} tokens but config.json says vocab_size {config.vocab_size}"
            )
        weights_path = directory / WEIGHTS_FILE
        if not weights_path.is_file():
            raise InputError(f"{weights_path}: missing")
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{weights_path}: not a readable safetensors file ({exc})") from None
        model = cls(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            which = (
                f"missing tensor {missing[0]!r}"
                if missing
                else f"unexpected tensor {unexpected[0]!r}"
            )
            raise InputError(f"{weights_path}: {which} for this config")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise InputError(
                    f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(expected[name].shape)}"
                )
        model.load_state_dict(state)
        model.to(map_location)
        model.vocab = vocab
        return model.eval()


__all__ = [
    "IGNORE_INDEX",
    "TrackingBert",
    "TrackingBertConfig",
    "TrackingBertOutput",
    "sinusoidal_positions",
]
