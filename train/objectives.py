"""The two objectives of DESIGN.md section 1: I-JEPA's L_jepa and D-JEPA's L_jepa + lambda L_diff.

Targets are layer-normed (no affine) target-encoder tokens at each target block. D-JEPA
noises them, z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps with t ~ U{0..T-1} per target
block (and per draw), and the predictor estimates z from z_t, the context and t.
Either method can add VICReg's variance/covariance terms on the pooled context features
(`regularizer.*`, off by default), the anti-collapse term of C-JEPA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from djepa_bench.config import Config, RegularizerConfig
from djepa_bench.errors import UserError
from djepa_bench.masks import MaskBatch
from djepa_bench.models import DiffusionSchedule, PredictorOutput, VisionEncoder
from djepa_bench.models.common import gather_tokens
from djepa_bench.models.encoder import layer_norm_targets

LOSSES = ("smooth_l1", "mse")


class JepaModel(nn.Module):
    """The trainable part: context encoder and predictor (what DDP wraps and AdamW updates)."""

    def __init__(
        self,
        context_encoder: VisionEncoder,
        predictor: nn.Module,
        projector: nn.Module | None = None,
    ):
        super().__init__()
        self.context_encoder = context_encoder
        self.predictor = predictor
        self.projector = projector

    def forward(
        self, images: torch.Tensor, masks: MaskBatch, noisy: NoisyTargets | None = None
    ) -> JepaOutput:
        """Encode the context tokens and predict every target block (and noisy draw)."""
        z_ctx = self.context_encoder(images, masks.context_idx, masks.context_valid)
        prediction = self.predictor(
            z_ctx,
            masks.context_idx,
            masks.context_valid,
            target_idx=masks.target_idx,
            noisy_idx=None if noisy is None else noisy.idx,
            noisy=None if noisy is None else noisy.noisy,
            noise_level=None if noisy is None else noisy.level,
            target_valid=masks.target_valid,
            noisy_valid=None if noisy is None else noisy.valid,
        )
        projected = None
        if self.projector is not None:
            projected = self.projector(pool_context(z_ctx, masks.context_valid))
        return JepaOutput(prediction, z_ctx, masks.context_valid, projected)


def build_projector(encoder_dim: int, width: int) -> nn.Module:
    """VICReg's expander for the anti-collapse terms: Linear-BatchNorm-ReLU-Linear to `width`."""
    return nn.Sequential(
        nn.Linear(encoder_dim, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width)
    )


def projector_for(cfg: RegularizerConfig, encoder_dim: int) -> nn.Module | None:
    """The configured expander, or None when it is off or the terms it would feed are off."""
    if cfg.projector_dim > 0 and cfg.enabled:
        return build_projector(encoder_dim, cfg.projector_dim)
    return None


def pool_context(z_ctx: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Average of each image's real (not padding) context tokens: (B, L, D) -> (B, D)."""
    if valid is None:
        return z_ctx.mean(1)
    weight = valid.to(z_ctx.dtype).unsqueeze(-1)
    return (z_ctx * weight).sum(1) / weight.sum(1).clamp(min=1)


@dataclass
class JepaOutput:
    """What the trainable model returns: the predictions and the context-encoder tokens."""

    prediction: PredictorOutput
    context: torch.Tensor  # (B, L, D_encoder)
    context_valid: torch.Tensor | None  # (B, L) bool, False at padding; None: all real
    projected: torch.Tensor | None = None  # (B, P): the projector's output, if there is one


@dataclass
class NoisyTargets:
    """Noised copies of the targets: Q = draws x M query groups."""

    idx: torch.Tensor  # (B, Q, T) token positions
    clean: torch.Tensor  # (B, Q, T, D) what the predictor must recover
    noisy: torch.Tensor  # (B, Q, T, D)
    level: torch.Tensor  # (B, Q) integer noise levels
    weight: torch.Tensor | None  # (B, Q) min-SNR loss weights, or None
    valid: torch.Tensor | None = None  # (B, Q, T) bool, False at padded tokens; None: all real


@dataclass
class LossParts:
    """The total loss and its parts (scalars; loss_diff is 0 for I-JEPA, loss_reg when off)."""

    loss: torch.Tensor
    loss_jepa: torch.Tensor
    loss_diff: torch.Tensor
    loss_reg: torch.Tensor


@torch.no_grad()
def target_embeddings(target_encoder: VisionEncoder, images: torch.Tensor, masks: MaskBatch):
    """Layer-normed target-encoder tokens at every target block, (B, M, T, D), float32."""
    tokens = layer_norm_targets(target_encoder(images).float())
    batch, blocks, per_block = masks.target_idx.shape
    return gather_tokens(tokens, masks.target_idx.reshape(batch, -1)).reshape(
        batch, blocks, per_block, -1
    )


def draw_noise(
    schedule: DiffusionSchedule, shape: torch.Size | tuple[int, ...], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise levels (B, Q), uniform in [0, T), and Gaussian noise `shape` (B, Q, T, D), float32,
    drawn on the generator's device (kept apart from noising so a compiled step gets tensors)."""
    device = generator.device
    level = torch.randint(0, schedule.timesteps, shape[:2], generator=generator, device=device)
    eps = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return level, eps


def noise_targets(
    schedule: DiffusionSchedule,
    targets: torch.Tensor,
    target_idx: torch.Tensor,
    draws: int,
    generator: torch.Generator | None = None,
    min_snr_gamma: float = 0.0,
    *,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    target_valid: torch.Tensor | None = None,
) -> NoisyTargets:
    """Noise every target block `draws` times: with (levels, eps) from `noise` if given (as
    `draw_noise` returns them for the repeated targets), else drawn from `generator`."""
    clean = targets.repeat(1, draws, 1, 1) if draws > 1 else targets
    idx = target_idx.repeat(1, draws, 1) if draws > 1 else target_idx
    valid = target_valid
    if valid is not None and draws > 1:
        valid = valid.repeat(1, draws, 1)
    level, eps = noise if noise is not None else draw_noise(schedule, clean.shape, generator)
    noisy = schedule.q_sample(clean, level, eps.to(clean.dtype))
    weight = None
    if min_snr_gamma > 0:
        # min-SNR-gamma for an x0 loss is min(SNR, gamma); divided by gamma to stay in (0, 1].
        weight = schedule.snr(level).clamp(max=min_snr_gamma) / min_snr_gamma
    return NoisyTargets(idx=idx, clean=clean, noisy=noisy, level=level, weight=weight, valid=valid)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Element-wise smooth-L1 or squared error (no reduction)."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred.float(), target, reduction="none")
    if kind == "mse":
        return F.mse_loss(pred.float(), target, reduction="none")
    raise UserError(f"unknown loss '{kind}'; use {' or '.join(LOSSES)}")


def _mean_over_real(error: torch.Tensor, valid: torch.Tensor | None, dims) -> torch.Tensor:
    """Mean of `error` (..., T, D) over `dims` counting only real tokens (valid (..., T))."""
    if valid is None:
        return error.mean(dim=dims)
    real = valid.unsqueeze(-1)
    total = torch.where(real, error, 0.0).sum(dim=dims)
    return total / (real.sum(dim=dims) * error.shape[-1])


def jepa_loss(
    predicted: torch.Tensor, targets: torch.Tensor, kind: str, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """L_jepa: mean regression error of mask-token predictions against the targets (over the
    real tokens when `valid` (B, M, T) marks padding)."""
    error = regression_loss(predicted, targets, kind)
    return _mean_over_real(error, valid, tuple(range(error.dim())))


def diffusion_loss(predicted: torch.Tensor, noisy: NoisyTargets, kind: str) -> torch.Tensor:
    """L_diff: mean error of the x0 estimates, per query group weighted by min-SNR if set."""
    error = regression_loss(predicted, noisy.clean, kind)
    per_group = _mean_over_real(error, noisy.valid, (2, 3))  # (B, Q)
    if noisy.weight is not None:
        per_group = per_group * noisy.weight
    return per_group.mean()


def variance_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's terms for (N, D) features: mean hinge of per-dimension std below 1, and the
    sum of squared off-diagonal covariances divided by D."""
    x = features.float()
    x = x - x.mean(0)
    std = torch.sqrt(x.var(0) + 1e-4)
    variance = F.relu(1.0 - std).mean()
    n, d = x.shape
    cov = (x.T @ x) / max(n - 1, 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return variance, off_diagonal.pow(2).sum() / d


def regularizer_loss(out: JepaOutput, cfg: Config) -> torch.Tensor:
    """Weighted variance + covariance terms on the pooled context features, or on their
    projection when the model has a projector (0 when off)."""
    reg = cfg.regularizer
    if not reg.enabled:
        return torch.zeros((), device=out.context.device)
    features = out.projected
    if features is None:
        features = pool_context(out.context, out.context_valid)
    variance, covariance = variance_covariance(features)
    return reg.variance * variance + reg.covariance * covariance


def compute_losses(
    model: nn.Module,
    target_encoder: VisionEncoder,
    schedule: DiffusionSchedule | None,
    images: torch.Tensor,
    masks: MaskBatch,
    cfg: Config,
    generator: torch.Generator | None = None,
    noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossParts:
    """One forward pass of the configured method on a batch; returns the loss parts.

    D-JEPA's noise comes from `noise` ((B, Q) levels and (B, Q, T, D) Gaussian noise, see
    `draw_noise`) when given, else it is drawn from `generator`.
    """
    targets = target_embeddings(target_encoder, images, masks)
    noisy = None
    if cfg.train.method == "djepa":
        d = cfg.diffusion
        noisy = noise_targets(
            schedule, targets, masks.target_idx, d.noise_draws, generator, d.min_snr_gamma,
            noise=noise, target_valid=masks.target_valid,
        )  # fmt: skip
    out = model(images, masks, noisy)
    loss_jepa = jepa_loss(out.prediction.masked, targets, cfg.optim.jepa_loss, masks.target_valid)
    loss_reg = regularizer_loss(out, cfg)
    loss = loss_jepa + loss_reg
    loss_diff = torch.zeros((), device=images.device)
    if noisy is not None:
        loss_diff = diffusion_loss(out.prediction.denoised, noisy, cfg.diffusion.loss)
        loss = loss + cfg.diffusion.lambda_diff * loss_diff
    return LossParts(loss, loss_jepa.detach(), loss_diff.detach(), loss_reg.detach())
