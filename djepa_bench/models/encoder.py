"""ViT encoder (timm Blocks + PatchEmbed, fixed 2-D sin-cos positions, no class token).

`encoder(x)` encodes all patches (the target encoder); `encoder(x, keep_idx, keep_valid)`
encodes only the patches at `keep_idx` (the context encoder), one batched gather, with
padded positions (`keep_valid` False) excluded from attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from djepa_bench.config import ModelConfig, encoder_dims
from djepa_bench.errors import UserError
from djepa_bench.models.common import (
    gather_tokens,
    init_weights,
    key_padding_mask,
    rescale_residual_branches,
    sincos_pos_embed,
)


class VisionEncoder(nn.Module):
    """A ViT over non-overlapping patches that can encode any subset of its tokens."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        pos_embed_scale: float = 1.0,
    ):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.register_buffer(
            "pos_embed",
            pos_embed_scale * sincos_pos_embed(self.grid_size, embed_dim),
            persistent=False,
        )
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.apply(init_weights)
        rescale_residual_branches(self.blocks)
        # LeCun-normal patch projection: unit-variance content tokens whatever the patch size.
        # With I-JEPA's std 0.02 a 4x4x3 patch gives content ~0.14 against position
        # embeddings ~0.7, and small-patch runs collapsed to position-only features.
        weight = self.patch_embed.proj.weight
        nn.init.trunc_normal_(weight, std=weight[0].numel() ** -0.5)

    def embed(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens plus positions, (B, N, D), or only those at keep_idx (B, n, D)."""
        tokens = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        return tokens if keep_idx is None else gather_tokens(tokens, keep_idx)

    def forward(
        self,
        x: torch.Tensor,
        keep_idx: torch.Tensor | None = None,
        keep_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode images (B, C, H, W) -> normed tokens (B, N, D), or (B, n, D) at keep_idx."""
        tokens = self.embed(x, keep_idx)
        mask = key_padding_mask(keep_valid if keep_idx is not None else None)
        for block in self.blocks:
            tokens = block(tokens, attn_mask=mask)
        return self.norm(tokens)

    def intermediate_tokens(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Outputs of the last n blocks (B, N, D), each passed through the final LayerNorm."""
        tokens = self.embed(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i >= len(self.blocks) - n:
                outputs.append(self.norm(tokens))
        return outputs


def build_encoder(model_cfg: ModelConfig, img_size: int, in_chans: int) -> VisionEncoder:
    """Build the encoder described by `model_cfg` for img_size x img_size images."""
    if img_size % model_cfg.patch_size:
        raise UserError(
            f"image size {img_size} is not a multiple of model.patch_size {model_cfg.patch_size}; "
            "set data.image_size or model.patch_size"
        )
    width, depth, heads = encoder_dims(model_cfg)
    return VisionEncoder(
        img_size=img_size,
        patch_size=model_cfg.patch_size,
        in_chans=in_chans,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        drop_path=model_cfg.drop_path,
        pos_embed_scale=model_cfg.pos_embed_scale,
    )


def layer_norm_targets(tokens: torch.Tensor) -> torch.Tensor:
    """I-JEPA's target normalisation: LayerNorm over features without affine parameters."""
    return F.layer_norm(tokens, (tokens.shape[-1],))
