"""Named training presets: the YAML files beside this module, listed and loaded by name."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

from djepa_bench.errors import UserError
from djepa_bench.io import load_yaml


def presets_dir() -> Path:
    """Return the folder that holds the preset YAML files."""
    return Path(str(resources.files(__name__)))


def preset_names() -> list[str]:
    """Return the names of all shipped presets, sorted."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_description(name: str) -> str:
    """Return the first comment line of a preset file (its one-line description)."""
    for line in (presets_dir() / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def load_preset(name: str) -> dict[str, Any]:
    """Load a preset by name, or a YAML file when `name` is a path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_yaml(path)
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(names)}"
        raise UserError(f"unknown preset '{name}'; {hint}")
    return load_yaml(presets_dir() / f"{name}.yaml")
