"""Label-free representation metrics on an embedding matrix: RankMe, alpha-ReQ, per-dim std.

All computed in float64. Shared by the representation protocol and the trainer's monitor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023): exp of the entropy of the normalised singular values."""
    z = embeddings.detach().double()
    singular = torch.linalg.svdvals(z)
    p = singular / singular.sum().clamp_min(1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def covariance_eigenvalues(embeddings: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the feature covariance, largest first."""
    z = embeddings.detach().double()
    z = z - z.mean(dim=0, keepdim=True)
    cov = z.T @ z / max(1, z.shape[0] - 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0)


@dataclass(frozen=True)
class PowerLawFit:
    """alpha-ReQ: eigenvalue_i ~ C * i^(-alpha) fitted over ranks [start, end]."""

    alpha: float
    r2: float
    start: int
    end: int


def alpha_req(eigenvalues: torch.Tensor, fit_range: tuple[int, int] = (1, 100)) -> PowerLawFit:
    """Least-squares slope of log eigenvalue vs log rank over 1-based ranks `fit_range`."""
    values = eigenvalues.double()
    start = max(1, fit_range[0])
    end = min(fit_range[1], int((values > 0).sum()))
    if end - start < 1:
        return PowerLawFit(float("nan"), float("nan"), start, end)
    ranks = torch.arange(start, end + 1, dtype=torch.float64)
    x = ranks.log()
    y = values[start - 1 : end].log()
    x_mean, y_mean = x.mean(), y.mean()
    slope = ((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum()
    intercept = y_mean - slope * x_mean
    residual = ((y - (slope * x + intercept)) ** 2).sum()
    total = ((y - y_mean) ** 2).sum()
    r2 = 1.0 - residual / total if total > 0 else torch.tensor(1.0)
    return PowerLawFit(float(-slope), float(r2), start, end)


def feature_std(embeddings: torch.Tensor) -> dict[str, float]:
    """Summary of per-dimension standard deviations (low values reveal collapse)."""
    std = embeddings.detach().double().std(dim=0)
    return {"mean": float(std.mean()), "min": float(std.min()), "max": float(std.max())}
