"""`djepa-bench report RUN_OR_GLOB... --out DIR`: paper-ready tables and figures across runs."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    runs: list[str] = typer.Argument(
        ...,
        metavar="RUN_OR_GLOB...",
        help="Run directories, `eval --out` folders, folders holding either (searched "
        "recursively), .jsonl record files, or quoted globs such as 'runs/*'. Records are "
        "read from RUN/results/*.jsonl (or the folder's own *.jsonl).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for report.md, tables/, figures/ and records.csv."
    ),
    baseline: str = typer.Option(
        "ijepa",
        "--baseline",
        help="Method every other row is compared with (paired by seed); 'none' skips the "
        "delta table and mCE.",
    ),
    formats: str = typer.Option(
        "md,tex,csv",
        "--format",
        help="Comma list of outputs: md (report.md), tex (booktabs tables), csv (tables). "
        "Figures and records.csv are always written.",
    ),
    group_by: list[str] = typer.Option(
        [],
        "--group-by",
        help="Also split rows by this field: 'dataset' or a config key such as model.size "
        "(repeatable). Needed when runs were evaluated on different datasets.",
    ),
) -> None:
    """Compare runs: headline table (mean ± std over seeds), paired deltas vs a baseline with
    95% CIs, figures (PNG + PDF) and a markdown report with a short summary."""
    from djepa_bench.reports.build import build_report

    report = build_report(runs, out, baseline=baseline, formats=formats, group_by=group_by)
    typer.echo(f"wrote {len(report.files)} files to {report.out}")
    if report.skipped:
        typer.echo("skipped figures: " + "; ".join(report.skipped))
    for note in report.notes:
        typer.echo(f"note: {note}")
    if (report.out / "report.md").is_file():
        typer.echo(f"open {report.out / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
