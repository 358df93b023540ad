"""Result records (DESIGN.md section 3): building them, appending them safely, reading them back."""

from __future__ import annotations

import fcntl
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from djepa_bench import __version__
from djepa_bench.errors import UserError
from djepa_bench.io import os_errors

RECORD_FIELDS = (
    "run", "method", "seed", "checkpoint_sha256", "dataset", "split", "protocol", "metric",
    "value", "params", "eval_preset", "time_s", "created", "version",
)  # fmt: skip


@dataclass(frozen=True)
class RunIdentity:
    """Who a record is about: the run, its method and seed, and the exact checkpoint."""

    run: str
    method: str
    seed: int
    checkpoint_sha256: str


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """JSON-safe value: numpy/torch scalars to Python, NaN/Inf kept as None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def make_record(
    identity: RunIdentity,
    *,
    dataset: str,
    split: str,
    protocol: str,
    metric: str,
    value: float,
    params: dict[str, Any] | None = None,
    time_s: float = 0.0,
    eval_preset: str | None = None,
) -> dict[str, Any]:
    """One tidy result record with every field of DESIGN.md section 3."""
    return {
        "run": identity.run,
        "method": identity.method,
        "seed": int(identity.seed),
        "checkpoint_sha256": identity.checkpoint_sha256,
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "metric": metric,
        "value": _plain(value),
        "params": _plain(params or {}),
        "eval_preset": eval_preset,
        "time_s": round(float(time_s), 4),
        "created": now_iso(),
        "version": __version__,
    }


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def corrupt_side_file(path: str | os.PathLike) -> Path:
    """Where append_records sets aside a cut last line of `path`: `<path>.corrupt`."""
    path = Path(path)
    return path.with_name(path.name + ".corrupt")


def _tail_start(fd: int, size: int) -> int:
    """Offset just after the last newline of the file (0 when it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - 65536)
        chunk = os.pread(fd, end - begin, begin)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _repair_tail(fd: int, path: Path, warn: Callable[[str], None]) -> int:
    """Make the file end on a newline; return its length afterwards.

    A last line without its newline is either a whole record (the newline is added) or
    what an interrupted write left (it is moved to `<path>.corrupt`, then cut off here).
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = _tail_start(fd, size)
    tail = os.pread(fd, size - start, start)
    if _is_record(tail):
        _write_all(fd, b"\n")
        return size + 1
    side = corrupt_side_file(path)
    with open(side, "ab") as fh:
        fh.write(tail + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.ftruncate(fd, start)
    warn(
        f"{path}: its last line was cut ({len(tail)} bytes, an interrupted write); "
        f"moved it to {side}"
    )
    return start


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def append_records(
    path: str | os.PathLike,
    records: Iterable[dict[str, Any]],
    warn: Callable[[str], None] = _warn,
) -> int:
    """Append records as JSON lines under an exclusive lock, all or nothing; returns the count.

    Concurrent writers (two `eval`s at once) serialise on the lock and each batch lands
    whole, so nothing is lost or interleaved. A batch starts on a fresh line: a cut last
    line left by an earlier interrupted write is set aside first (`_repair_tail`). When a
    write fails part-way (a full disk), the file is truncated back to its length before
    the batch and the failure is a one-line UserError naming the path and the cause.
    """
    lines = "".join(json.dumps(_plain(r), sort_keys=True) + "\n" for r in records)
    if not lines:
        return 0
    path = Path(path)
    data = lines.encode()
    with os_errors(path, "append records to"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            start = _repair_tail(fd, path, warn)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, start)  # all or nothing: drop the part that got written
                raise
        finally:
            os.close(fd)  # closing releases the lock
    return lines.count("\n")


def read_records(
    path: str | os.PathLike, warn: Callable[[str], None] = _warn
) -> list[dict[str, Any]]:
    """Read one .jsonl file of records; a malformed line is an error naming file and line.

    A cut last line (no newline, not a whole record: an interrupted write) is skipped with
    a warning instead; the next append sets it aside in `<path>.corrupt`. Reading takes a
    shared lock, so an append in progress is never mistaken for a cut line.
    """
    with os_errors(path, "read records from"), open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        except OSError:
            pass  # a file system without locks: read anyway
        data = fh.read()
    lines = data.split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            if number == len(lines):  # no newline after it: the tail of a cut write
                warn(f"{path}:{number} is a cut last line (an interrupted write); skipped it")
                continue
            raise UserError(
                f"{path}:{number} is not a JSON record; fix or remove that line"
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number} is not a JSON object; fix or remove that line")
        missing = [f for f in ("run", "protocol", "metric", "value") if f not in record]
        if missing:
            raise UserError(f"{path}:{number} lacks record fields {', '.join(missing)}")
        records.append(record)
    return records


def results_dir(run_dir: str | os.PathLike) -> Path:
    """The folder of a run directory where evaluation records go."""
    return Path(run_dir) / "results"
