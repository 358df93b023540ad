"""Diffusion schedules, q_sample and the DDIM sampler."""

from __future__ import annotations

import math

import pytest
import torch

from djepa_bench.config import DiffusionConfig, ModelConfig, build_config
from djepa_bench.errors import UserError
from djepa_bench.models import build_encoder, build_predictor, build_schedule, ddim_sample_targets


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_decreases_from_clean_to_pure_noise(kind):
    schedule = build_schedule(DiffusionConfig(schedule=kind, timesteps=1000))
    abar = schedule.alphas_cumprod
    assert abar.shape == (1000,)
    assert (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.99 and abar[-1] < 1e-3


def test_q_sample_preserves_unit_variance_and_inverts_to_eps():
    schedule = build_schedule(DiffusionConfig())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 16, generator=gen)
    eps = torch.randn(4000, 16, generator=gen)
    t = torch.full((4000,), 500)
    xt = schedule.q_sample(x0, t, eps)
    assert abs(xt.var().item() - 1.0) < 0.05
    torch.testing.assert_close(schedule.eps_from_x0(xt, t, x0), eps, atol=1e-4, rtol=1e-4)


def test_ddim_with_exact_denoiser_returns_clean_data():
    schedule = build_schedule(DiffusionConfig(timesteps=100))
    x0 = torch.randn(8, 4)
    for eta in (0.0, 1.0):
        out = schedule.ddim_sample(lambda x, t: x0, (8, 4), steps=10, eta=eta)
        torch.testing.assert_close(out, x0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_samples_gaussian_data_with_the_right_spread(eta):
    # Data x0 ~ N(0, s^2): the exact posterior mean is E[x0 | x_t] = c_t x_t.
    schedule = build_schedule(DiffusionConfig(timesteps=1000))
    s = 0.5

    def denoise(x, t):
        abar = float(schedule.alphas_cumprod[t])
        return math.sqrt(abar) * s**2 / (abar * s**2 + 1 - abar) * x

    gen = torch.Generator().manual_seed(0)
    samples = schedule.ddim_sample(denoise, (20000,), steps=50, eta=eta, generator=gen)
    assert abs(samples.std().item() - s) < 0.03
    assert abs(samples.mean().item()) < 0.02


def test_ddim_sample_targets_shape_and_determinism():
    cfg = ModelConfig(
        size="nano", embed_dim=32, depth=1, num_heads=2, patch_size=4,
        predictor_dim=32, predictor_depth=1, predictor_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = build_encoder(cfg, 16, 3)
    predictor = build_predictor(cfg, encoder, "djepa").eval()
    schedule = build_schedule(DiffusionConfig(timesteps=50))
    z = torch.randn(2, 5, 32)
    ctx = torch.arange(5).repeat(2, 1)
    targets = torch.tensor([[[8, 9], [12, 13]], [[10, 11], [14, 15]]])
    run = lambda seed: ddim_sample_targets(  # noqa: E731
        predictor, schedule, z, ctx, targets, steps=4, samples=3, eta=1.0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (3, 2, 2, 2, 32)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_unknown_schedule_is_refused_when_the_config_is_built():
    with pytest.raises(UserError, match="'diffusion.schedule' must be one of cosine, linear"):
        build_config(overrides=["diffusion.schedule=sigmoid"])
