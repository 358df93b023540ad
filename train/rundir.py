"""The run directory (DESIGN.md section 3): config.yaml, meta.json and log.jsonl."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from djepa_bench import __version__
from djepa_bench.config import Config, to_dict
from djepa_bench.io import atomic_write_text

CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"
LOG_NAME = "log.jsonl"


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
    atomic_write_text(run_dir / CONFIG_NAME, text)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json as a dict ({} when absent or unreadable)."""
    try:
        return json.loads((run_dir / META_NAME).read_text())
    except (OSError, ValueError):
        return {}


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Replace meta.json atomically."""
    atomic_write_text(run_dir / META_NAME, json.dumps(meta, indent=2, sort_keys=False) + "\n")


class TrainingLog:
    """Appends one JSON object per line to log.jsonl (only the main rank writes)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

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
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))
