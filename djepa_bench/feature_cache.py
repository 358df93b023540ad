"""Frozen features of one encoder on one dataset, computed once and kept on disk.

A cache entry is one .npy file per (encoder model id, encoder choice, pooling, dataset,
split, transform, input size); any change of these is a new key. Features are written into
a memory-mapped temp file batch by batch (bounded memory) and renamed into place when
complete, so a killed extraction never leaves a half entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from djepa_bench.data import ImageSplit, default_cache_dir
from djepa_bench.data.cache import cache_key
from djepa_bench.encoders import Encoder
from djepa_bench.features import extract_features, iter_features
from djepa_bench.io import os_errors


def default_feature_cache_dir() -> Path:
    """<DJEPA_CACHE_DIR or ~/.cache/djepa-bench>/features."""
    return default_cache_dir() / "features"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


class FeatureSource:
    """Features of `encoder` on the named splits, from the disk cache or freshly extracted.

    `get(split, transform=None, batch_transform=None)` returns (N, D) float32 CPU features.
    A transform (e.g. "gaussian_noise-3" for robustness) must name `batch_transform`, a
    deterministic function (images, start_index) -> images applied before encoding; its
    name is part of the cache key. Results are also memoised in memory for this process.
    """

    def __init__(
        self,
        encoder: Encoder,
        splits: dict[str, ImageSplit],
        *,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        distributed: bool = False,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        self.encoder = encoder
        self.splits = splits
        self.cache_dir = Path(cache_dir) if cache_dir else default_feature_cache_dir()
        self.use_cache = use_cache
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.distributed = distributed
        self.progress = progress
        self.log = log or (lambda msg: None)
        self._memo: dict[tuple[str, str | None], torch.Tensor] = {}
        self.hits = 0  # cache entries reused (for logs and tests)
        self.misses = 0

    def split(self, name: str) -> ImageSplit:
        """The split called `name` ("train" or "test")."""
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"no split '{name}'; have {', '.join(self.splits)}") from None

    def labels(self, name: str) -> torch.Tensor:
        """int64 labels of split `name`, aligned with its features."""
        return self.split(name).labels

    def key(self, name: str, transform: str | None = None) -> str:
        """The cache key of a split's features under an optional transform."""
        split = self.split(name)
        size = self.encoder.image_size or split.image_size
        return cache_key(
            self.encoder.cache_id(), split.name, split.split, len(split), split.source,
            _subset_fingerprint(split), size, transform or "clean",
        )  # fmt: skip

    def path(self, name: str, transform: str | None = None) -> Path:
        """Where the cache entry of (split, transform) lives."""
        split = self.split(name)
        model = _safe(self.encoder.model_id.removeprefix("model:"))[:24]
        stem = f"{_safe(split.name)}-{split.split}-{_safe(transform or 'clean')}"
        return self.cache_dir / model / f"{stem}-{self.key(name, transform)}.npy"

    def get(
        self,
        name: str,
        transform: str | None = None,
        batch_transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Features (N, D) of split `name`, optionally with images transformed first."""
        if transform is not None and batch_transform is None:
            raise ValueError("a named transform needs its batch_transform function")
        if transform is None and batch_transform is not None:
            raise ValueError("a batch_transform needs a name (it is part of the cache key)")
        memo_key = (name, transform)
        if memo_key not in self._memo:
            self._memo[memo_key] = self._load_or_extract(name, transform, batch_transform)
        return self._memo[memo_key]

    def _load_or_extract(self, name, transform, batch_transform) -> torch.Tensor:
        split = self.split(name)
        label = f"{split.name}/{split.split}" + (f" [{transform}]" if transform else "")
        path = self.path(name, transform)
        if self.use_cache and path.is_file():
            try:
                feats = torch.from_numpy(np.load(path, mmap_mode="c"))
            except (OSError, ValueError):
                feats = None  # unreadable entry: rebuilt below
            if feats is not None and feats.shape[0] == len(split):
                self.hits += 1
                self.log(f"features {label}: reused cache {path}")
                return feats
        self.misses += 1
        kwargs = dict(
            batch_size=self.batch_size, device=self.device,
            image_size=self.encoder.image_size, progress=self.progress,
            batch_transform=batch_transform,
        )  # fmt: skip
        if self.distributed:
            feats = extract_features(self.encoder.encode, split, distributed=True, **kwargs)
            if self.use_cache and _is_rank0():
                _write_whole(path, feats)
        elif self.use_cache:
            feats = _extract_to_file(self.encoder.encode, split, path, kwargs)
        else:
            feats = extract_features(self.encoder.encode, split, **kwargs)
        where = f", cached at {path}" if self.use_cache else " (cache off)"
        self.log(f"features {label}: extracted {tuple(feats.shape)}{where}")
        return feats


def _subset_fingerprint(split: ImageSplit) -> str | None:
    """For a subset of a split: a hash of exactly which images it holds (None for a full split)."""
    if "subset" not in split.extra:
        return None
    digest = hashlib.sha256(split.labels.numpy().tobytes())
    if split.images is not None:
        digest.update(split.images.cpu().contiguous().numpy().tobytes())
    else:
        digest.update("\n".join(map(str, split.files or [])).encode())
    return digest.hexdigest()[:16]


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


_NO_CACHE_HINT = "or evaluate with --no-cache"


def _write_whole(path: Path, feats: torch.Tensor) -> None:
    with os_errors(path, "write the feature cache entry", _NO_CACHE_HINT):
        _write_whole_unchecked(path, feats)


def _write_whole_unchecked(path: Path, feats: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    os.close(fd)
    try:
        np.save(tmp, feats.numpy())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _extract_to_file(encode, split: ImageSplit, path: Path, kwargs: dict) -> torch.Tensor:
    """Stream features batch by batch into a memory-mapped .npy, then rename it into place."""
    with os_errors(path, "write the feature cache entry", _NO_CACHE_HINT):
        return _extract_to_file_unchecked(encode, split, path, kwargs)


def _extract_to_file_unchecked(encode, split: ImageSplit, path: Path, kwargs: dict) -> torch.Tensor:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    os.close(fd)
    out = None
    try:
        for start, feats in iter_features(encode, split, **kwargs):
            if out is None:
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(split), feats.shape[1])
                )
            out[start : start + feats.shape[0]] = feats.numpy()
        if out is None:
            raise ValueError(f"split {split.name}/{split.split} is empty")
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return torch.from_numpy(np.load(path, mmap_mode="c"))
