"""Row arrays on disk as fixed-size shards (fp16 or fp32 .npy files) with a manifest.

Features of ImageNet-size splits do not fit one process's memory, so extraction writes
them here shard by shard and evaluation reads them back memory-mapped. numpy's .npy format
and memory maps do the IO; the layout, the atomic commit and the multi-shard view are
written here because no library we depend on does them (zarr or webdataset would be a new
dependency for a few hundred lines).

An entry is a folder:

    manifest.json        format, count, row_shape, dtype, shard_rows, the images it holds
                         (dataset, split, fingerprint, labels sha256) and per shard: file,
                         start, stop, bytes, sha256, the rank that wrote it
    shard-00000.npy ...  rows [i * shard_rows, (i + 1) * shard_rows) of the split, in order

Shard boundaries depend only on (count, shard_rows), never on the number of ranks, and
the extraction encodes each shard in batches of its own, so a run on any number of ranks
writes the same files bit for bit. Rows may be vectors (N, D) or token grids (N, T, D).

Writing (`EntryWriter`): every rank writes its own shards into one temporary folder
(`.NAME.tmp-HOST-PID`) and never holds more than one batch; after all ranks are done,
rank 0 writes the manifest (atomically) and renames the folder into place, so an entry is
either complete or absent. SIGTERM during writing removes the temporary folder; one left
by a killed process (SIGKILL, power loss) is swept by the next writer on that host.

Reading (`open_entry` -> `ShardedArray`), the contract the protocols code against:
- `x.shape` (count, *row_shape), `x.dtype` (stored: float16 or float32), `len(x)`, `x.ndim`;
- `x[a:b]` -> numpy array of the rows (a copy, stored dtype), crossing shards as needed;
  `x[i]` -> one row; `x[idx]` with an integer array / list / tensor or a boolean mask ->
  those rows in that order; `x[rows, cols]` applies `cols` to the selected rows;
- `x.blocks(rows)` -> (start, numpy block) over all rows, for streaming passes;
- `x.tensor()` -> the whole array as a float32 torch tensor (only for sets that fit);
- `x.verify()` re-hashes every shard against the manifest.
A numpy array or memmap satisfies the same slicing contract, so protocols that only slice
(`x.shape`, `x[a:b]`) accept either.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from djepa_bench.errors import UserError
from djepa_bench.io import atomic_write_text

FORMAT = "djepa-bench-shards/1"
MANIFEST = "manifest.json"
DTYPES = {"float16": np.float16, "float32": np.float32}
_OPEN_SHARDS = 4  # memory maps kept open at once: resident pages stay bounded


@dataclass(frozen=True)
class ShardSpan:
    """Shard `index` holds rows [start, stop) of the entry."""

    index: int
    start: int
    stop: int

    @property
    def file(self) -> str:
        return f"shard-{self.index:05d}.npy"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def shard_plan(count: int, shard_rows: int) -> list[ShardSpan]:
    """Fixed-size shards covering `count` rows (the last one may be shorter)."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    return [
        ShardSpan(i, start, min(count, start + shard_rows))
        for i, start in enumerate(range(0, count, shard_rows))
    ]


def rank_shards(plan: list[ShardSpan], rank: int, world: int) -> list[ShardSpan]:
    """The contiguous run of shards rank `rank` of `world` writes (sizes differ by <= 1)."""
    per, extra = divmod(len(plan), world)
    lo = rank * per + min(rank, extra)
    return plan[lo : lo + per + (1 if rank < extra else 0)]


# --- writing ------------------------------------------------------------------------------


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: Path) -> list[Path]:
    """Remove temporary folders in `folder` left by dead processes of this host."""
    removed = []
    if not folder.is_dir():
        return removed
    tag = f"-{_host()}-"
    for path in folder.iterdir():
        name = path.name
        if not (name.startswith(".") and (".tmp-" in name or ".old-" in name) and tag in name):
            continue
        try:
            pid = int(name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit(143) so `finally` clauses clean up.

    Only where SIGTERM still has its default action (a caller's own handler is kept) and
    only in the main thread (where Python delivers signals).
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handle(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _ShardFile:
    """One .npy shard written row block by row block, hashed as it goes."""

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.rows, self.row_shape, self.dtype = path, rows, row_shape, dtype
        self.written = 0
        self.nbytes = 0
        self.digest = hashlib.sha256()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": (rows, *row_shape),
            },
        )
        self.fh = open(path, "wb")  # noqa: SIM115 (open across appends; closed in close())
        self._write(header.getvalue())

    def _write(self, data: bytes | memoryview) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.nbytes += len(data)

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} in a shard of {self.row_shape}")
        if self.written + block.shape[0] > self.rows:
            raise ValueError(f"shard {self.path.name} overfilled")
        self._write(memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B"))
        self.written += block.shape[0]

    def close(self) -> str:
        if self.written != self.rows:
            raise ValueError(f"shard {self.path.name} got {self.written} of {self.rows} rows")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.digest.hexdigest()


class EntryWriter:
    """Writes one entry from every rank; see the module docstring for the protocol.

    Use as a context manager around the extraction (all ranks of a process group must):

        with EntryWriter(final, count, shard_rows, "float16", source=...) as writer:
            for span in writer.my_shards:
                with writer.shard(span) as put:
                    put(rows)          # (B, *row_shape) blocks, in order
        # now `final` exists (or, with commit=False, writer.folder holds the entry)

    `commit=False` leaves the finished entry in its temporary folder (scratch use, e.g.
    --no-cache); the caller removes it.
    """

    def __init__(
        self,
        final: Path,
        count: int,
        shard_rows: int,
        dtype: str,
        *,
        source: dict[str, Any] | None = None,
        group: Any = None,
        commit: bool = True,
        scratch_parent: Path | None = None,
        tag: str = "",
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        if count < 1:
            raise ValueError("an entry needs at least one row")
        self.final = Path(final)
        self.count, self.shard_rows, self.dtype_name = count, shard_rows, dtype
        self.dtype = np.dtype(DTYPES[dtype])
        self.source = dict(source or {})
        self.commit = commit
        self.dist = group if group is not None else _ProcessGroup.current()
        self.plan = shard_plan(count, shard_rows)
        self.my_shards = rank_shards(self.plan, self.dist.rank, self.dist.world)
        parent = scratch_parent if scratch_parent is not None else self.final.parent
        name = self.dist.broadcast(f".{self.final.name}{tag}.tmp-{_host()}-{os.getpid()}")
        self.folder = Path(parent) / name
        self.infos: list[dict[str, Any]] = []
        self.row_shape: tuple[int, ...] | None = None
        self._signals = sigterm_raises()

    def __enter__(self) -> EntryWriter:
        self._signals.__enter__()
        try:
            if self.dist.rank == 0:
                sweep_stale(self.folder.parent)
            self.folder.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self._signals.__exit__(None, None, None)
            raise
        return self

    @contextmanager
    def shard(self, span: ShardSpan) -> Iterator[Any]:
        """A `put(rows)` function filling shard `span`; the file is finished on exit."""
        state: dict[str, _ShardFile] = {}

        def put(rows: np.ndarray | torch.Tensor) -> None:
            if isinstance(rows, torch.Tensor):
                rows = rows.detach().cpu().numpy()
            if "file" not in state:
                self.row_shape = self.row_shape or tuple(rows.shape[1:])
                state["file"] = _ShardFile(
                    self.folder / span.file, span.rows, self.row_shape, self.dtype
                )
            state["file"].append(_cast_checked(rows, self.dtype, self.dtype_name))

        try:
            yield put
            if "file" not in state:
                raise ValueError(f"shard {span.file} received no rows")
            digest = state["file"].close()
        finally:
            if "file" in state and not state["file"].fh.closed:
                state["file"].fh.close()
        self.infos.append(
            {"file": span.file, "start": span.start, "stop": span.stop,
             "bytes": state["file"].nbytes, "sha256": digest, "rank": self.dist.rank}
        )  # fmt: skip

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        finally:
            self._signals.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _finish(self) -> None:
        everyone = self.dist.gather((self.infos, self.row_shape))
        if self.dist.rank == 0:
            shapes = {tuple(shape) for _, shape in everyone if shape is not None}
            if len(shapes) != 1:
                raise ValueError(f"ranks wrote rows of different shapes: {sorted(shapes)}")
            infos = sorted((i for part, _ in everyone for i in part), key=lambda i: i["start"])
            if [i["file"] for i in infos] != [s.file for s in self.plan]:
                raise ValueError("the ranks' shards do not cover the entry")
            manifest = {
                "format": FORMAT,
                "count": self.count,
                "row_shape": list(shapes.pop()),
                "dtype": self.dtype_name,
                "shard_rows": self.shard_rows,
                "source": self.source,
                "world_size": self.dist.world,
                "shards": infos,
            }
            atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
            if self.commit:
                _replace_folder(self.folder, self.final)
        self.dist.barrier()


def _cast_checked(rows: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = rows.astype(dtype, copy=False)
    if np.isfinite(out).all():
        return out
    if not np.isfinite(rows).all():
        raise UserError("the encoder produced NaN or infinite features; is the checkpoint sound?")
    biggest = float(np.abs(rows).max())
    raise UserError(
        f"features reach {biggest:.3g}, beyond {name}'s range; set eval.feature_dtype=float32"
    )


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`, moving an older `final` aside first (then deleting it)."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{_host()}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(final, old)
        except OSError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process committed the same entry meanwhile: theirs is as good as ours.
        if not (final / MANIFEST).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def process_group(distributed: bool) -> _ProcessGroup:
    """The torch process group's ranks when `distributed` and one is running, else one rank."""
    return _ProcessGroup.current() if distributed else _ProcessGroup()


class _ProcessGroup:
    """Rank, world size and the few collectives the writer needs (no-ops in one process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    @classmethod
    def current(cls) -> _ProcessGroup:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return _TorchGroup(dist.get_rank(), dist.get_world_size())
        return cls()

    def broadcast(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        pass


class _TorchGroup(_ProcessGroup):
    def broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


# --- reading ------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the entry in `folder`, or None when absent, unreadable or foreign."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def open_entry(folder: str | os.PathLike) -> ShardedArray:
    """The entry in `folder` as a read-only ShardedArray; ValueError when incomplete."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder} holds no complete feature entry")
    return ShardedArray(folder, manifest)


class ShardedArray:
    """A read-only (N, *row_shape) array over an entry's memory-mapped shards.

    See the module docstring for the contract. Slices are copies in the stored dtype.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder = Path(folder)
        self.manifest = manifest
        self.dtype = np.dtype(DTYPES[manifest["dtype"]])
        self.row_shape = tuple(int(d) for d in manifest["row_shape"])
        self.shape = (int(manifest["count"]), *self.row_shape)
        self.spans = [ShardSpan(i, s["start"], s["stop"]) for i, s in enumerate(manifest["shards"])]
        self._starts = [s.start for s in self.spans]
        if (
            self.spans[0].start != 0
            or self.spans[-1].stop != self.shape[0]
            or any(a.stop != b.start for a, b in zip(self.spans, self.spans[1:], strict=False))
        ):
            raise ValueError(f"{self.folder}: shards do not tile the {self.shape[0]} rows")
        for info in manifest["shards"]:
            path = self.folder / info["file"]
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise ValueError(f"{path} is missing or cut short")
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.spans)})"

    def _shard(self, i: int) -> np.ndarray:
        if i in self._maps:
            self._maps.move_to_end(i)
            return self._maps[i]
        path = self.folder / self.manifest["shards"][i]["file"]
        mm = np.load(path, mmap_mode="r")
        if mm.shape != (self.spans[i].rows, *self.row_shape) or mm.dtype != self.dtype:
            raise ValueError(f"{path} holds {mm.shape} {mm.dtype}, not what the manifest says")
        self._maps[i] = mm
        while len(self._maps) > _OPEN_SHARDS:
            self._maps.popitem(last=False)
        return mm

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(0, stop - start), *self.row_shape), dtype=self.dtype)
        i = bisect_right(self._starts, start) - 1
        pos = start
        while pos < stop:
            span = self.spans[i]
            end = min(stop, span.stop)
            out[pos - start : end - start] = self._shard(i)[pos - span.start : end - span.start]
            pos, i = end, i + 1
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size, *self.row_shape), dtype=self.dtype)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        for i in np.unique(which):
            mask = which == i
            out[mask] = self._shard(int(i))[idx[mask] - self.spans[i].start]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        single = isinstance(key, (int, np.integer))
        if single:
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            out = self._range(i, i + 1)[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            out = (
                self._range(start, stop) if step == 1 else self._take(np.arange(start, stop, step))
            )
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (self.shape[0],):
                    raise IndexError(f"boolean mask of shape {idx.shape} for {self.shape[0]} rows")
                idx = np.flatnonzero(idx)
            if idx.dtype.kind not in "iu":
                raise IndexError(
                    f"rows must be indexed by integers, a slice or a mask, not {key!r}"
                )
            out = self._take(idx.astype(np.int64).ravel())
        if rest:
            out = out[rest] if single else out[(slice(None), *rest)]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._range(0, self.shape[0])
        return out if dtype is None else out.astype(dtype, copy=False)

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(start, rows [start, start + len)) over the whole array; default: one per shard."""
        if rows is None:
            for i, span in enumerate(self.spans):
                yield span.start, np.array(self._shard(i))
            return
        for start in range(0, self.shape[0], rows):
            yield start, self._range(start, min(self.shape[0], start + rows))

    def tensor(self) -> torch.Tensor:
        """All rows as one float32 torch tensor (materialised: only for sets that fit)."""
        out = torch.empty(self.shape, dtype=torch.float32)
        for start, block in self.blocks():
            out[start : start + block.shape[0]] = torch.from_numpy(block.astype(np.float32))
        return out

    def verify(self) -> None:
        """Raise ValueError unless every shard's sha256 matches the manifest."""
        from djepa_bench.io import sha256_file

        for info in self.manifest["shards"]:
            path = self.folder / info["file"]
            if sha256_file(path) != info["sha256"]:
                raise ValueError(f"{path} does not match its checksum in the manifest")
