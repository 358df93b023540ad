"""Frozen features of one encoder on one dataset, computed once and kept on disk as shards.

A cache entry is a folder of fixed-size shards plus a manifest (djepa_bench.shards) for
one key: (encoder model id, encoder choice, pooling, dataset, split, subset, transform,
input size); any change of these is a new key. The stored dtype (eval.feature_dtype:
float16 by default, float32 as an option) is part of the folder name, not of the key.
Extraction writes shard by shard (one batch in memory), under torchrun each rank its own
shards; the entry appears only when complete, and SIGTERM leaves no temporary folder.

What a protocol gets (the contract): `array(split)` -> a read-only 2-D array-like over the
shards (`.shape`, `len()`, `x[a:b]` / `x[idx]` -> numpy rows in the stored dtype; see
djepa_bench.shards.ShardedArray), for streaming over sets of any size; `get(split)` -> the
same features materialised as a float32 torch tensor (N, D), for sets that fit in memory;
`tokens(split)` -> (N, T, D) patch tokens stored the same way, when the encoder has them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from djepa_bench.data import ImageSplit, default_cache_dir
from djepa_bench.data.cache import cache_key
from djepa_bench.encoders import Encoder
from djepa_bench.errors import UserError
from djepa_bench.features import extract_to_shards
from djepa_bench.io import os_errors
from djepa_bench.shards import (
    EntryWriter,
    ShardedArray,
    open_entry,
    process_group,
    read_manifest,
)

BatchTransform = Callable[[torch.Tensor, int], torch.Tensor]
_ids = itertools.count()


def default_feature_cache_dir() -> Path:
    """<DJEPA_CACHE_DIR or ~/.cache/djepa-bench>/features."""
    return default_cache_dir() / "features"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


class FeatureSource:
    """Features of `encoder` on the named splits, from the disk cache or freshly extracted.

    `array(split, transform=None, batch_transform=None)` is the streaming view,
    `get(...)` the float32 tensor, `tokens(split)` the patch tokens (module docstring).
    A transform (e.g. "gaussian_noise-3" for robustness) must name `batch_transform`, a
    deterministic function (images, start_index) -> images applied before encoding; its
    name is part of the cache key. Results are memoised in memory for this process.
    With `use_cache=False` the shards go to a scratch folder removed by `close()` (or at
    exit). With `distributed=True` inside torchrun every rank must call the same methods
    in the same order; each encodes its own shards.
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
        feature_dtype: str = "float16",
        shard_rows: int = 8192,
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
        self.feature_dtype = feature_dtype
        self.shard_rows = shard_rows
        self._arrays: dict[tuple[str, str | None, str], ShardedArray] = {}
        self._memo: dict[tuple[str, str | None], torch.Tensor] = {}
        self._scratch: list[Path] = []
        self._finalizer = weakref.finalize(self, _remove_all, self._scratch)
        self.hits = 0  # cache entries reused (for logs and tests)
        self.misses = 0

    def with_splits(self, splits: dict[str, ImageSplit], **changes: Any) -> FeatureSource:
        """A source over other splits with this one's encoder, cache and settings."""
        settings = dict(
            cache_dir=self.cache_dir, use_cache=self.use_cache, batch_size=self.batch_size,
            device=self.device, distributed=self.distributed, progress=self.progress,
            log=self.log, feature_dtype=self.feature_dtype, shard_rows=self.shard_rows,
        )  # fmt: skip
        return FeatureSource(self.encoder, splits, **(settings | changes))

    def close(self) -> None:
        """Drop memoised features and remove scratch shards (use_cache=False)."""
        self._arrays.clear()
        self._memo.clear()
        _remove_all(self._scratch)

    def split(self, name: str) -> ImageSplit:
        """The split called `name` ("train" or "test")."""
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"no split '{name}'; have {', '.join(self.splits)}") from None

    def labels(self, name: str) -> torch.Tensor:
        """int64 labels of split `name`, aligned with its features."""
        return self.split(name).labels

    def _image_size(self, split: ImageSplit) -> int:
        return self.encoder.image_size or split.image_size

    def key(self, name: str, transform: str | None = None, kind: str = "features") -> str:
        """The cache key of a split's features (or tokens) under an optional transform."""
        split = self.split(name)
        encoder_id = self.encoder.cache_id()
        if kind == "tokens":
            encoder_id = f"{self.encoder.model_id}|{self.encoder.which}|tokens"
        return cache_key(
            encoder_id, split.name, split.split, len(split), split.source,
            _subset_fingerprint(split), self._image_size(split), transform or "clean",
        )  # fmt: skip

    def path(self, name: str, transform: str | None = None, kind: str = "features") -> Path:
        """The folder of the cache entry of (split, transform)."""
        split = self.split(name)
        model = _safe(self.encoder.model_id.removeprefix("model:"))[:24]
        tokens = "-tokens" if kind == "tokens" else ""
        stem = f"{_safe(split.name)}-{split.split}{tokens}-{_safe(transform or 'clean')}"
        suffix = {"float16": "f16", "float32": "f32"}[self.feature_dtype]
        return self.cache_dir / model / f"{stem}-{self.key(name, transform, kind)}-{suffix}"

    def array(
        self,
        name: str,
        transform: str | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> ShardedArray:
        """Features (N, D) of split `name` as a read-only array over the on-disk shards."""
        if transform is not None and batch_transform is None:
            raise ValueError("a named transform needs its batch_transform function")
        if transform is None and batch_transform is not None:
            raise ValueError("a batch_transform needs a name (it is part of the cache key)")
        memo_key = (name, transform, "features")
        if memo_key not in self._arrays:
            self._arrays[memo_key] = self._load_or_extract(
                name, transform, batch_transform, "features"
            )
        return self._arrays[memo_key]

    def get(
        self,
        name: str,
        transform: str | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> torch.Tensor:
        """Features (N, D) of split `name` as a float32 CPU tensor (for sets that fit)."""
        memo_key = (name, transform)
        if memo_key not in self._memo:
            self._memo[memo_key] = self.array(name, transform, batch_transform).tensor()
        return self._memo[memo_key]

    def tokens(self, name: str) -> ShardedArray:
        """Patch tokens (N, T, D) of split `name`, stored and read like the features."""
        if self.encoder.tokens is None:
            raise UserError(f"{self.encoder.model_id} has no patch tokens (use a ViT encoder)")
        memo_key = (name, None, "tokens")
        if memo_key not in self._arrays:
            self._arrays[memo_key] = self._load_or_extract(name, None, None, "tokens")
        return self._arrays[memo_key]

    def _load_or_extract(self, name, transform, batch_transform, kind) -> ShardedArray:
        split = self.split(name)
        what = "tokens" if kind == "tokens" else "features"
        label = f"{what} {split.name}/{split.split}" + (f" [{transform}]" if transform else "")
        path = self.path(name, transform, kind)
        group = process_group(self.distributed)
        if self.use_cache:
            entry = group.broadcast(_usable(path, len(split)))
            if entry:
                self.hits += 1
                self.log(f"{label}: reused cache {path}")
                return open_entry(path)
        self.misses += 1
        self.log(f"{label}: extracting {len(split)} images")  # before a possibly long pass
        source = {
            "dataset": split.name, "split": split.split, "images": len(split),
            "source": str(split.source), "subset": _subset_fingerprint(split),
            "labels_sha256": hashlib.sha256(split.labels.numpy().tobytes()).hexdigest(),
            "transform": transform or "clean", "encoder": self.encoder.cache_id(),
            "kind": kind, "image_size": self._image_size(split),
            "key": self.key(name, transform, kind),
        }  # fmt: skip
        encode = self.encoder.tokens if kind == "tokens" else self.encoder.encode
        # A full disk or a read-only cache folder is one line naming the entry, not a traceback.
        with os_errors(path, "write the feature cache entry", "or evaluate with --no-cache"):
            writer = EntryWriter(
                path, len(split), self.shard_rows, self.feature_dtype, source=source, group=group,
                **({} if self.use_cache else self._scratch_options(group)),
            )  # fmt: skip
            if not self.use_cache and group.rank == 0:
                self._scratch.append(writer.folder)  # removed by close() or at exit
            with writer:
                extract_to_shards(
                    encode, split, writer, self.batch_size, self.device, self.encoder.image_size,
                    self.progress and group.rank == 0, batch_transform=batch_transform,
                    feature_ndim=3 if kind == "tokens" else 2,
                )  # fmt: skip
        entry = open_entry(path if self.use_cache else writer.folder)
        where = f", cached at {path}" if self.use_cache else " (cache off)"
        self.log(f"{label}: extracted {entry.shape} {self.feature_dtype}{where}")
        return entry

    def _scratch_options(self, group) -> dict[str, Any]:
        """Where uncached shards go: a private temp folder, or beside the cache for ranks."""
        if group.world > 1:
            parent = self.cache_dir  # every rank must see it
        else:
            parent = Path(tempfile.mkdtemp(prefix="djepa-features-"))
            self._scratch.append(parent)
        return {"commit": False, "scratch_parent": parent, "tag": f".scratch{next(_ids)}"}


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    paths.clear()


def _usable(path: Path, count: int) -> bool:
    manifest = read_manifest(path)
    if manifest is None or manifest.get("count") != count:
        return False
    try:
        open_entry(path)
    except (OSError, ValueError, KeyError):
        return False  # unreadable entry: rebuilt
    return True


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
