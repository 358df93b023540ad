"""The run directory (DESIGN.md section 3): config.yaml, meta.json, log.jsonl and its lock.

A run directory is locked (fcntl.flock on .train.lock, held by rank 0 for the whole run),
so a second `train` into the same --out stops with one line instead of mixing its logs
and checkpoints into the first one's. OS errors while writing (full disk, read-only
folder, --out naming a file) become one-line UserErrors naming the path and the cause.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from djepa_bench import __version__
from djepa_bench.config import Config, to_dict
from djepa_bench.errors import UserError
from djepa_bench.io import atomic_write_text
from djepa_bench.io import describe_os_error as io_describe_os_error

CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"
LOG_NAME = "log.jsonl"
LOCK_NAME = ".train.lock"


class RunDirError(UserError):
    """A file of the run directory could not be written or read (full disk, read-only, ...)."""


def describe_os_error(err: OSError, path: Path, action: str) -> str:
    """One line naming the path and the cause of an OS error met by a run (io's wording)."""
    resumable = err.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = "then continue with --resume" if resumable else None
    return io_describe_os_error(err, path, action, hint)


@contextmanager
def reporting_os_errors(path: Path, action: str = "write") -> Iterator[None]:
    """Turn an OSError inside the block into a RunDirError naming `path` and the cause."""
    try:
        yield
    except OSError as err:
        raise RunDirError(describe_os_error(err, path, action)) from err


class RunDirLock:
    """An exclusive lock on a run directory, held while one process trains in it."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.created_dir = False
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the run directory if needed and lock it; a one-line error if another holds it."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(
                f"--out {self.run_dir} is a file, not a directory; choose another --out"
            )
        self.created_dir = not self.run_dir.exists()
        with reporting_os_errors(self.run_dir, "create the run directory"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with reporting_os_errors(self.path, "create the lock file"):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(describe_os_error(err, self.path, "lock")) from err
            holder = self._holder()
            raise RunDirError(
                f"{self.run_dir} is in use by another training process{holder}; wait for it to "
                "finish (or stop it), or choose another --out"
            ) from None
        self._fd = fd
        try:  # who holds it, for the message another process prints; best effort
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass

    def _holder(self) -> str:
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return ""
        return f" (pid {pid} on {host})"

    def release(self, remove_if_unused: bool = False) -> None:
        """Unlock; with `remove_if_unused`, also remove a run directory this lock created and
        nothing else was written to (a run that failed before it started)."""
        if self._fd is None:
            return
        if remove_if_unused and self.created_dir:
            others = [p for p in self.run_dir.iterdir() if p.name != LOCK_NAME]
            if not others:
                self.path.unlink(missing_ok=True)
                self.run_dir.rmdir()
        os.close(self._fd)
        self._fd = None


def now_iso() -> str:
    """Local time as an ISO-8601 string with offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def git_revision() -> str | None:
    """The source tree's git commit (with '+dirty' for local changes), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Versions and host facts recorded in meta.json."""
    import timm

    return {
        "djepa_bench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "git_revision": git_revision(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def write_config(run_dir: Path, config: Config) -> None:
    """Save the fully resolved config as config.yaml."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    with reporting_os_errors(run_dir / CONFIG_NAME):
        atomic_write_text(run_dir / CONFIG_NAME, text)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json as a dict ({} when absent or unreadable)."""
    try:
        return json.loads((run_dir / META_NAME).read_text())
    except (OSError, ValueError):
        return {}


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Replace meta.json atomically."""
    path = run_dir / META_NAME
    with reporting_os_errors(path):
        atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=False) + "\n")


def mark_failed(run_dir: Path, status: str, **fields: Any) -> None:
    """Record a run's end state in meta.json even on a full disk: atomically if possible, else
    in place (rewriting the small existing file needs no new space); never raises."""
    meta = read_meta(run_dir)
    meta.update(status=status, finished=now_iso(), **fields)
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
    try:
        atomic_write_text(run_dir / META_NAME, text)
    except OSError:
        try:
            with open(run_dir / META_NAME, "r+") as fh:
                fh.write(text)
                fh.truncate()
        except OSError:
            pass


class TrainingLog:
    """Appends one JSON object per line to log.jsonl (only the main rank writes), and hands each
    row to an optional mirror (TensorBoard)."""

    def __init__(self, path: Path, enabled: bool = True, mirror: Any = None):
        self.path = path
        self.enabled = enabled
        self.mirror = mirror

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with reporting_os_errors(self.path, "append to"), open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.mirror is not None:
            self.mirror.add(row)

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to work a resumed run repeats)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if row.get("step", 0) <= step:
                kept.append(line)
        with reporting_os_errors(self.path):
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
