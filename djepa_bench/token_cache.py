"""Patch tokens (N, T, D) of a frozen encoder, as float16 on disk and memory-mapped.

A stop-gap for token-level protocols (the attentive probe) until the feature cache has a
token accessor of its own: one .npy per (encoder, split, input size), written batch by batch
into a temp file that is renamed into place when complete, read back with mmap_mode="r".
Callers only rely on "an (N, T, D) array-like whose row slicing returns numpy arrays", so
swapping this for the feature cache's token view changes nothing else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from djepa_bench.data import ImageSplit, iterate_batches
from djepa_bench.encoders import Encoder
from djepa_bench.errors import UserError


def token_cache_path(cache_dir: Path, model_id: str, split: ImageSplit, key: str) -> Path:
    """Where tokens keyed by `key` (e.g. FeatureSource.key(split, "tokens")) are kept."""
    model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[:24]
    return Path(cache_dir) / "tokens" / model / f"{split.name}-{split.split}-{key}.npy"


def split_tokens(
    encoder: Encoder,
    split: ImageSplit,
    *,
    path: Path | None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Final patch tokens (N, T, D) float16 of every image of `split`.

    With `path` (see token_cache_path) they are read from (or written to) that file and
    returned memory-mapped; without, they are computed into memory.
    """
    if encoder.tokens is None:
        raise UserError(f"{encoder.model_id} has no patch tokens (e.g. --model pixels)")
    log = log or (lambda msg: None)
    if path is not None and path.is_file():
        tokens = np.load(path, mmap_mode="r")
        if tokens.shape[0] == len(split):
            log(f"tokens {split.name}/{split.split}: reused cache {path}")
            return tokens
    log(f"tokens {split.name}/{split.split}: extracting {len(split)} images")
    out, tmp = None, None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
        os.close(fd)
    device = torch.device(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    try:
        start = 0
        with torch.inference_mode():
            for images, _ in iterate_batches(
                split, batch_size, device=device, train=False, image_size=encoder.image_size
            ):
                with autocast:
                    batch = encoder.tokens(images).to(torch.float16).cpu().numpy()
                if out is None:
                    shape = (len(split), *batch.shape[1:])
                    out = (
                        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
                        if tmp is not None
                        else np.empty(shape, dtype=np.float16)
                    )
                out[start : start + len(batch)] = batch
                start += len(batch)
        if out is None:
            raise UserError(f"split {split.name}/{split.split} is empty")
        if tmp is None:
            return out
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    tokens = np.load(path, mmap_mode="r")
    log(f"tokens {split.name}/{split.split}: extracted {tokens.shape} float16, cached at {path}")
    return tokens
