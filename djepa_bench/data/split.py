"""One split of an image dataset: in-memory uint8 tensor (small images) or a folder (large)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ImageSplit:
    """Images and labels of one dataset split.

    Small images (<= 96 px) live in `images`, a uint8 tensor (N, C, H, W) decoded once.
    Large images stay on disk: `files` lists their paths and `images` is None.
    """

    name: str
    split: str
    classes: list[str]
    labels: torch.Tensor  # int64 (N,)
    mean: tuple[float, ...]  # per-channel, on the 0-1 scale
    std: tuple[float, ...]
    image_size: int
    channels: int
    images: torch.Tensor | None = None
    files: list[str] | None = None
    source: str = ""  # where the data came from (for logs and cache keys)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_memory(self) -> bool:
        """True when the images are a decoded uint8 tensor."""
        return self.images is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor) -> ImageSplit:
        """Return a split holding only `indices` (same order)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageSplit(
            name=self.name,
            split=self.split,
            classes=self.classes,
            labels=self.labels[indices],
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            channels=self.channels,
            images=self.images[indices] if self.images is not None else None,
            files=[self.files[i] for i in indices.tolist()] if self.files is not None else None,
            source=self.source,
            extra=dict(self.extra, subset=len(indices)),
        )
