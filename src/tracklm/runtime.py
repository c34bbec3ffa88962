"""Process-wide torch settings that every stage running a model applies first."""

from __future__ import annotations

import warnings

import torch


def configure_torch() -> None:
    """Flush subnormal floats to zero on the CPU.

    Training drives some weights, gradients and Adam moments into the subnormal range, where x86
    CPUs compute tens of times slower (``docs/performance.md`` has the figures). Subnormals carry
    no information a float32 model needs.
    A no-op on GPUs, whose kernels flush subnormals anyway.
    """
    torch.set_flush_denormal(True)
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; the warning is about
    # Lightning's code, not the user's, and would otherwise greet every training run.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
    )
