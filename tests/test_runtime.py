"""The torch runtime settings every model stage applies."""

from __future__ import annotations

import torch

from tracklm.runtime import configure_torch


def test_subnormals_are_flushed_to_zero() -> None:
    torch.set_flush_denormal(False)  # another test may have configured the process already
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    assert (tiny * 1.0).item() != 0.0
    configure_torch()
    assert (tiny * 1.0).item() == 0.0
