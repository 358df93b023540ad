"""Frozen-feature extraction: batched, inference mode, bf16 autocast on GPU.

`extract_features` returns a small split's features in memory (the training monitor);
`iter_features` yields them batch by batch; `extract_to_shards` writes the shards a
`djepa_bench.shards.EntryWriter` assigns to this rank, encoding each shard in batches of
its own, so the files do not depend on the number of ranks. Ranks never gather features:
under torchrun each writes its own shards to disk (see djepa_bench.shards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

from djepa_bench.data import ImageSplit, iterate_batches

if TYPE_CHECKING:
    from djepa_bench.shards import EntryWriter

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
    feature_ndim: int = 2,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start index, float32 CPU features (B, D)) for consecutive batches of `split`.

    `batch_transform(images, start)` may alter each normalised batch before encoding (e.g. a
    corruption seeded by the batch's position); it runs on `device`. `feature_ndim=3`
    accepts token features (B, T, D).
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
                if feats.ndim != feature_ndim or feats.shape[0] != images.shape[0]:
                    want = "(B, D)" if feature_ndim == 2 else f"{feature_ndim} dims, B first"
                    raise ValueError(f"encode_fn must return {want}, got {tuple(feats.shape)}")
                yield start, feats
                start += feats.shape[0]
                if bar is not None:
                    bar[0].update(bar[1], advance=feats.shape[0])
    finally:
        if bar is not None:
            bar[0].stop()


def extract_features(
    encode_fn: EncodeFn,
    split: ImageSplit,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    progress: bool = False,
    *,
    batch_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Features (N, D) float32 on CPU of every image of `split`, in order, in memory.

    `encode_fn` maps normalised images (B, C, H, W) to (B, D). For splits too large to hold,
    use `extract_to_shards` (the feature cache does).
    """
    chunks = [
        f
        for _, f in iter_features(
            encode_fn, split, batch_size, device, image_size, progress, batch_transform
        )
    ]
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks)


def _offset(
    transform: Callable[[torch.Tensor, int], torch.Tensor] | None, offset: int
) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    if transform is None or offset == 0:
        return transform
    return lambda images, start: transform(images, start + offset)


def extract_to_shards(
    encode_fn: EncodeFn,
    split: ImageSplit,
    writer: EntryWriter,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    progress: bool = False,
    *,
    batch_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    feature_ndim: int = 2,
) -> None:
    """Encode and write the shards `writer` assigns to this rank (call inside `with writer`).

    Each shard is its own run of batches starting at the shard's first image, so a batch
    never spans two shards and the bytes written do not depend on how many ranks share
    the work. `batch_transform` receives positions in the whole split.
    """
    total = sum(span.rows for span in writer.my_shards)
    bar = _progress(total, f"features {split.name}/{split.split}", progress)
    try:
        for span in writer.my_shards:
            part = split
            if (span.start, span.stop) != (0, len(split)):
                part = split.subset(torch.arange(span.start, span.stop))
            batches = iter_features(
                encode_fn, part, batch_size, device, image_size, False,
                _offset(batch_transform, span.start), feature_ndim,
            )  # fmt: skip
            with writer.shard(span) as put:
                for _, feats in batches:
                    put(feats)
                    if bar is not None:
                        bar[0].update(bar[1], advance=feats.shape[0])
    finally:
        if bar is not None:
            bar[0].stop()
