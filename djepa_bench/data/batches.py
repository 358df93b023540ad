"""Batches of normalised images for training and evaluation, from memory or from disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch.utils.data import DataLoader, Dataset

from djepa_bench.data.augment import random_hflip, random_resized_crop, resize, to_normalised_float
from djepa_bench.data.folder import image_to_uint8_tensor, read_image
from djepa_bench.data.split import ImageSplit
from djepa_bench.errors import UserError


def split_to_device(split: ImageSplit, device: torch.device | str) -> ImageSplit:
    """Return the split with its uint8 images moved to `device` once (e.g. GPU-resident)."""
    if split.images is None or split.images.device == torch.device(device):
        return split
    return replace(split, images=split.images.to(device))


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    split: ImageSplit,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    train: bool = False,
    generator: torch.Generator | None = None,
    image_size: int | None = None,
    crop_scale: tuple[float, float] = (0.3, 1.0),
    hflip: bool = True,
    drop_last: bool = False,
    num_workers: int = 2,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images float32 normalised on `device`, labels int64 on `device`).

    With `train=True` the order is shuffled and images get a random resized crop and flip,
    all drawn from `generator` so a seed fixes the whole epoch. Evaluation batches are in
    order and only resized to `image_size`.
    """
    size = image_size or split.image_size
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if split.in_memory:
        yield from _memory_batches(
            split, batch_size, device, train, generator, size, crop_scale, hflip, drop_last
        )
    else:
        yield from _folder_batches(
            split, batch_size, device, train, generator, size, crop_scale, hflip, drop_last,
            num_workers,
        )  # fmt: skip


def _memory_batches(
    split, batch_size, device, train, generator, size, crop_scale, hflip, drop_last
):
    n = len(split)
    order = torch.randperm(n, generator=generator) if train else torch.arange(n)
    images = split.images
    labels = split.labels
    for b in range(num_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        batch = images[idx.to(images.device)].to(device, non_blocking=True).float()
        if train:
            batch = random_resized_crop(batch, size, crop_scale, generator)
            if hflip:
                batch = random_hflip(batch, generator)
        else:
            batch = resize(batch, size)
        yield (
            to_normalised_float(batch, split.mean, split.std).contiguous(),
            labels[idx].to(device, non_blocking=True),
        )


class _FileDataset(Dataset):
    """Reads image files for large-image splits; transforms are torchvision's."""

    def __init__(self, split: ImageSplit, size: int, train: bool, crop_scale, hflip: bool):
        from torchvision.transforms import v2

        self.files = split.files
        self.labels = split.labels
        self.channels = split.channels
        self.size = size
        if train:
            steps = [v2.RandomResizedCrop(size, scale=crop_scale, antialias=True)]
            if hflip:
                steps.append(v2.RandomHorizontalFlip())
        else:
            steps = [v2.Resize(int(round(size * 256 / 224)), antialias=True), v2.CenterCrop(size)]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        # A worker's exception reaches the main process wrapped in its traceback text, so
        # an unreadable file comes back as data (a blank image and the one-line reason) and
        # the main process raises it (see _folder_batches).
        try:
            image = image_to_uint8_tensor(read_image(self.files[i], self.channels))
        except UserError as err:
            blank = torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)
            return blank, self.labels.new_full((), -1), str(err)
        return self.transform(image), self.labels[i], ""


def _folder_batches(
    split, batch_size, device, train, generator, size, crop_scale, hflip, drop_last, num_workers
):
    loader = DataLoader(
        _FileDataset(split, size, train, crop_scale, hflip),
        batch_size=batch_size,
        shuffle=train,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )
    for images, labels, errors in loader:
        failed = next((e for e in errors if e), None)
        if failed is not None:
            raise UserError(failed)
        images = images.to(device, non_blocking=True).float()
        yield to_normalised_float(images, split.mean, split.std), labels.to(device)
