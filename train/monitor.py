"""Per-epoch health monitor: kNN accuracy, RankMe and feature spread of the target encoder."""

from __future__ import annotations

from collections.abc import Callable

import torch

from djepa_bench.config import KnnConfig
from djepa_bench.data import ImageSplit
from djepa_bench.features import extract_features
from djepa_bench.knn import knn_accuracy
from djepa_bench.spectral import feature_std, rankme


def pooled_encode_fn(encoder: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images -> average-pooled final-layer tokens (B, D), the default evaluation feature."""
    return lambda images: encoder(images).mean(dim=1)


def extract(encode_fn, split: ImageSplit, batch_size: int, device, image_size: int):
    """Features (N, D) float32 on CPU (batched, inference mode, bf16 on GPU)."""
    return extract_features(
        encode_fn, split, batch_size=batch_size, device=device, image_size=image_size
    )


def seeded_subset(split: ImageSplit, size: int, seed: int) -> ImageSplit:
    """A fixed random subset of `size` images (the whole split when it is smaller)."""
    if size >= len(split):
        return split
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[:size].sort().values)


class Monitor:
    """kNN@20 on a small held-out set (bank: train subset; queries: test subset) + spectra.

    The kNN uses `knn`'s (the run's eval.knn) temperature, weighting and backend.
    """

    def __init__(
        self,
        train_split: ImageSplit,
        test_split: ImageSplit,
        size: int,
        image_size: int,
        device: torch.device,
        batch_size: int = 256,
        knn: KnnConfig | None = None,
    ):
        self.bank = seeded_subset(train_split, size, seed=1)
        self.queries = seeded_subset(test_split, size, seed=2)
        self.image_size = image_size
        self.device = device
        self.batch_size = batch_size
        self.knn = knn or KnnConfig()

    def __call__(self, encoder: torch.nn.Module) -> dict[str, float]:
        was_training = encoder.training
        encoder.eval()
        encode = pooled_encode_fn(encoder)
        args = (self.batch_size, self.device, self.image_size)
        bank = extract(encode, self.bank, *args)
        queries = extract(encode, self.queries, *args)
        encoder.train(was_training)
        spread = feature_std(queries)
        return {
            "knn_top1": knn_accuracy(
                bank, self.bank.labels, queries, self.queries.labels, 20, self.knn, self.device
            ),
            "rankme": rankme(queries),
            "feature_std_mean": spread["mean"],
            "feature_std_min": spread["min"],
        }
