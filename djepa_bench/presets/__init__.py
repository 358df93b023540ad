"""Named presets: training presets (the YAML files beside this module) and evaluation presets
(`eval/*.yaml`, only an `eval:` section), listed and loaded by name.

An evaluation preset names a set of protocol settings (`quick` for the demo, `paper` for
the full protocols) so that a study is regenerated with one word instead of a dozen
`--set eval...` flags; the name is recorded in every result record (`eval_preset`).
"""

from __future__ import annotations

import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from djepa_bench.errors import UserError
from djepa_bench.io import load_yaml

# Eval keys that change where or how fast an evaluation runs, not what it measures: setting
# them does not make a result differ from its preset's.
EVAL_RUNTIME_KEYS = ("eval.device", "eval.cache", "eval.cache_dir", "eval.batch_size")


def presets_dir() -> Path:
    """Return the folder that holds the training preset YAML files."""
    return Path(str(resources.files(__name__)))


def eval_presets_dir() -> Path:
    """Return the folder that holds the evaluation preset YAML files."""
    return presets_dir() / "eval"


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def preset_names() -> list[str]:
    """Return the names of all shipped training presets, sorted."""
    return _names(presets_dir())


def eval_preset_names() -> list[str]:
    """Return the names of all shipped evaluation presets, sorted."""
    return _names(eval_presets_dir())


def _description(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def preset_description(name: str) -> str:
    """Return the first comment line of a training preset (its one-line description)."""
    return _description(presets_dir() / f"{name}.yaml")


def eval_preset_description(name: str) -> str:
    """Return the first comment line of an evaluation preset."""
    return _description(eval_presets_dir() / f"{name}.yaml")


def _resolve(name: str, names: list[str], kind: str) -> None:
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(names)}"
        raise UserError(f"unknown {kind} '{name}'; {hint}")


def load_preset(name: str) -> dict[str, Any]:
    """Load a training preset by name, or a YAML file when `name` is a path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_yaml(path)
    _resolve(name, preset_names(), "preset")
    return load_yaml(presets_dir() / f"{name}.yaml")


def load_eval_preset(name: str) -> dict[str, Any]:
    """The `eval` section of the evaluation preset `name`."""
    _resolve(name, eval_preset_names(), "evaluation preset")
    data = load_yaml(eval_presets_dir() / f"{name}.yaml")
    if set(data) != {"eval"}:
        raise UserError(f"evaluation preset '{name}' may only hold an eval: section")
    return data["eval"]


def _flatten(data: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    items = []
    for key, value in data.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def eval_preset_overrides(name: str, overrides: list[str] | None = None) -> list[str]:
    """`--set`-style overrides applying evaluation preset `name`, then `overrides`.

    The result also sets `eval.preset`: the name, or `NAME+overrides` when `overrides` change
    what is measured (any eval key but the runtime ones), so records never claim a preset
    whose settings they did not use.
    """
    values = _flatten(load_eval_preset(name), "eval.")
    preset = [f"{key}={json.dumps(value)}" for key, value in values]
    changed = [
        text
        for text in overrides or []
        if text.split("=", 1)[0].strip().startswith("eval.")
        and text.split("=", 1)[0].strip() not in (*EVAL_RUNTIME_KEYS, "eval.preset")
    ]
    label = f"{name}+overrides" if changed else name
    return [*preset, *(overrides or []), f"eval.preset={json.dumps(label)}"]
