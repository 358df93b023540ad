"""Build a whole report: records -> tables (md/tex/csv) + figures (png/pdf) + report.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from djepa_bench.errors import UserError
from djepa_bench.io import atomic_write_text
from djepa_bench.reports import figures, render, summary
from djepa_bench.reports.collect import load_collection
from djepa_bench.reports.groups import Grouping, attach_groups, is_floor_method, method_label
from djepa_bench.reports.tables import (
    delta_table,
    headline_table,
    present_columns,
    run_values,
    runs_table,
)

FORMATS = ("md", "tex", "csv")


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: file name, heading, caption and what it needs."""

    name: str
    title: str
    caption: str
    needs: str
    draw: figures.FigureFn
    from_logs: bool = False


BANDS = (
    f"Band: 95% t-interval over seeds, drawn for rows with at least {figures.MIN_BAND_SAMPLES} "
    "(with two the t quantile is 12.7 and the band would cover the axis)."
)
FIGURES = (
    FigureSpec("knn_vs_k", "kNN accuracy vs k",
               "k-NN top-1 (cosine, T=0.07) against the number of neighbours; line: mean over "
               f"seeds. {BANDS}", "knn records", figures.knn_vs_k),
    FigureSpec("lowshot", "Low-shot accuracy vs labelled images per class",
               "Logistic regression on frozen features; line: mean over seeds and trials. "
               f"{BANDS} A row with one seed gets its band from the trials.",
               "lowshot records with shots", figures.lowshot),
    FigureSpec("robustness", "Accuracy vs corruption severity",
               "Top-1 of the clean-trained head on corrupted test images, averaged over the "
               "corruptions of each family (count in brackets) and over all of them; "
               f"severity 0 is clean. {BANDS}", "robustness records per corruption and severity",
               figures.robustness),
    FigureSpec("denoising", "Denoising error vs noise level",
               "Error of the predictor's clean-target estimate at masked positions against "
               "the diffusion noise level; dotted: the I-JEPA predictor (no noise input), "
               "dashed: the rescaled noisy input z_t/sqrt(abar_t) itself (clipped where it "
               "leaves the range of the estimators).", "denoising mse/cosine records",
               figures.denoising),
    FigureSpec("sampling", "Sampling diagnostics vs DDIM steps",
               "Multi-step DDIM sampling with K samples per target: error of the sample "
               "mean, sample diversity, energy score (lower is better for error and energy "
               "score; dotted: the I-JEPA predictor's deterministic prediction) and the "
               "correlation of sample spread with error (calibration).",
               "denoising sampling records", figures.sampling),
    FigureSpec("training_curves", "Training curves",
               "Training-log rows of every run (one thin line per run, colour = row): loss "
               "parts per step, per-epoch kNN monitor and RankMe.", "training logs (log.jsonl)",
               figures.training_curves, from_logs=True),
)  # fmt: skip


@dataclass
class Report:
    """What build_report wrote: files, figures drawn and skipped, and notes."""

    out: Path
    files: list[Path] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """'md,tex' -> ('md', 'tex'); unknown names are a UserError."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names = tuple(dict.fromkeys(p.strip().lower() for p in items if p.strip()))
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise UserError(
            f"unknown --format {', '.join(bad) or '(empty)'}; use a comma list of md, tex, csv"
        )
    return names


def _write(report: Report, path: Path, text: str) -> None:
    atomic_write_text(path, text)
    report.files.append(path)


def _remove_stale_deltas(tables: Path, keep: str | None) -> None:
    """Delete delta tables left by a report with another (or no) baseline: they mislead."""
    for path in tables.glob("delta_vs_*"):
        if path.suffix in (".csv", ".tex") and path.stem != keep:
            path.unlink()


def build_report(
    inputs: Sequence[str],
    out: str | Path,
    baseline: str | None = "ijepa",
    formats: str | Sequence[str] = FORMATS,
    group_by: Sequence[str] = (),
    figure_names: Sequence[str] | None = None,
) -> Report:
    """Collect records of `inputs`, then write tables, figures and report.md under `out`.

    `figure_names` limits which figures are drawn (default: all of FIGURES).
    """
    formats = parse_formats(formats)
    if baseline is not None and baseline.lower() == "none":
        baseline = None
    collection = load_collection(list(inputs))
    grouping = attach_groups(collection, list(group_by), baseline)
    records = collection.records
    out = Path(out)
    report = Report(out=out, notes=list(collection.notes))

    values = run_values(records, grouping, report.notes)
    headline = headline_table(values, grouping)
    deltas = delta_table(values, grouping)
    columns = present_columns(headline)
    runs = runs_table(collection.runs, records, grouping)
    report.notes.extend(summary.config_notes(collection.runs, grouping))
    multi = values.groupby(["key", "column", "seed"])["run_key"].nunique()
    for key in sorted({k for (k, _, _), n in multi.items() if n > 1}):
        report.notes.append(
            f"{grouping.label(key)} has several runs with the same seed; they are averaged "
            "per seed before pairing"
        )

    tables = out / "tables"
    base_name = f"delta_vs_{baseline}" if baseline else None
    _remove_stale_deltas(tables, keep=base_name if base_name and not deltas.empty else None)
    if "csv" in formats:
        _write(report, tables / "headline.csv", render.to_csv(headline))
        if base_name:
            _write(report, tables / f"{base_name}.csv", render.to_csv(deltas))
        _write(report, tables / "runs.csv", render.to_csv(runs))
    if "tex" in formats:
        _write(report, tables / "headline.tex", render.headline_latex(headline, grouping, columns))
        if base_name and not deltas.empty:
            _write(
                report, tables / f"{base_name}.tex", render.delta_latex(deltas, grouping, columns)
            )
    used = records.drop(columns=[c for c in records.columns if c.startswith("params.")])
    _write(report, out / "records.csv", render.to_csv(used))

    styles = figures.key_styles(grouping)
    drawn: list[FigureSpec] = []
    for spec in FIGURES:
        if figure_names is not None and spec.name not in figure_names:
            continue
        source = collection.logs if spec.from_logs else records
        fig = figures.draw(spec.draw, source, grouping, styles)
        if fig is None:
            report.skipped.append(f"{spec.title}: no {spec.needs} in these runs")
            for suffix in (".png", ".pdf"):  # a previous report's version would mislead
                (out / "figures" / f"{spec.name}{suffix}").unlink(missing_ok=True)
            continue
        report.files.extend(figures.save_figure(fig, out / "figures", spec.name))
        report.figures.append(spec.name)
        drawn.append(spec)

    if "md" in formats:
        text = _markdown(report, grouping, headline, deltas, columns, runs, drawn, formats)
        _write(report, out / "report.md", text)
    return report


def _run_count(runs: pd.DataFrame) -> str:
    """'4 run(s)', or '6 run(s) (4 trained, 2 floors)' when raw-pixel/random rows are among them."""
    floors = int(runs["method"].astype(str).map(is_floor_method).sum())
    if not floors:
        return f"{len(runs)} run(s)"
    return f"{len(runs)} run(s) ({len(runs) - floors} trained, {floors} floor{'s' * (floors > 1)})"


def _markdown(
    report: Report,
    grouping: Grouping,
    headline: pd.DataFrame,
    deltas: pd.DataFrame,
    columns: list,
    runs: pd.DataFrame,
    drawn: list[FigureSpec],
    formats: tuple[str, ...],
) -> str:
    datasets = sorted({d for d in runs["dataset"] for d in d.split(", ") if d})
    base = method_label(grouping.baseline) if grouping.baseline else None
    max_seeds = int(headline["n"].max()) if not headline.empty else 0
    lines = [
        "# D-JEPA benchmark report",
        "",
        _run_count(runs)
        + f" on {', '.join(datasets) or 'unknown data'}"
        + (f", grouped by method and {', '.join(grouping.group_by)}" if grouping.group_by else "")
        + (f"; baseline: {base}." if base else "; no baseline."),
        f"Seeds per row: {summary.seeds_sentence(headline, grouping)}.",
        "",
        "## Summary",
        "",
    ]
    bullets = summary.comparison_lines(deltas, grouping) + summary.floor_lines(headline, grouping)
    if max_seeds < 2:
        bullets.insert(
            0,
            "Every row has a single seed: values are single measurements, no standard deviation "
            "or confidence interval is given. Train more seeds before reading small differences.",
        )
    if not bullets:
        bullets = ["Nothing to compare: add a baseline run or more methods."]
    lines += [f"- {b}" for b in bullets] + [""]

    lines += ["## Headline results", ""]
    if columns:
        lines.append(render.headline_markdown(headline, grouping, columns))
        lines.append(
            "Mean ± sample standard deviation over seeds (a single value where a row has one "
            "seed; `(n=k)` where a cell has fewer seeds than its row). **Bold**: best in the "
            "column"
            + (" per dataset" if "dataset" in grouping.group_by else "")
            + ". ↑ higher is better, ↓ lower is better."
        )
        lines.append("")
        lines += [f"- *{c.name}*: {c.description}" for c in columns] + [""]
    else:
        lines += ["No headline measurements (kNN, linear, low-shot, robustness, RankMe) found.", ""]

    if base:
        lines += [f"## Difference to {base}", ""]
        if deltas.empty:
            lines += [f"No row can be paired with {base}.", ""]
        else:
            lines.append(render.delta_markdown(deltas, grouping, columns))
            lines += [
                f"Δ = row − {base}, paired by seed; [low, high] is the 95% confidence interval of "
                "the mean paired difference (t-distribution, n−1 degrees of freedom); * marks an "
                "interval that excludes 0. With one pair only the difference is shown.",
                "",
            ]

    lines += ["## Figures", ""]
    for spec in drawn:
        lines += [
            f"### {spec.title}",
            "",
            f"![{spec.title}](figures/{spec.name}.png)",
            "",
            f"{spec.caption} Vector version: [figures/{spec.name}.pdf](figures/{spec.name}.pdf).",
            "",
        ]
    if not drawn and not report.skipped:
        lines += ["No figures were requested.", ""]
    if report.skipped:
        lines += ["Skipped figures (nothing to draw):", ""]
        lines += [f"- {s}" for s in report.skipped] + [""]

    lines += ["## Runs", "", render.simple_markdown(runs)]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += ["## Files", ""]
    if "csv" in formats:
        lines.append("- `tables/*.csv`: the tables above in long form (one row per cell).")
    if "tex" in formats:
        lines.append("- `tables/*.tex`: booktabs tabulars for `\\input{}` (needs `booktabs`).")
    lines.append("- `records.csv`: every result record the report used, one per line.")
    lines.append("- `figures/*.png` and `figures/*.pdf`.")
    return "\n".join(lines) + "\n"
