"""The `djepa-bench` command line: one Typer app whose subcommands live in djepa_bench.commands.

Every module in `djepa_bench.commands` exposes `register(app)`; this file collects them
and turns a UserError into one line on stderr with exit status 2, never a traceback. An
OSError that escapes the commands' own checks (a full disk, a read-only folder) is a
problem of the user's environment too: one line with its path and cause, exit 2.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import typer

from djepa_bench import __version__, commands
from djepa_bench.errors import UserError
from djepa_bench.io import describe_os_error

app = typer.Typer(
    name="djepa-bench",
    help=(
        "Train and measure diffusion-regularised JEPA (D-JEPA) against I-JEPA at matched cost.\n\n"
        "Typical flow: `train` a run directory per method and seed, `eval` it with one or "
        "more protocols (records land in RUN/results/), then `report` across runs."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"djepa-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train and measure diffusion-regularised JEPA (D-JEPA) against I-JEPA."""


def unwrap_paragraphs(text: str) -> str:
    """Each paragraph of a docstring on one line, paragraphs still separated by a blank line.

    Typer's rich help joins the lines of a command's first paragraph but keeps the hard line
    breaks of the later ones and then wraps them again at the terminal width, which cut
    sentences mid-line ("writes a" / "checkpoint first"); unwrapped, rich wraps them whole.
    A paragraph starting with a line of its own "\b" keeps its lines (click's convention).
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)
    for command in app.registered_commands:
        doc = command.help if command.help is not None else inspect.getdoc(command.callback)
        command.help = unwrap_paragraphs(doc or "")


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and `python -m djepa_bench`."""
    try:
        app(args=argv, prog_name="djepa-bench")
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        typer.echo(f"error: {describe_os_error(err)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
