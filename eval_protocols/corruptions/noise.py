"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper), speckle."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from eval_protocols.corruptions.rng import KeyedRandom


def gaussian_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """x + N(0, c^2) per pixel and channel."""
    return x + rng.normal(0, tuple(x.shape[1:])).to(x.device) * c


@lru_cache(maxsize=16)
def _poisson_table(c: float) -> torch.Tensor:
    """Poisson CDFs for the 256 rates c * k / 255, each shifted by its row index k so the
    flattened table is sorted: one searchsorted then samples every pixel at once."""
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
    return torch.from_numpy(cdf + np.arange(256)[:, None])


def shot_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """Poisson(x c) / c: photon noise with c photons per unit intensity.

    8-bit images (values on the k/255 grid) are sampled exactly by inverting tabulated
    CDFs with one keyed uniform per value; other float images fall back to torch.poisson
    with a keyed generator per image.
    """
    levels = torch.round(x * 255.0)
    if torch.equal(levels / 255.0, x):
        table = _poisson_table(float(c)).to(x.device)
        width = table.shape[1]
        u = rng.uniform(0, tuple(x.shape[1:])).to(x.device, torch.float64)
        row = levels.to(torch.float64)
        pos = torch.searchsorted(table.view(-1), (row + u).reshape(-1), right=True)
        counts = pos.view_as(x) - row.long() * width
        return counts.to(x.dtype) / c
    rates = x.detach().to("cpu", torch.float64) * c
    out = torch.empty_like(rates)
    for i, gen in enumerate(rng.generators(1)):
        out[i] = torch.poisson(rates[i], generator=gen)
    return (out / c).to(x.device, x.dtype)


def impulse_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """A fraction c of values set to 0 or 1 with equal odds (skimage 's&p')."""
    u = rng.uniform(0, tuple(x.shape[1:])).to(x.device)
    # one draw decides both: u < c flips the value, and half of those (u < c/2) are salt
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)


def speckle_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """x + x N(0, c^2): multiplicative noise."""
    return x + x * rng.normal(0, tuple(x.shape[1:])).to(x.device) * c
