"""CPU training paths of TrackingBERT: packed attention with its own backward, cheap dropout, and
a LayerNorm whose gradients can be made independent of the thread count.

The first two compute what the plain ops in ``tracklm.models.bert`` compute (up to float
rounding; the dropout masks come from another random stream) and are checked against them in
``tests/models/test_fast_paths.py``. ``TrackingBert(config, attention="sdpa" | "eager")`` and
``TrackingBert(config, dropout_rng="torch")`` turn them off, e.g. to measure what they buy with
``benchmarks/bench_train_step.py``.

Training on the CPU repeats itself bit for bit at a given number of threads. With
``TRACKLM_THREAD_INVARIANT=1`` in the environment (``THREAD_INVARIANT``) it also gives the same
weights with any number of threads (``tests/reliability/test_reruns.py``), for about 10%
(``paper``, batch 256) to 40% (``tiny``, batch 64) more time per step on one thread. Kernels
that add per-thread partial results round differently with the thread count: torch's fused
LayerNorm backward (weight and bias gradients), its softmax backward
(``_softmax_backward_data``), its accumulation of an indexing gradient (``bert.py`` embeds
positions with ``F.embedding`` instead, always) and MKL's matrix products that split their inner
dimension between threads (the tokens of every weight gradient, the vocabulary of the decoder's
input gradient). In that mode ``LayerNorm`` and ``PackedAttention.backward`` avoid torch's two,
and ``tracklm/__init__.py`` asks MKL for its strict reproducible mode (``MKL_CBWR=AUTO,STRICT``),
which MKL reads at its first call: set the variable before anything runs a matrix product.

Shape legend: ``b`` batch, ``t`` tokens, ``n`` real tokens, ``d`` hidden, ``h`` heads, ``e`` head
size (d / h).
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracklm.models.layout import TokenLayout

DropoutRng = Literal["sfc64", "torch"]
THREAD_INVARIANT = os.environ.get("TRACKLM_THREAD_INVARIANT", "") == "1"
"""Whether CPU training uses kernels whose results do not depend on the thread count."""
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
    """(b * h, q, t) additive attention mask (-inf at padded keys, and after the query in a
    causal model; q = 1 without, t with), repeated per head."""
    b, t = layout.batch, layout.width

    def build() -> Tensor:
        bias = layout.key_bias(dtype)
        q = bias.shape[2]
        return bias.expand(b, num_heads, q, t).reshape(b * num_heads, q, t)

    return layout.cached(("head_key_bias", num_heads, dtype), build)


class PackedAttention(torch.autograd.Function):
    """Attention from packed (n, 3d) query/key/value rows to packed (n, d) outputs, with dropout.

    The CPU training path. Attention at t = 19 and head size 8 is a few percent of a ``paper``
    step's arithmetic but a large part of its time, spent in many small ops and layout copies.
    Written out with its own backward it makes one per-head copy of q, k, v (which the backward
    reuses), folds the 1/sqrt(e) scale and the key mask into ``baddbmm``, reads transposed
    operands in place, and saves no intermediate that autograd would recompute. The backward
    calls torch's private ``_softmax_backward_data`` (the softmax gradient kernel autograd uses),
    or, with ``THREAD_INVARIANT``, writes that gradient out (torch's kernel rounds differently
    with the number of threads; the written-out one costs a few percent of a step).

    Inputs: qkv (n, 3d); layout; h heads; keep (b*h, t, t) dropout multiplier or None.
    """

    @staticmethod
    def forward(ctx: Any, qkv: Tensor, layout: TokenLayout, h: int, keep: Tensor | None) -> Tensor:
        b, t = layout.batch, layout.width
        d = qkv.shape[1] // 3
        e = d // h
        grid = layout.spread(qkv).view(b, t, 3, h, e).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = grid.view(3, b * h, t, e).unbind(0)
        if not layout.masked:
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(e**-0.5)  # (b*h, t, t)
        else:
            bias = head_key_bias(layout, h, qkv.dtype)  # (b*h, 1 or t, t), -inf where masked
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
        if THREAD_INVARIANT:
            # probs * (g - sum(g * probs)), each row summed whole by one thread
            dot = (grad_weights * probs).sum(dim=-1, keepdim=True)  # (b*h, t, 1)
            grad_scores = grad_weights.sub_(dot).mul_(probs)
        else:
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


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose CPU gradients, with ``THREAD_INVARIANT``, do not depend on the
    number of threads.

    torch's fused CPU backward sums the weight and bias gradients in per-thread partial sums, so
    they round differently with one thread and with two. With ``THREAD_INVARIANT``, where
    gradients flow on the CPU in float32 (eager mode, no autocast), ``LayerNormFunction`` keeps
    the fused kernels for the output and the input gradient (both computed row by row) and sums
    the weight and bias gradients column by column instead (twice the time of the fused
    backward). Same parameters and state-dict keys as ``nn.LayerNorm``; otherwise, the fused
    kernel.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            not THREAD_INVARIANT
            or self.weight is None
            or self.bias is None
            or len(self.normalized_shape) != 1
            or not torch.is_grad_enabled()
            or not packed_attention_applies(x, training=True)
        ):
            return super().forward(x)
        out: Tensor = LayerNormFunction.apply(x, self.weight, self.bias, self.eps)  # type: ignore[no-untyped-call]
        return out


class LayerNormFunction(torch.autograd.Function):
    """LayerNorm over the last dimension of (..., d) ``x``: torch's kernels for the output and the
    input gradient, column sums for the (d,) weight and bias gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        out, mean, rstd = torch.native_layer_norm(x, weight.shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        (grad_out,) = grad_outputs
        x, weight, bias, mean, rstd = ctx.saved_tensors
        d = x.shape[-1]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(
                grad_out, x, weight.shape, mean, rstd, weight, bias, [True, False, False]
            )[0]
        grad_rows = grad_out.reshape(-1, d)  # (rows, d)
        normalized = (x.reshape(-1, d) - mean.reshape(-1, 1)).mul_(rstd.reshape(-1, 1))
        # Sums over rows with d outputs: torch gives each column to one thread.
        return grad_x, (grad_rows * normalized).sum(0), grad_rows.sum(0), None
