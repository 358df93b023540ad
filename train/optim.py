"""AdamW with I-JEPA's parameter groups (no weight decay on biases and 1-D parameters)."""

from __future__ import annotations

import torch
from torch import nn

from djepa_bench.config import OptimConfig


def param_groups(model: nn.Module) -> list[dict]:
    """Two groups: 'decay' (weights, >= 2-D) and 'no_decay' (biases, norms, 1-D)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [
        {"params": decay, "name": "decay", "apply_wd": True},
        {"params": no_decay, "name": "no_decay", "apply_wd": False, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters; the fused kernel on GPU."""
    return torch.optim.AdamW(
        param_groups(model),
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda" or None,
    )


def set_lr_wd(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Apply this step's learning rate to every group and weight decay to the 'decay' group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group.get("apply_wd", True):
            group["weight_decay"] = wd


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * source, over all parameters at once."""
    tgt = [p for p in target.parameters()]
    src = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(tgt, src, 1.0 - momentum)
