"""CPU training fast paths of TrackingBERT: packed attention with its own backward, cheap dropout.

Both compute what the plain ops in ``tracklm.models.bert`` compute (up to float rounding; the
dropout masks come from another random stream) and are checked against them in
``tests/models/test_fast_paths.py``. ``TrackingBert(config, attention="sdpa" | "eager")`` and
``TrackingBert(config, dropout_rng="torch")`` turn them off, e.g. to measure what they buy with
``benchmarks/bench_train_step.py``.

Shape legend: ``b`` batch, ``t`` tokens, ``n`` real tokens, ``d`` hidden, ``h`` heads, ``e`` head
size (d / h).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.models.layout import TokenLayout

DropoutRng = Literal["sfc64", "torch"]
_DROPOUT_STEPS = 1 << 16  # the fast dropout draws 16-bit uniform integers


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout; on the CPU with a mask drawn 16 random bits per element.

    ``torch.nn.functional.dropout`` draws one 32-bit number per element on the CPU (Mersenne
    Twister), a sizeable part of a small model's training step. Here each 64 random bits give
    four 16-bit uniform integers (``dropout_multiplier``), so ``p`` is rounded to a multiple of
    2^-16 (0.05 becomes 0.050003). Other devices, and compiled code, use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return x * dropout_multiplier(x.shape, p, x.dtype)


def dropout_multiplier(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU tensor of ``shape``: 0 with probability ``p`` (rounded to a multiple of 2^-16), else
    1 / (1 - p). (A multiplier is cheaper, forward and backward, than ``masked_fill`` or ``where``.)
    """
    dropped = round(p * _DROPOUT_STEPS)
    n = math.prod(shape)
    # One draw from torch's generator seeds a small fast generator (SFC64) for the bits: cheaper
    # than torch's Mersenne Twister, and still reproducible from torch.manual_seed and from a
    # checkpoint's RNG state.
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    bits = torch.from_numpy(np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n])
    keep = bits.view(shape) >= dropped - _DROPOUT_STEPS // 2
    return keep.to(dtype).mul_(_DROPOUT_STEPS / (_DROPOUT_STEPS - dropped))


class Dropout(nn.Module):
    """``nn.Dropout`` with a choice of random numbers: ``rng="sfc64"`` (``dropout``, the fast
    CPU masks) or ``"torch"`` (``F.dropout``)."""

    def __init__(self, p: float, rng: DropoutRng) -> None:
        super().__init__()
        self.p, self.rng = p, rng

    def forward(self, x: Tensor) -> Tensor:
        if self.rng == "sfc64":
            return dropout(x, self.p, self.training)
        return F.dropout(x, self.p, self.training)

    def multiplier(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """(shape) CPU tensor: 0 where an element is dropped, 1 / (1 - p) elsewhere."""
        if self.rng == "sfc64":
            return dropout_multiplier(shape, self.p, dtype)
        return F.dropout(torch.ones(shape, dtype=dtype), self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, rng={self.rng}"


def packed_attention_applies(x: Tensor, training: bool) -> bool:
    """Whether ``PackedAttention`` serves ``x``: training on the CPU in float32, eager mode."""
    return (
        training
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not (torch.jit.is_tracing() or torch.compiler.is_compiling())  # type: ignore[no-untyped-call]
    )


def head_key_bias(layout: TokenLayout, num_heads: int, dtype: torch.dtype) -> Tensor:
    """(b * h, 1, t) additive key mask (-inf at padded keys), repeated per head."""
    b, t = layout.batch, layout.width

    def build() -> Tensor:
        bias = layout.key_bias(dtype).expand(b, num_heads, 1, t)
        return bias.reshape(b * num_heads, 1, t)

    return layout.cached(("head_key_bias", num_heads, dtype), build)


class PackedAttention(torch.autograd.Function):
    """Attention from packed (n, 3d) query/key/value rows to packed (n, d) outputs, with dropout.

    The CPU training path. Attention at t = 19 and head size 8 is a few percent of a ``paper``
    step's arithmetic but a large part of its time, spent in many small ops and layout copies.
    Written out with its own backward it makes one per-head copy of q, k, v (which the backward
    reuses), folds the 1/sqrt(e) scale and the key mask into ``baddbmm``, reads transposed
    operands in place, and saves no intermediate that autograd would recompute. The backward
    calls torch's private ``_softmax_backward_data`` (the softmax gradient kernel autograd uses).

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
            bias = head_key_bias(layout, h, qkv.dtype)  # (b*h, 1, t), -inf at padded keys
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=e**-0.5)
        probs = torch.softmax(scores, dim=-1)
        weights = probs if keep is None else probs * keep
        y = torch.bmm(weights, v).view(b, h, t, e)
        out = layout.pack(y.permute(0, 2, 1, 3).reshape(b, t, d))
        ctx.save_for_backward(grid, probs, weights, keep)
        ctx.layout, ctx.h = layout, h
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        (grad_out,) = grad_outputs  # (n, d)
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


def packed_attention(
    qkv: Tensor, layout: TokenLayout, num_heads: int, keep: Tensor | None
) -> Tensor:
    """(n, 3d) packed query/key/value rows -> (n, d) attention output through ``PackedAttention``.

    ``keep`` is the (b * h, t, t) dropout multiplier of the attention probabilities, or None.
    """
    out: Tensor = PackedAttention.apply(qkv, layout, num_heads, keep)  # type: ignore[no-untyped-call]
    return out
