"""Result records (DESIGN.md section 3): building them, appending them safely, reading them back."""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from djepa_bench import __version__
from djepa_bench.errors import UserError

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


def append_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Append records as JSON lines under an exclusive lock, in one write; returns the count.

    Concurrent writers (two `eval`s at once) serialise on the lock and each write lands
    whole, so nothing is lost or interleaved.
    """
    lines = "".join(json.dumps(_plain(r), sort_keys=True) + "\n" for r in records)
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = lines.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return lines.count("\n")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read one .jsonl file of records; a malformed line is an error naming file and line."""
    records = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(
                    f"{path}:{number} is not a JSON record; fix or remove that line"
                ) from None
            missing = [f for f in ("run", "protocol", "metric", "value") if f not in record]
            if missing:
                raise UserError(f"{path}:{number} lacks record fields {', '.join(missing)}")
            records.append(record)
    return records


def results_dir(run_dir: str | os.PathLike) -> Path:
    """The folder of a run directory where evaluation records go."""
    return Path(run_dir) / "results"
