"""AdamW with BERT's weight-decay exclusions, and the warm-up + linear-decay learning-rate schedule.

Used by pre-training (``tracklm/train/module.py``: one learning rate) and fine-tuning
(``tracklm/tasks/finetune.py``: the task head and the encoder at their own learning rates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def parameter_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None
) -> list[dict[str, Any]]:
    """Split parameters into decayed weights and undecayed biases, norms and embeddings.

    Parameters
    ----------
    model : the network (or one part of it, e.g. a task head).
    weight_decay : decay of the weight matrices of linear layers (and other non-excluded tensors).
    lr : learning rate of both groups; None leaves it to the optimiser's default ``lr``.

    Returns
    -------
    Two AdamW parameter groups; every trainable parameter appears exactly once (tied weights once).
    """
    no_decay: dict[int, nn.Parameter] = {}
    for module in model.modules():
        exempt_module = isinstance(module, (nn.Embedding, nn.LayerNorm))
        for name, parameter in module.named_parameters(recurse=False):
            if exempt_module or name.endswith("bias"):
                no_decay[id(parameter)] = parameter
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in no_decay]
    undecayed = [p for p in no_decay.values() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    if lr is not None:
        for group in groups:
            group["lr"] = lr
    return groups


def warmup_linear_decay(
    warmup_steps: int, total_steps: int, decay_start: int | None = None
) -> Callable[[int], float]:
    """Learning-rate factor: linear from 0 to 1 over ``warmup_steps``, then linear to 0 at ``total_steps``.

    ``decay_start`` (default ``warmup_steps``) is the step at which the decay line would stand
    at 1: a schedule re-fitted mid-run (``train/schedule.py: refit_schedule``) moves it so the
    decay continues from the factor in force to 0 at the new ``total_steps``, without a jump.

    Returns a function of the optimiser step (0-based) for ``torch.optim.lr_scheduler.LambdaLR``.
    """
    start = warmup_steps if decay_start is None else decay_start

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - start))

    return factor


def fused_supported(model: nn.Module) -> bool:
    """Whether to use the fused AdamW kernel: every parameter a floating tensor on the CPU.

    Fused AdamW updates all tensors in one kernel, cheaper on the CPU than the default per-tensor
    loop (``docs/performance.md``). On GPUs the default multi-tensor path is already fast, and fused AdamW would refuse
    Lightning's gradient clipping under ``16-mixed`` precision, so it stays off there.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    return bool(parameters) and all(
        p.device.type == "cpu" and p.dtype.is_floating_point for p in parameters
    )


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    total_steps: int,
    fused: bool | None = None,
    groups: list[dict[str, Any]] | None = None,
    decay_start: int | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``parameter_groups`` and its per-step ``LambdaLR`` schedule.

    Parameters
    ----------
    model : the network trained.
    lr : peak learning rate (of every group that sets none).
    weight_decay : decay of the weight matrices (see ``parameter_groups``).
    betas : AdamW betas.
    warmup_steps, total_steps, decay_start : see ``warmup_linear_decay`` (the factor multiplies
        every group's learning rate).
    fused : use the fused AdamW kernel; None (default) means ``fused_supported(model)``.
    groups : parameter groups to use instead of ``parameter_groups(model, weight_decay)``, e.g.
        those of several parts of ``model`` at their own learning rates; empty groups are dropped.
    """
    if fused is None:
        fused = fused_supported(model)
    if groups is None:
        groups = parameter_groups(model, weight_decay)
    else:
        groups = [group for group in groups if group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear_decay(warmup_steps, total_steps, decay_start)
    )
    return optimizer, schedule
