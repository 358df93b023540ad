"""File helpers: atomic writes (temp file + rename), YAML mappings, safe torch loading, hashing.

`os_errors` is the one place that turns an OSError (read-only folder, full disk, no
permission, a file where a folder belongs) into a one-line UserError naming the path and
the cause; the writers and readers of the core use it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from djepa_bench.errors import UserError

_HINTS = {
    errno.ENOSPC: "free some space or choose another folder",
    errno.EDQUOT: "free some space or choose another folder",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "check its permissions or choose another folder",
    errno.EPERM: "check its permissions or choose another folder",
    errno.EISDIR: "a folder is in the way; give a file name",
    errno.ENOTDIR: "a file is in the way where a folder is needed",
    errno.EEXIST: "a file is in the way where a folder is needed",
}


def describe_os_error(
    err: OSError, path: str | os.PathLike | None = None, doing: str = "", hint: str | None = None
) -> str:
    """One line for an OSError: what was being done, to which path, the cause and a hint."""
    where = path if path is not None else err.filename
    cause = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
    hint = "; ".join(h for h in (_HINTS.get(err.errno or 0), hint) if h)
    parts = [f"cannot {doing}" if doing else "", str(where) if where is not None else ""]
    text = " ".join(p for p in parts if p)
    return (f"{text}: {cause}" if text else cause) + (f" ({hint})" if hint else "")


@contextmanager
def os_errors(
    path: str | os.PathLike | None = None, doing: str = "write", hint: str | None = None
) -> Iterator[None]:
    """Re-raise an OSError of the block as a one-line UserError naming `path` and the cause."""
    try:
        yield
    except OSError as err:
        raise UserError(describe_os_error(err, path, doing, hint)) from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: `write(fh)` fills a temp file that then replaces `path`.

    On any failure (a full disk included) `path` keeps its old content, the temp file is
    removed, and an OSError becomes a one-line UserError naming `path`.
    """
    path = Path(path)
    with os_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and reports are meant to be shared
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to `path` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def safe_torch_load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> Any:
    """Load a torch file with weights_only=True (no arbitrary unpickling); `mmap` maps it."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with os_errors(path, "read"), open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error if it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a folder; give a YAML file") from None
    except OSError as err:
        raise UserError(describe_os_error(err, path, "read config file")) from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text file; give a YAML file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections")
    return data
