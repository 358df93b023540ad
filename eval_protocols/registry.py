"""The protocol registry: each protocol module registers one entry point under its name."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from djepa_bench.errors import UserError

# Modules imported (in this order) to fill the registry; each calls `register` on import.
PROTOCOL_MODULES: list[str] = [
    "knn",
    "linear",
    "lowshot",
    "representation",
    "denoising",
    "robustness",
    "attentive",
    "finetune",
]


@dataclass(frozen=True)
class ProtocolInfo:
    """A registered protocol: its name, a one-line description and its entry point."""

    name: str
    description: str
    run: Callable[..., list[dict[str, Any]]]
    in_all: bool = True  # part of `--protocol all` (False: costly, run by name)
    feature_splits: tuple[str, ...] = ("train", "test")  # clean features eval extracts first


_REGISTRY: dict[str, ProtocolInfo] = {}


def register(
    name: str,
    description: str,
    *,
    in_all: bool = True,
    feature_splits: tuple[str, ...] = ("train", "test"),
) -> Callable[[Callable], Callable]:
    """Decorator: register `run` as protocol `name` with a one-line description.

    `feature_splits`: the splits whose clean pooled features the protocol reads (eval
    extracts them first, with a progress line); `in_all=False` keeps a costly protocol out
    of `--protocol all`.
    """

    def wrap(run: Callable) -> Callable:
        _REGISTRY[name] = ProtocolInfo(name, description, run, in_all, tuple(feature_splits))
        return run

    return wrap


def _load_all() -> None:
    for module in PROTOCOL_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def protocols() -> dict[str, ProtocolInfo]:
    """All registered protocols by name, in registration order."""
    _load_all()
    return dict(_REGISTRY)


def get_protocol(name: str) -> ProtocolInfo:
    """The protocol called `name`, or a one-line error listing the closest names."""
    registry = protocols()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(registry)}"
    raise UserError(f"unknown protocol '{name}'; {hint}")
