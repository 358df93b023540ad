"""What a run shows while it trains: rich bars on a terminal, one plain line per epoch elsewhere,
and an optional TensorBoard mirror of log.jsonl.

Without a terminal (CI, nohup, SLURM logs) a progress bar is noise, so each epoch ends with
one line (loss parts, images/s, monitor kNN and RankMe, ETA); on a terminal the same line is
printed above rich's bar. log.jsonl stays the record that `djepa-bench report` reads; the
TensorBoard files are a view of the same rows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from djepa_bench.errors import UserError

TENSORBOARD_DIR = "tensorboard"


def format_duration(seconds: float) -> str:
    """Seconds as '1h02m', '4m05s' or '12s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def epoch_line(
    epoch: int,
    epochs: int,
    step: int,
    total_steps: int,
    losses: list[float],
    images_per_s: float,
    monitor: dict[str, float] | None,
    eta_s: float,
) -> str:
    """One plain line summarising an epoch: losses are the epoch means (total, jepa, diff, reg)."""
    loss, jepa, diff, reg = losses
    parts = [
        f"epoch {epoch}/{epochs}",
        f"step {step}/{total_steps}",
        f"loss {loss:.4f} (jepa {jepa:.4f}, diff {diff:.4f}, reg {reg:.4f})",
        f"{images_per_s:.0f} img/s",
    ]
    if monitor:
        parts.append(f"kNN@20 {monitor['knn_top1']:.1f}%")
        parts.append(f"RankMe {monitor['rankme']:.1f}")
    parts.append(f"ETA {format_duration(eta_s)}")
    return "  ".join(parts)


class Display:
    """Where progress goes: `line` prints a persistent line, `update` moves the bar (TTY only)."""

    def __init__(self, stream: TextIO | None = None, bar: Any = None, task: Any = None):
        self.stream = stream
        self.bar, self.task = bar, task

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False, soft_wrap=True)
        elif self.stream is not None:
            print(text, file=self.stream, flush=True)

    def update(self, **fields: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, **fields)


@contextmanager
def display(enabled: bool, description: str, total: int, completed: int) -> Iterator[Display]:
    """A rich bar when stderr is a terminal, plain lines on stderr otherwise, or nothing."""
    if not enabled:
        yield Display()
        return
    if not sys.stderr.isatty():
        yield Display(stream=sys.stderr)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[ips]} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, completed=completed, loss="-", ips="-")
        yield Display(bar=bar, task=task)


def tensorboard_writer_class():
    """torch's SummaryWriter, or a one-line error saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.tensorboard=true needs the tensorboard package: pip install "
            "'djepa-bench[tensorboard]' (or tensorboard>=2.14), or set train.tensorboard=false"
        ) from None
    return SummaryWriter


class TensorBoardMirror:
    """Writes every numeric field of each log.jsonl row as a scalar '<kind>/<field>' at its step."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        writer_class = tensorboard_writer_class()
        # purge_step: a resumed run drops the events it is about to repeat, like log.jsonl.
        self.writer = writer_class(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)

    def add(self, row: dict[str, Any]) -> None:
        kind, step = row.get("kind", "step"), row.get("step", 0)
        for key, value in row.items():
            if key in ("kind", "step") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
