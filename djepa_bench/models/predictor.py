"""JEPA predictor: a narrow transformer from context tokens to target-token embeddings.

One sequence per image serves every target block and both objectives:
`[proj(z_ctx) + pos(C)] ++ [mask_token + pos(T_m)]_m ++ [proj_in(z_t) + pos(T_q)]_q`.
Context tokens attend only to (real) context tokens; each query group (a target block's
mask-token queries, or one noisy draw of a target block) attends to the context and to
itself. So the groups never see one another and the mask-token outputs are exactly what
an I-JEPA predictor without the noisy groups computes: with lambda_diff = 0 D-JEPA is
I-JEPA by construction.

D-JEPA's noisy queries are conditioned on their noise level through a sinusoidal
embedding -> MLP -> per-block adaLN-Zero modulation (shift, scale, gate for attention and
MLP, DiT style). The modulation layers start at zero and the residual gate is `1 + gate`,
so at initialisation every block is the shared unconditioned block; context and
mask-token queries are never modulated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from djepa_bench.config import ModelConfig
from djepa_bench.models.common import (
    gather_tokens,
    init_weights,
    rescale_residual_branches,
    sincos_pos_embed,
)

METHODS = ("ijepa", "djepa")


class ModulatedBlock(Block):
    """A timm Block whose trailing query groups can be modulated, one modulation per group."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        modulation: torch.Tensor | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """modulation (B, Q, 6D): shift/scale/gate for attention then MLP of the tokens
        x[:, start:], which form Q groups of equal length; None: the plain Block."""
        if modulation is None:
            return super().forward(x, attn_mask=attn_mask)
        # (B, Q, 1, D) each, broadcast over a group's tokens instead of repeated per token.
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.unsqueeze(2).chunk(6, dim=-1)
        groups = modulation.shape[1]
        h = _on_groups(self.norm1(x), start, groups, lambda t: torch.addcmul(shift1, t, 1 + scale1))
        attn = self.ls1(self.attn(h, attn_mask=attn_mask))
        x = x + self.drop_path1(_on_groups(attn, start, groups, lambda t: t * (1 + gate1)))
        h = _on_groups(self.norm2(x), start, groups, lambda t: torch.addcmul(shift2, t, 1 + scale2))
        mlp = self.ls2(self.mlp(h))
        return x + self.drop_path2(_on_groups(mlp, start, groups, lambda t: t * (1 + gate2)))


def _on_groups(
    x: torch.Tensor, start: int, groups: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply fn to x[:, start:] viewed as (B, groups, T, D); tokens before start are unchanged."""
    # split, not slicing: its backward concatenates instead of zero-filling a full gradient
    head, tail = x.split([start, x.shape[1] - start], dim=1)
    return torch.cat([head, fn(tail.unflatten(1, (groups, -1))).flatten(1, 2)], dim=1)


class TimestepEmbedder(nn.Module):
    """Integer noise level t -> sinusoidal features -> MLP (DiT's timestep embedder)."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = t.float()[..., None] * freqs
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


@dataclass
class PredictorOutput:
    """Predicted target embeddings: from mask-token queries and from noisy queries."""

    masked: torch.Tensor | None  # (B, M, T, D_encoder)
    denoised: torch.Tensor | None  # (B, Q, T, D_encoder), the x0 estimate


class Predictor(nn.Module):
    """Predicts target-token embeddings from context tokens (and noisy targets for D-JEPA)."""

    def __init__(
        self,
        grid_size: int,
        encoder_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        diffusion: bool,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.grid_size = grid_size
        self.num_patches = grid_size**2
        self.encoder_dim = encoder_dim
        self.dim = dim
        self.diffusion = diffusion
        self.context_proj = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(grid_size, dim), persistent=False)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            ModulatedBlock(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_proj = nn.Linear(dim, encoder_dim)
        # Shared modules are initialised before the diffusion ones are created, so I-JEPA and
        # D-JEPA predictors built from the same seed start with identical shared weights.
        self.apply(init_weights)
        trunc_normal_(self.mask_token, std=0.02)
        rescale_residual_branches(self.blocks)
        if diffusion:
            self.noisy_proj = nn.Linear(encoder_dim, dim)
            self.time_embed = TimestepEmbedder(dim)
            self.modulation = nn.ModuleList(
                nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) for _ in range(depth)
            )
            # The time embedder keeps PyTorch's default init so its output is O(1) (std-0.02
            # layers would make it ~0.01 and the zero-initialised modulation would learn slowly).
            self.noisy_proj.apply(init_weights)
            for layer in self.modulation:
                nn.init.zeros_(layer[1].weight)
                nn.init.zeros_(layer[1].bias)

    def forward(
        self,
        z_ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        ctx_valid: torch.Tensor | None = None,
        target_idx: torch.Tensor | None = None,
        noisy_idx: torch.Tensor | None = None,
        noisy: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
        noisy_valid: torch.Tensor | None = None,
    ) -> PredictorOutput:
        """Predict target embeddings.

        z_ctx (B, L, De) context-encoder tokens at ctx_idx (B, L), ctx_valid (B, L) marking
        real (not padding) tokens; target_idx (B, M, T): mask-token queries per target block;
        noisy_idx (B, Q, T), noisy (B, Q, T, De) and noise_level (B, Q): noisy queries;
        target_valid (B, M, T) and noisy_valid (B, Q, T) mark real queries (None: all real).
        Padding is never attended to: padded keys are masked out of every query's attention,
        and a padded query (whose output is meaningless) attends only to the real context.
        """
        batch, num_ctx = ctx_idx.shape
        device = z_ctx.device
        pos = self.pos_embed.to(z_ctx.dtype).expand(batch, -1, -1)
        parts = [self.context_proj(z_ctx) + gather_tokens(pos, ctx_idx)]
        groups = [torch.full((num_ctx,), -1, dtype=torch.long, device=device)]
        valid = [ctx_valid]
        num_masked = num_noisy = 0
        if target_idx is not None:
            num_masked, tokens_per_block = target_idx.shape[1], target_idx.shape[2]
            flat = target_idx.reshape(batch, -1)
            parts.append(self.mask_token.to(z_ctx.dtype) + gather_tokens(pos, flat))
            groups.append(
                torch.arange(num_masked, device=device).repeat_interleave(tokens_per_block)
            )
            valid.append(None if target_valid is None else target_valid.reshape(batch, -1))
        num_plain = sum(part.shape[1] for part in parts)  # context and mask-token queries
        cond = None
        if noisy is not None:
            if not self.diffusion:
                raise ValueError("this predictor was built without diffusion (method ijepa)")
            num_noisy, noisy_tokens = noisy_idx.shape[1], noisy_idx.shape[2]
            flat = noisy_idx.reshape(batch, -1)
            parts.append(self.noisy_proj(noisy.reshape(batch, -1, noisy.shape[-1])))
            parts[-1] = parts[-1] + gather_tokens(pos, flat)
            groups.append(
                num_masked + torch.arange(num_noisy, device=device).repeat_interleave(noisy_tokens)
            )
            valid.append(None if noisy_valid is None else noisy_valid.reshape(batch, -1))
            cond = self.time_embed(noise_level.expand(batch, num_noisy))  # (B, Q, D)
        x = torch.cat(parts, dim=1)
        key_valid = None
        if any(v is not None for v in valid):
            key_valid = torch.cat(
                [
                    torch.ones_like(part[..., 0], dtype=torch.bool) if v is None else v
                    for part, v in zip(parts, valid, strict=True)
                ],
                dim=1,
            )
        attn_mask = self._attention_mask(torch.cat(groups), key_valid)
        for i, block in enumerate(self.blocks):
            modulation = None if cond is None else self.modulation[i](cond)  # (B, Q, 6D)
            x = block(x, attn_mask=attn_mask, modulation=modulation, start=num_plain)
        x = self.out_proj(self.norm(x[:, num_ctx:]))
        masked = denoised = None
        if num_masked:
            masked = x[:, : num_masked * target_idx.shape[2]].reshape(
                batch, num_masked, target_idx.shape[2], -1
            )
        if num_noisy:
            denoised = x[:, num_plain - num_ctx :].reshape(batch, num_noisy, noisy_idx.shape[2], -1)
        return PredictorOutput(masked=masked, denoised=denoised)

    @staticmethod
    def _attention_mask(groups: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        """Boolean SDPA mask, (1, 1, S, S) or (B, 1, S, S) with padding: every token sees the
        context keys, queries also see their own group's keys, padded keys none."""
        is_ctx = groups < 0
        same_group = (groups[:, None] == groups[None, :]) & ~is_ctx[:, None]
        allowed = is_ctx[None, :] | same_group  # (S, S)
        if key_valid is None:
            return allowed[None, None]
        return (allowed[None] & key_valid[:, None, :]).unsqueeze(1)

    def predict_masked(
        self,
        z_ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        target_idx: torch.Tensor,
        ctx_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """I-JEPA prediction from mask tokens: (B, M, T, De) for target_idx (B, M, T)."""
        return self(z_ctx, ctx_idx, ctx_valid, target_idx=target_idx).masked

    def denoise(
        self,
        z_ctx: torch.Tensor,
        ctx_idx: torch.Tensor,
        target_idx: torch.Tensor,
        noisy: torch.Tensor,
        noise_level: torch.Tensor,
        ctx_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x0 estimate (B, Q, T, De) of noisy targets (B, Q, T, De) at levels (B, Q) or (B, 1)."""
        if noise_level.dim() == 1:
            noise_level = noise_level[:, None]
        return self(
            z_ctx, ctx_idx, ctx_valid, noisy_idx=target_idx, noisy=noisy, noise_level=noise_level
        ).denoised


def build_predictor(model_cfg: ModelConfig, encoder: nn.Module, method: str) -> Predictor:
    """Build the predictor for `encoder`: with diffusion conditioning when method is djepa."""
    return Predictor(
        grid_size=encoder.grid_size,
        encoder_dim=encoder.embed_dim,
        dim=model_cfg.predictor_dim,
        depth=model_cfg.predictor_depth,
        num_heads=model_cfg.predictor_heads,
        diffusion=method == "djepa",
        drop_path=model_cfg.drop_path,
    )
