"""Tolerances for comparing float32 results reached along different paths, on any x86 CPU.

Two float32 computations of the same value that sum in different orders (another blocking,
vector width or use of fused multiply-adds: Intel or AMD, AVX2 or AVX-512, packed or padded
rows, another kernel) differ by their rounding errors. Each addition rounds by at most
eps / 2 of the running sum, and the errors of a chain of c additions add up like a random walk
(Higham and Mary, SIAM J. Sci. Comput. 41 (2019) A2815): about eps * sqrt(c) * scale, with
``scale`` the magnitude of the values summed, here taken as the largest |expected| (LayerNorm
keeps the intermediate values of the encoder at that order). ``MARGIN`` times that bounds
them with room to spare (the differences seen on Intel and AMD CPUs are a few eps * scale),
while a change of the computation (a mask, a scale, the tanh approximation of GELU) moves the
values by several times more (``tests/models/test_hf_parity.py`` checks the last).
"""

from __future__ import annotations

import math

import torch

from tracklm.models import TrackingBertConfig

EPS = torch.finfo(torch.float32).eps
MARGIN = 8.0


def encoder_chain(config: TrackingBertConfig, width: int, *, heads: bool = False) -> int:
    """Additions along the longest chain of sums from the inputs to the encoder's output.

    Per block: the query/key/value projection (d), the scores (e), the softmax normalisation
    and the weighted values (t each), the output projection (d), the feed-forward (d, then f)
    and two LayerNorms (mean and variance over d each); the embedding LayerNorm (2d) first.
    ``heads`` adds the masked-module head (dense d, LayerNorm 2d, decoder d).
    """
    d, f = config.hidden_size, config.intermediate_size
    e = d // config.num_heads
    block = d + e + 2 * width + d + d + f + 4 * d
    return 2 * d + config.num_layers * block + (4 * d if heads else 0)


def float32_tolerance(expected: torch.Tensor, chain: int) -> dict[str, float]:
    """``atol`` and ``rtol`` for ``torch.testing.assert_close`` of float32 values (see the module).

    Parameters
    ----------
    expected : the reference values; their largest magnitude sets the scale.
    chain : additions along the longest chain of sums behind each value (``encoder_chain``;
        for weight gradients add the backward pass and the sum over tokens).
    """
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    rtol = MARGIN * EPS * math.sqrt(chain)
    return {"atol": rtol * scale, "rtol": rtol}
