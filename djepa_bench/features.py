"""Frozen-feature extraction: batched, inference mode, bf16 autocast on GPU, optional sharding.

`extract_features` is the one entry point (CONTRACT.md); `iter_features` yields the same
features batch by batch so callers (the on-disk feature cache) can write them as they come
and keep memory bounded. With `distributed=True` inside a torchrun launch, each rank
encodes a contiguous shard and the shards are gathered so every rank gets all features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext

import torch
import torch.distributed as dist

from djepa_bench.data import ImageSplit, iterate_batches

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    task = bar.add_task(description, total=total)
    return bar, task


def iter_features(
    encode_fn: EncodeFn,
    split: ImageSplit,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    progress: bool = False,
    batch_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start index, float32 CPU features (B, D)) for consecutive batches of `split`.

    `batch_transform(images, start)` may alter each normalised batch before encoding (e.g. a
    corruption seeded by the batch's position); it runs on `device`.
    """
    device = torch.device(device)
    bar = _progress(len(split), f"features {split.name}/{split.split}", progress)
    start = 0
    try:
        with torch.inference_mode():
            for images, _ in iterate_batches(
                split, batch_size, device=device, train=False, image_size=image_size
            ):
                if batch_transform is not None:
                    images = batch_transform(images, start)
                with _autocast(device):
                    feats = encode_fn(images)
                feats = feats.float().cpu()
                if feats.ndim != 2 or feats.shape[0] != images.shape[0]:
                    raise ValueError(f"encode_fn must return (B, D), got {tuple(feats.shape)}")
                yield start, feats
                start += feats.shape[0]
                if bar is not None:
                    bar[0].update(bar[1], advance=feats.shape[0])
    finally:
        if bar is not None:
            bar[0].stop()


def _shard_bounds(n: int, rank: int, world: int) -> tuple[int, int, int]:
    per = -(-n // world)
    lo = min(n, rank * per)
    return lo, min(n, lo + per), per


def extract_features(
    encode_fn: EncodeFn,
    split: ImageSplit,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    progress: bool = False,
    *,
    distributed: bool = False,
    batch_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Features (N, D) float32 on CPU of every image of `split`, in order.

    `encode_fn` maps normalised images (B, C, H, W) to (B, D). With `distributed=True` and
    an initialised process group of size > 1, every rank must call this; each encodes its
    shard and all ranks return the full gathered tensor.
    """
    if distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _extract_distributed(
            encode_fn, split, batch_size, device, image_size, progress, batch_transform
        )
    chunks = [
        f
        for _, f in iter_features(
            encode_fn, split, batch_size, device, image_size, progress, batch_transform
        )
    ]
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks)


def _extract_distributed(encode_fn, split, batch_size, device, image_size, progress, transform):
    rank, world = dist.get_rank(), dist.get_world_size()
    lo, hi, per = _shard_bounds(len(split), rank, world)
    shard = split.subset(torch.arange(lo, hi))
    offset_transform = None
    if transform is not None:

        def offset_transform(images: torch.Tensor, start: int) -> torch.Tensor:
            return transform(images, start + lo)

    chunks = [
        f
        for _, f in iter_features(
            encode_fn, shard, batch_size, device, image_size, progress and rank == 0,
            offset_transform,
        )
    ]  # fmt: skip
    local = torch.cat(chunks) if chunks else None
    # Ranks agree on the width first (an empty last shard has no features of its own).
    width = torch.tensor([local.shape[1] if local is not None else 0])
    comm_device = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    width = width.to(comm_device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    dim = int(width.item())
    padded = torch.zeros(per, dim, device=comm_device)
    if local is not None:
        padded[: local.shape[0]] = local.to(comm_device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    out = []
    for r, part in enumerate(gathered):
        r_lo, r_hi, _ = _shard_bounds(len(split), r, world)
        out.append(part[: r_hi - r_lo].cpu())
    return torch.cat(out)
