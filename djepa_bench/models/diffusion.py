"""Variance-preserving diffusion on target embeddings: schedules, q_sample, DDIM sampling.

Timesteps are integers 0..T-1 (index t means t+1 noising steps); the predictor estimates
x0 (the clean target), and the DDIM sampler turns x0 estimates into a trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from djepa_bench.config import DiffusionConfig
from djepa_bench.errors import UserError

SCHEDULES = ("cosine", "linear")


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, betas clipped at 0.999 (float64, length T)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def linear_alphas_cumprod(timesteps: int) -> torch.Tensor:
    """DDPM's linear beta schedule (1e-4 -> 0.02 at T=1000, rescaled for other T)."""
    scale = 1000 / timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class DiffusionSchedule:
    """A VP schedule: z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, t in 0..T-1."""

    def __init__(self, alphas_cumprod: torch.Tensor, kind: str = "cosine"):
        self.kind = kind
        self.alphas_cumprod = alphas_cumprod.double()
        self.timesteps = int(alphas_cumprod.shape[0])

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        """Keep the table on `device`, so noising there copies nothing from the host (a
        blocking host-to-device copy per step would also synchronise the GPU stream)."""
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(t.device)[t.long()].to(like.dtype)
        return abar.reshape(*t.shape, *([1] * (like.dim() - t.dim())))

    def sample_timesteps(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Uniform integer noise levels in [0, T)."""
        t = torch.randint(0, self.timesteps, shape, generator=generator)
        return t.to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean x0 to level t (t's shape is a prefix of x0's, broadcast over the rest)."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar / (1 - abar) at level t (float32)."""
        abar = self.alphas_cumprod.to(t.device)[t.long()]
        return (abar / (1 - abar)).float()

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise implied by x_t and an x0 estimate."""
        abar = self._abar(t, x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt().clamp_min(1e-8)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """S evenly spaced levels from T-1 down to 0 (S >= 1)."""
        if steps < 1:
            raise UserError(f"DDIM needs at least 1 step, got {steps}")
        values = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        return list(dict.fromkeys(values))  # drop duplicates when steps > T

    def ddim_step(
        self,
        x_t: torch.Tensor,
        t: int,
        t_prev: int,
        x0: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One DDIM update from level t to t_prev given the x0 estimate (eta=0: deterministic)."""
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev])
        eps = (x_t - math.sqrt(abar_t) * x0) / math.sqrt(max(1 - abar_t, 1e-12))
        sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
        direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        x_prev = math.sqrt(abar_prev) * x0 + direction
        if sigma > 0:
            noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
            x_prev = x_prev + sigma * noise
        return x_prev

    def ddim_sample(
        self,
        denoise_fn: Callable[[torch.Tensor, int], torch.Tensor],
        shape: tuple[int, ...],
        steps: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Run DDIM from z_T ~ N(0, I); denoise_fn(x_t, t) returns the x0 estimate."""
        x = torch.randn(shape, generator=generator).to(device)
        levels = self.ddim_timesteps(steps)
        for i, t in enumerate(levels):
            x0 = denoise_fn(x, t)
            if i + 1 == len(levels):
                return x0
            x = self.ddim_step(x, t, levels[i + 1], x0, eta, generator)
        return x


def build_schedule(diffusion_cfg: DiffusionConfig) -> DiffusionSchedule:
    """The schedule named by diffusion_cfg.schedule with diffusion_cfg.timesteps levels."""
    make = {"cosine": cosine_alphas_cumprod, "linear": linear_alphas_cumprod}
    abar = make[diffusion_cfg.schedule](diffusion_cfg.timesteps)
    return DiffusionSchedule(abar, diffusion_cfg.schedule)


@torch.no_grad()
def ddim_sample_targets(
    predictor: torch.nn.Module,
    schedule: DiffusionSchedule,
    z_ctx: torch.Tensor,
    ctx_idx: torch.Tensor,
    target_idx: torch.Tensor,
    steps: int,
    samples: int = 1,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    ctx_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """K = `samples` DDIM samples of the target embeddings given the context.

    target_idx (B, M, T) -> (K, B, M, T, De). All K samples of all blocks run as query
    groups of one predictor pass per step (the context is encoded once).
    """
    batch, blocks, tokens = target_idx.shape
    idx = target_idx.repeat(1, samples, 1)  # (B, K*M, T): sample-major groups

    def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
        level = torch.full((batch, samples * blocks), t, dtype=torch.long, device=x_t.device)
        return predictor.denoise(z_ctx, ctx_idx, idx, x_t.to(z_ctx.dtype), level, ctx_valid).to(
            x_t.dtype
        )

    shape = (batch, samples * blocks, tokens, predictor.encoder_dim)
    out = schedule.ddim_sample(denoise, shape, steps, eta, generator, z_ctx.device)
    return out.reshape(batch, samples, blocks, tokens, -1).permute(1, 0, 2, 3, 4).float()
