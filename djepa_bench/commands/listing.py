"""`djepa-bench list datasets|presets|protocols`: what the suite knows by name."""

from __future__ import annotations

from enum import Enum

import typer


class Listable(str, Enum):
    datasets = "datasets"
    presets = "presets"
    protocols = "protocols"


def list_command(
    what: Listable = typer.Argument(..., help="What to list: datasets, presets or protocols."),
) -> None:
    """List the named datasets, training presets or evaluation protocols."""
    if what is Listable.datasets:
        from djepa_bench.data import DATASETS

        rows = [(name, spec.description) for name, spec in DATASETS.items()]
        rows.append(("imagefolder:<path>", "your own images: <path>/train/<class>/*, <path>/test/"))
    elif what is Listable.presets:
        from djepa_bench.presets import (
            eval_preset_description,
            eval_preset_names,
            preset_description,
            preset_names,
        )

        rows = [(name, f"train: {preset_description(name)}") for name in preset_names()]
        rows += [
            (name, f"eval (--eval-preset): {eval_preset_description(name)}")
            for name in eval_preset_names()
        ]
    else:
        from djepa_bench.eval_protocols.registry import protocols

        rows = [(name, info.description) for name, info in protocols().items()]
    if not rows:
        typer.echo(f"no {what.value} yet")
        return
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        typer.echo(f"{name.ljust(width)}  {description}")


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
