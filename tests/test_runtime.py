"""The torch runtime settings every model stage applies."""

from __future__ import annotations

import torch

from tracklm.runtime import configure_torch


def test_subnormals_are_flushed_to_zero() -> None:
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    configure_torch()
    try:
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert (tiny * 1.0).item() != 0.0
