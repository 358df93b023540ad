"""Helpers shared by the encoder and predictor: sin-cos position tables, init, token gathers."""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn


def sincos_pos_embed(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (1, grid_size**2, dim), row-major like the patches."""
    return build_sincos2d_pos_embed([grid_size, grid_size], dim=dim).unsqueeze(0)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick tokens (B, N, D) at per-image indices (B, n) -> (B, n, D), one batched gather."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def init_weights(module: nn.Module) -> None:
    """I-JEPA's initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def rescale_residual_branches(blocks: nn.ModuleList) -> None:
    """Divide each block's output projections by sqrt(2 * layer) (I-JEPA's fix_init_weight)."""
    for layer, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer))


def key_padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """(B, n) bool of real tokens -> SDPA boolean mask (B, 1, 1, n), or None when all are real."""
    if valid is None:
        return None
    return valid[:, None, None, :]
