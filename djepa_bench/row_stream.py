"""Mini-batches and statistics streamed from a 2-D feature array that need not fit in memory.

A feature array is a torch tensor, or any 2-D array-like with `.shape` whose row slices
`a[i:j]` return numpy arrays (a numpy memmap, a sharded read view). Rows are read in
contiguous chunks; an epoch visits the chunks in a seeded random order and shuffles the rows
of several chunks together in a buffer (the shuffle buffer of tf.data / webdataset), so a
file sorted by class still gives mixed mini-batches, and only a buffer is ever held. A torch
tensor goes through the same index order but rows are gathered directly (no buffer copy), so
a tensor and a memmap of the same values give the same mini-batches. Written here because
torch's DataLoader samples rows one at a time (random reads on a memmap) and none of the
libraries in use streams a memmap in chunks with a shuffle buffer.

Under torch.distributed, every rank draws the same order (same seed) and takes rows
`rank::world` of each global mini-batch; statistics are reduced across ranks.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from djepa_bench.errors import UserError

FeatureArray = Any  # torch.Tensor | 2-D array-like whose row slices are numpy arrays


# Set by local_only(): one rank works alone although a process group exists (eval's
# protocols run on rank 0 after every rank has extracted its shards).
_LOCAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("local_only", default=False)


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within the block, streams and reductions ignore torch.distributed (this rank alone)."""
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def world() -> tuple[int, int]:
    """(rank, world size) of the default torch.distributed group, (0, 1) without one or
    inside local_only()."""
    if dist.is_available() and dist.is_initialized() and not _LOCAL_ONLY.get():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over the ranks (a no-op in one process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def check_features(feats: FeatureArray, what: str = "features") -> tuple[int, int]:
    """(rows, dim) of a 2-D feature array; a UserError for anything else."""
    shape = getattr(feats, "shape", None)
    if shape is None or len(shape) != 2 or not hasattr(feats, "__getitem__"):
        raise UserError(
            f"{what} must be a 2-D tensor or array-like with .shape and row slicing, "
            f"got {type(feats).__name__} of shape {shape}"
        )
    return int(shape[0]), int(shape[1])


def read_rows(
    feats: FeatureArray, start: int, stop: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Rows start:stop as float32 on `device` (one contiguous read)."""
    block = feats[start:stop]
    if not isinstance(block, torch.Tensor):
        block = _tensor(block)
    return block.to(device=device, dtype=torch.float32)


def _tensor(block: np.ndarray) -> torch.Tensor:
    """A tensor of a numpy block (copied when read-only, as a read-only memmap's rows are)."""
    block = np.ascontiguousarray(block)
    return torch.from_numpy(block if block.flags.writeable else block.copy())


def _chunks(rows: np.ndarray, chunk_rows: int) -> list[tuple[int, int, np.ndarray]]:
    """(start, stop, selected global indices) of each chunk holding any of sorted `rows`."""
    if len(rows) == 0:
        return []
    out = []
    for start in range(int(rows[0]) // chunk_rows * chunk_rows, int(rows[-1]) + 1, chunk_rows):
        lo, hi = np.searchsorted(rows, [start, start + chunk_rows])
        if hi > lo:
            out.append((start, start + chunk_rows, rows[lo:hi]))
    return out


def moments(
    feats: FeatureArray,
    rows: np.ndarray | None = None,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (floored at 1e-6) of `rows` (all when None), one pass.

    Accumulates float64 sums of values shifted by the first row read, so a large mean does
    not cancel the variance. Under torch.distributed each rank reads every world-th chunk
    and the sums are reduced. Chunks default to about 128 MB of float64.
    """
    n, dim = check_features(feats)
    chunk_rows = chunk_rows or max(1, 2**24 // dim)
    rows = np.arange(n) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    if len(rows) == 0:
        raise UserError("no rows to compute feature statistics from")
    rank, size = world()
    first = int(rows[0])
    shift = read_rows(feats, first, first + 1).double()[0]
    acc = torch.zeros(2, dim, dtype=torch.float64)
    for start, stop, sel in _chunks(rows, chunk_rows)[rank::size]:
        stop = min(stop, n)
        block = read_rows(feats, start, stop).double()
        if len(sel) < stop - start:
            block = block[torch.from_numpy(sel - start)]
        block -= shift
        acc[0] += block.sum(0)
        acc[1] += block.square().sum(0)
    all_reduce_sum(acc)
    mean = acc[0] / len(rows)
    var = (acc[1] / len(rows) - mean.square()).clamp_min(0.0)
    return (mean + shift).float(), var.sqrt().float().clamp_min(1e-6)


def shuffled_batches(
    feats: FeatureArray,
    rows: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = 64,
    buffer_rows: int = 262144,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (float32 rows on device, their global indices), len(rows) // batch_size.

    Chunks in a seeded random order fill a buffer of at least `buffer_rows` rows, whose rows
    are shuffled and cut into mini-batches; a buffer's remainder joins the next buffer and the
    last partial batch is dropped. Under torch.distributed the yielded rows are this rank's
    share (every world-th row) of the global batch.
    """
    n = check_features(feats)[0]
    rank, size = world()
    chunks = _chunks(np.sort(np.asarray(rows, dtype=np.int64)), chunk_rows)
    order = rng.permutation(len(chunks))
    in_memory = isinstance(feats, torch.Tensor)
    idx_parts: list[np.ndarray] = []
    data_parts: list[torch.Tensor] = []
    held = 0
    for pos, c in enumerate(order):
        start, stop, sel = chunks[c]
        idx_parts.append(sel)
        if not in_memory:
            block = feats[start : min(stop, n)]
            if len(sel) < len(block):
                block = block[sel - start]
            data_parts.append(_tensor(block))
        held += len(sel)
        if held < buffer_rows and pos < len(order) - 1:
            continue
        idx = np.concatenate(idx_parts)
        data = None if in_memory else torch.cat(data_parts)
        perm = rng.permutation(len(idx))
        full = len(idx) // batch_size * batch_size
        for b in range(0, full, batch_size):
            local = perm[b : b + batch_size][rank::size]
            x = feats[torch.from_numpy(idx[local])] if in_memory else data[torch.from_numpy(local)]
            yield x.to(device=device, dtype=torch.float32), torch.from_numpy(idx[local])
        tail = perm[full:]
        idx_parts = [idx[tail]]
        data_parts = [] if in_memory else [data[torch.from_numpy(tail)]]
        held = len(tail)
