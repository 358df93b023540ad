"""Scores of sampled (or deterministic) predictions of target embeddings, per target vector.

Used by the denoising protocol. Samples are (K, N, D): K samples of N target vectors.
"""

from __future__ import annotations

import torch


def pairwise_distance_mean(samples: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance between distinct samples, per target (N,); 0 when K == 1."""
    k = samples.shape[0]
    if k < 2:
        return samples.new_zeros(samples.shape[1])
    per_target = samples.transpose(0, 1)  # (N, K, D)
    distances = torch.cdist(per_target, per_target)  # (N, K, K), zero diagonal
    return distances.sum(dim=(1, 2)) / (k * (k - 1))


def energy_score(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Energy score E||X - y|| - 0.5 E||X - X'|| per target (N,); lower is better.

    A proper scoring rule for multivariate samples (Gneiting & Raftery, 2007). The second
    expectation is over distinct sample pairs, so K identical samples (a deterministic
    prediction) score exactly ||x - y||.
    """
    to_target = (samples - target.unsqueeze(0)).norm(dim=-1).mean(dim=0)
    return to_target - 0.5 * pairwise_distance_mean(samples)


def spread_and_error(samples: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per target group: (spread, error) = RMS sample std and RMS error of the sample mean.

    samples (K, G, T, D), target (G, T, D): each group is one target block of T tokens.
    """
    mean = samples.mean(dim=0)
    spread = samples.var(dim=0, unbiased=False).mean(dim=(1, 2)).sqrt()
    error = (mean - target).pow(2).mean(dim=(1, 2)).sqrt()
    return spread, error


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-D tensors (float64); NaN when either is constant."""
    x = x.double() - x.double().mean()
    y = y.double() - y.double().mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else float("nan")


def token_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per token vector (last dimension)."""
    return torch.nn.functional.cosine_similarity(prediction, target, dim=-1)
