"""Training batches for one rank: a seeded global order, sharded by rank, resumable mid-epoch.

In-memory splits (<= 96 px) are augmented in batch on the training device with the data
package's crop/flip kernels; the shuffled order depends on (seed, epoch) and each batch's
augmentation on (seed, rank, epoch, batch), so a resumed run skips finished batches
without replaying them. Large on-disk splits go through the data package's DataLoader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from djepa_bench.data import ImageSplit, iterate_batches
from djepa_bench.data.augment import random_hflip, random_resized_crop, to_normalised_float


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (seed, rank, step, purpose...), stable across runs."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator_for(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded from `parts`."""
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))


def shard_indices(n: int, world: int, rank: int, seed: int, epoch: int) -> torch.Tensor:
    """This rank's share of the epoch's global shuffled order (equal length on every rank)."""
    order = torch.randperm(n, generator=generator_for(seed, "order", epoch))
    per_rank = n // world
    return order[rank * per_rank : (rank + 1) * per_rank]


def epoch_batches(
    split: ImageSplit,
    batch_per_rank: int,
    steps: int,
    *,
    rank: int,
    world: int,
    seed: int,
    epoch: int,
    device: torch.device,
    image_size: int,
    crop_scale: tuple[float, float],
    hflip: bool,
    start: int = 0,
    num_workers: int = 2,
) -> Iterator[torch.Tensor]:
    """Yield normalised augmented float images (b, C, H, W) for batches start..steps-1."""
    shard = shard_indices(len(split), world, rank, seed, epoch)
    if not split.in_memory:
        yield from _disk_batches(
            split.subset(shard), batch_per_rank, steps, seed, rank, epoch, device, image_size,
            crop_scale, hflip, start, num_workers,
        )  # fmt: skip
        return
    images = split.images
    for b in range(start, steps):
        idx = shard[b * batch_per_rank : (b + 1) * batch_per_rank]
        generator = generator_for(seed, "augment", rank, epoch, b)
        batch = images[idx.to(images.device)].to(device, non_blocking=True).float()
        batch = random_resized_crop(batch, image_size, crop_scale, generator)
        if hflip:
            batch = random_hflip(batch, generator)
        yield to_normalised_float(batch, split.mean, split.std).contiguous()


def _disk_batches(
    split, batch_per_rank, steps, seed, rank, epoch, device, image_size, crop_scale, hflip,
    start, num_workers,
):  # fmt: skip
    batches = iterate_batches(
        split,
        batch_per_rank,
        device=device,
        train=True,
        generator=generator_for(seed, "disk", rank, epoch),
        image_size=image_size,
        crop_scale=crop_scale,
        hflip=hflip,
        drop_last=True,
        num_workers=num_workers,
    )
    for b, (images, _) in enumerate(batches):
        if b >= steps:
            return
        if b >= start:  # a resumed epoch re-reads (and drops) the batches already trained on
            yield images
