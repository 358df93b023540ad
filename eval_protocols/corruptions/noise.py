"""Noise corruptions: gaussian, shot (Poisson) and impulse (salt and pepper) noise."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from djepa_bench.eval_protocols.corruptions.registry import corruption
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


@corruption(
    "gaussian_noise", "noise",
    cifar=[0.04, 0.06, 0.08, 0.09, 0.10], imagenet=[0.08, 0.12, 0.18, 0.26, 0.38],
)  # fmt: skip
def gaussian_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """x + N(0, c^2) per pixel and channel."""
    return x + rng.normal(0, tuple(x.shape[1:])).to(x.device) * c


@lru_cache(maxsize=16)
def _poisson_cdf(c: float) -> torch.Tensor:
    """(256, K) Poisson CDFs of the 256 rates c * k / 255 (K covers 12 std of the largest)."""
    rates = np.arange(256, dtype=np.float64) * c / 255.0
    kmax = int(c + 12 * math.sqrt(c) + 20)
    counts = np.arange(kmax + 1)
    log_pmf = counts[None] * np.log(np.maximum(rates[:, None], 1e-300)) - rates[:, None]
    log_pmf -= np.array([math.lgamma(k + 1) for k in counts])[None]
    pmf = np.exp(log_pmf)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # rate 0: always zero photons
    cdf = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    cdf[:, -1] = 1.0
    return torch.from_numpy(cdf)


def poisson_inverse_cdf(levels: torch.Tensor, u: torch.Tensor, c: float) -> torch.Tensor:
    """Poisson(c * level / 255) draws from uniforms u: the smallest k with CDF(k) > u.

    Starts from the Cornish-Fisher quantile and walks the few wrong guesses to the exact k
    with gathers from the tabulated CDFs; levels: integer-valued (any shape), u: float64.
    """
    cdf = _poisson_cdf(float(c)).to(u.device)
    width = cdf.shape[1]
    flat = cdf.view(-1)
    rate = levels.float() * (c / 255.0)
    z = torch.special.ndtri(u.float().clamp(1e-7, 1 - 1e-7))
    guess = torch.where(rate > 0, rate + rate.sqrt() * z + (z * z - 1) / 6, 0.0)
    k = guess.round_().clamp_(0, width - 1).long().view(-1)
    base = levels.long().view(-1) * width
    u = u.reshape(-1)
    index = base + k
    # first pass over everything (torch.take is the fast gather), then only the wrong ones
    low = flat.take(index) <= u  # CDF(k) <= u: k too small
    high = (k > 0) & (flat.take((index - 1).clamp_min(0)) > u)  # CDF(k-1) > u: too big
    todo = (low | high).nonzero().view(-1)
    for _ in range(width):
        if todo.numel() == 0:
            break
        kk, bb, uu = k[todo], base[todo], u[todo]
        low = flat.take(bb + kk) <= uu
        high = (kk > 0) & (flat.take(bb + (kk - 1).clamp_min(0)) > uu)
        k[todo] = kk + low.long() - high.long()
        todo = todo[low | high]
    return k.view(levels.shape)


@corruption(  # photons per unit intensity
    "shot_noise", "noise", cifar=[500, 250, 100, 75, 50], imagenet=[60, 25, 12, 5, 3]
)
def shot_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """Poisson(x c) / c: photon noise with c photons per unit intensity.

    8-bit images (values on the k/255 grid) are sampled exactly by inverting tabulated
    CDFs with one keyed uniform per value; other float images fall back to torch.poisson
    with a keyed generator per image.
    """
    levels = torch.round(x * 255.0)
    if torch.equal(levels / 255.0, x):
        u = rng.uniform(0, tuple(x.shape[1:])).to(x.device, torch.float64)
        counts = poisson_inverse_cdf(levels.to(torch.float64), u, float(c))
        return counts.to(x.dtype) / c
    rates = x.detach().to("cpu", torch.float64) * c
    out = torch.empty_like(rates)
    for i, gen in enumerate(rng.generators(1)):
        out[i] = torch.poisson(rates[i], generator=gen)
    return (out / c).to(x.device, x.dtype)


@corruption(  # salt-and-pepper fraction
    "impulse_noise", "noise",
    cifar=[0.01, 0.02, 0.03, 0.05, 0.07], imagenet=[0.03, 0.06, 0.09, 0.17, 0.27],
)  # fmt: skip
def impulse_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """A fraction c of values set to 0 or 1 with equal odds (skimage 's&p')."""
    u = rng.uniform(0, tuple(x.shape[1:])).to(x.device)
    # one draw decides both: u < c flips the value, and half of those (u < c/2) are salt
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)
