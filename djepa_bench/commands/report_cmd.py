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
        help="Also split rows by this field: dataset, split, eval_preset, run (one row per "
        "run), regularizer, or a config key such as model.size (repeatable). Needed when runs "
        "were evaluated on different datasets.",
    ),
    columns: str = typer.Option(
        "",
        "--columns",
        help="Comma list of table columns, in order (default: knn20, linear, 1shot, 5shot, "
        "25shot, corr_acc, mce, rankme, attentive, finetune; those without records are left "
        "out). Also: knn10, knn100, knn200, linear_top5, 2shot, 10shot, rankme_per_dim "
        "(RankMe / D, comparable across dimensions).",
    ),
    title: str = typer.Option(
        "",
        "--title",
        help="Report title (default: the compared methods and the dataset, e.g. "
        "'D-JEPA vs I-JEPA on cifar10').",
    ),
    correction: str = typer.Option(
        "holm",
        "--correction",
        help="Multiple-comparison correction of the delta table's paired t-tests: holm "
        "(default) or none. The report states which was used.",
    ),
    table_layout: str = typer.Option(
        "auto",
        "--table-layout",
        help="LaTeX table layout: auto (one row per method if it fits \\linewidth, else one "
        "row per metric, chosen by LaTeX), standard (methods as rows) or transposed (metrics "
        "as rows). Tables never exceed \\linewidth.",
    ),
) -> None:
    """Compare runs: headline table over seeds, paired deltas vs a baseline (95% t-intervals
    and Holm-corrected tests from 3 seeds, per-seed values below), the differences the seeds
    can resolve (power), figures (PNG + PDF) and a markdown report with a short summary."""
    from djepa_bench.reports.build import build_report

    report = build_report(
        runs, out, baseline=baseline, formats=formats, group_by=group_by, title=title,
        columns=columns, correction=correction, table_layout=table_layout,
    )  # fmt: skip
    typer.echo(f"wrote {len(report.files)} files to {report.out}")
    if report.skipped:
        typer.echo("skipped figures: " + "; ".join(report.skipped))
    for warning in report.warnings:
        typer.echo(f"warning: {warning.removeprefix('⚠ ')}")
    for note in report.notes:
        typer.echo(f"note: {note}")
    if (report.out / "report.md").is_file():
        typer.echo(f"open {report.out / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
