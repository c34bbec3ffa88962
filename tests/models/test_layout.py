"""TokenLayout: packing real tokens, unpacking with zeros, positions to packed rows, the cache."""

from __future__ import annotations

import torch

from tracklm.models.layout import TokenLayout


def test_pack_unpack_spread_and_rows_at() -> None:
    mask = torch.tensor([[True, True, False], [True, True, True]])
    layout = TokenLayout.of(mask, 2, 3)
    assert layout.real is not None and layout.real.tolist() == [0, 1, 3, 4, 5]
    assert layout.num_real == 5
    grid = torch.arange(6.0).view(2, 3, 1) + 1  # (b, t, 1): 1..6
    rows = layout.pack(grid)  # (n, 1)
    assert rows.squeeze(1).tolist() == [1, 2, 4, 5, 6]
    assert layout.unpack(rows).squeeze(2).tolist() == [[1, 2, 0], [4, 5, 6]]
    spread = layout.spread(rows).squeeze(2)  # padding gets some real row
    assert spread[mask].tolist() == [1, 2, 4, 5, 6] and spread[0, 2] in rows
    assert layout.source().tolist() == [0, 1, 5, 2, 3, 4]  # padding points past the rows
    assert layout.rows_at(torch.tensor([4, 2, 0])).tolist() == [3, 4, 0]  # padding: row n - 1
    bias = layout.key_bias(torch.float32)
    assert bias.shape == (2, 1, 1, 3) and bias[0, 0, 0, 2] == float("-inf") and bias.sum() < 0


def test_an_all_real_batch_needs_no_packing_and_the_cache_builds_once() -> None:
    layout = TokenLayout.of(torch.ones(2, 3, dtype=torch.bool), 2, 3)
    assert layout.real is None and layout.key_mask is None and layout.num_real == 6
    rows = torch.randn(6, 4)
    assert torch.equal(layout.unpack(rows), rows.view(2, 3, 4))
    assert torch.equal(layout.rows_at(torch.tensor([5, 1])), torch.tensor([5, 1]))
    calls = []

    def build() -> torch.Tensor:
        calls.append(1)
        return torch.zeros(1)

    first = layout.cached("thing", build)
    assert layout.cached("thing", build) is first and len(calls) == 1
