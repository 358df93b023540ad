"""Build a whole report: records -> tables (md/tex/csv) + figures (png/pdf) + report.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from djepa_bench.errors import UserError
from djepa_bench.io import atomic_write_text
from djepa_bench.reports import figures, header, render, summary
from djepa_bench.reports.collect import load_collection
from djepa_bench.reports.groups import (
    Grouping,
    attach_groups,
    is_floor_method,
    keys_of,
    method_label,
)
from djepa_bench.reports.stats import CORRECTIONS, DEFAULT_CORRECTION, MIN_SEEDS_FOR_INTERVAL
from djepa_bench.reports.tables import (
    Column,
    delta_table,
    headline_table,
    parse_columns,
    power_table,
    present_columns,
    run_values,
    runs_table,
    tests_count,
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
    caption_extra: Callable[[pd.DataFrame], str] | None = None  # from the records drawn


SEEDS = (
    "Thick line: mean over seeds; thin lines: the single seeds; band: 95% t-interval over "
    f"seeds, drawn for rows with at least {MIN_SEEDS_FOR_INTERVAL} seeds (the tables' rule)."
)
FIGURES = (
    FigureSpec("knn_vs_k", "kNN accuracy vs k",
               "k-NN top-1 (cosine, T=0.07) against the number of neighbours. "
               f"{SEEDS} A floor far outside the methods' range is not drawn (it would squeeze "
               "them into a few pixels): the legend gives its values over k instead.",
               "knn records", figures.knn_vs_k),
    FigureSpec("lowshot", "Low-shot accuracy vs labelled images per class",
               "Logistic regression on frozen features; each run's trials are averaged "
               f"first, so the spread shown is between seeds only. {SEEDS}",
               "lowshot records with shots", figures.lowshot),
    FigureSpec("robustness", "Accuracy vs corruption severity",
               "Top-1 of the clean-trained head on corrupted test images, averaged over the "
               "corruptions of each family (count in brackets; the family is the one each "
               "record names) and over all of them; severity 0 is clean; one y-range for "
               f"every panel. {SEEDS}", "robustness records per corruption and severity",
               figures.robustness, caption_extra=figures.robustness_caption),
    FigureSpec("denoising", "Denoising error vs noise level",
               "Error of the predictor's clean-target estimate at masked positions against "
               "the diffusion noise level (thick: mean over seeds, thin: each seed); dotted: "
               "the I-JEPA predictor (no noise input); dash-dot: the Gaussian posterior mean "
               "sqrt(abar_t) z_t, the best estimate from z_t alone if targets were N(0, I); "
               "dashed: the rescaled noisy input z_t/sqrt(abar_t) itself (clipped where it "
               "leaves the range of the estimators).", "denoising mse/cosine records",
               figures.denoising),
    FigureSpec("sampling", "Sampling diagnostics vs DDIM steps",
               "Multi-step DDIM sampling with K samples per target: error of the sample "
               "mean, sample diversity, energy score (lower is better for error and energy "
               "score; dotted in both: the I-JEPA predictor's deterministic prediction, its "
               "MSE and its L2 error, measured on the denoising images) and the correlation "
               f"of sample spread with error (calibration). {SEEDS}",
               "denoising sampling records", figures.sampling),
    FigureSpec("training_curves", "Training curves",
               "Training-log rows of every run (colour = row, dash and marker = seed): loss "
               "parts per step, per-epoch kNN monitor and RankMe. A per-epoch quantity logged "
               "once (one epoch) is shown as one marker per run, rows side by side.",
               "training logs (log.jsonl)", figures.training_curves, from_logs=True),
)  # fmt: skip


@dataclass
class Report:
    """What build_report wrote: files, figures drawn and skipped, and notes."""

    out: Path
    files: list[Path] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """How a report is laid out and tested (the CLI's options)."""

    title: str | None = None
    columns: tuple[Column, ...] = ()
    correction: str = DEFAULT_CORRECTION
    table_layout: str = "auto"


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


def _choice(value: str, choices: Sequence[str], option: str) -> str:
    text = value.strip().lower()
    if text not in choices:
        raise UserError(f"unknown {option} '{value}'; use one of {', '.join(choices)}")
    return text


def _write(report: Report, path: Path, text: str) -> None:
    atomic_write_text(path, text)
    report.files.append(path)


def _remove_stale(tables: Path, prefix: str, keep: str | None) -> None:
    """Delete tables left by a report with another (or no) baseline: they mislead."""
    for path in tables.glob(f"{prefix}*"):
        if path.suffix in (".csv", ".tex") and path.stem != keep:
            path.unlink()


def build_report(
    inputs: Sequence[str],
    out: str | Path,
    baseline: str | None = "ijepa",
    formats: str | Sequence[str] = FORMATS,
    group_by: Sequence[str] = (),
    figure_names: Sequence[str] | None = None,
    title: str | None = None,
    columns: str | None = None,
    correction: str = DEFAULT_CORRECTION,
    table_layout: str = "auto",
) -> Report:
    """Collect records of `inputs`, then write tables, figures and report.md under `out`.

    `figure_names` limits which figures are drawn (default: all of FIGURES); `columns` is
    a comma list of column ids (default: tables.DEFAULT_COLUMN_IDS); `correction` (holm |
    none) adjusts the delta table's tests; `table_layout` (auto | standard | transposed)
    shapes the LaTeX tables (and, when not auto, the markdown ones).
    """
    formats = parse_formats(formats)
    options = Options(
        title=title.strip() if title and title.strip() else None,
        columns=parse_columns(columns),
        correction=_choice(correction, CORRECTIONS, "--correction"),
        table_layout=_choice(table_layout, render.LAYOUTS, "--table-layout"),
    )
    if baseline is not None and baseline.lower() == "none":
        baseline = None
    collection = load_collection(list(inputs))
    grouping = attach_groups(collection, list(group_by), baseline)
    records = collection.records
    out = Path(out)
    report = Report(out=out, notes=list(collection.notes))

    values = run_values(records, grouping, report.notes, options.columns)
    headline = headline_table(values, grouping, options.columns)
    deltas = delta_table(values, grouping, options.columns, options.correction)
    power = power_table(deltas, options.columns)
    columns_shown = present_columns(headline, options.columns)
    runs = runs_table(collection.runs, records, grouping)
    report.notes.extend(summary.config_notes(collection.runs, grouping))
    report.notes.extend(_pairing_notes(grouping, deltas))
    report.notes.extend(_signature_notes(headline, deltas, grouping))
    multi = values.groupby(["key", "column", "seed"])["run_key"].nunique()
    for key in sorted({k for (k, _, _), n in multi.items() if n > 1}):
        report.notes.append(
            f"{grouping.label(key)} has several runs with the same seed; they are averaged "
            "per seed before pairing"
        )
    preset_line, preset_warnings = header.preset_lines(
        records, grouping, keys_of(records, grouping)
    )
    report.warnings.extend(preset_warnings)

    tables = out / "tables"
    base_name = f"delta_vs_{baseline}" if baseline else None
    power_name = f"power_vs_{baseline}" if baseline else None
    _remove_stale(tables, "delta_vs_", base_name if base_name and not deltas.empty else None)
    _remove_stale(tables, "power_vs_", power_name if power_name and not power.empty else None)
    if "csv" in formats:
        _write(report, tables / "headline.csv", render.to_csv(headline))
        if base_name:
            _write(report, tables / f"{base_name}.csv", render.to_csv(deltas))
            if not power.empty:
                _write(report, tables / f"{power_name}.csv", render.to_csv(power))
        _write(report, tables / "runs.csv", render.to_csv(runs))
    head_grid = render.headline_grid(headline, grouping, columns_shown)
    delta_grid = render.delta_grid(deltas, grouping, columns_shown) if len(deltas) else None
    if "tex" in formats:
        _write(report, tables / "headline.tex",
               render.grid_latex(head_grid, options.table_layout, "headline"))  # fmt: skip
        if base_name and delta_grid is not None:
            text = render.grid_latex(delta_grid, options.table_layout, base_name)
            _write(report, tables / f"{base_name}.tex", text)
    used = records.drop(columns=[c for c in records.columns if c.startswith("params.")])
    _write(report, out / "records.csv", render.to_csv(used))

    styles = figures.key_styles(grouping)
    drawn: list[tuple[FigureSpec, str]] = []
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
        extra = spec.caption_extra(source) if spec.caption_extra else ""
        drawn.append((spec, f"{spec.caption} {extra}".strip()))

    if "md" in formats:
        context = _Context(report, grouping, options, headline, deltas, power, columns_shown,
                           runs, drawn, formats, head_grid, delta_grid, preset_line,
                           header.regularizer_line(collection.runs, grouping))  # fmt: skip
        _write(report, out / "report.md", _markdown(context))
    return report


def _pairing_notes(grouping: Grouping, deltas: pd.DataFrame) -> list[str]:
    """Trained rows that found no baseline row to pair with, and why."""
    if grouping.baseline is None:
        return []
    if "run" in grouping.group_by:
        return [
            "rows are single runs (--group-by run): no row is paired with the baseline; "
            "compare per-run values in the headline table"
        ]
    paired = set(deltas["key"]) if len(deltas) else set()
    notes = []
    for key in grouping.keys:
        if key[0] == grouping.baseline or grouping.is_floor(key) or key in paired:
            continue
        if grouping.baseline_key(key) is None:
            fields = ", ".join(grouping.group_by) or "settings"
            notes.append(
                f"{grouping.label(key)} is not paired: no {method_label(grouping.baseline)}"
                f" row has the same {fields}"
            )
    return notes


def _signature_notes(headline: pd.DataFrame, deltas: pd.DataFrame, grouping) -> list[str]:
    """Which cells were kept out of comparisons because their setting differs."""
    notes = []
    apart = headline[headline["apart"].astype(bool)]
    for column, part in apart.groupby("column", sort=False):
        reference = headline[(headline["column"] == column) & ~headline["apart"].astype(bool)]
        ref_sig = reference["signature"].iloc[0] if len(reference) else "?"
        rows = "; ".join(f"{grouping.label(r.key)} ({r.signature})" for r in part.itertuples())
        notes.append(
            f"{column}: {rows} measured under another setting than the other rows ({ref_sig}); "
            "not bolded against, paired or compared with them"
        )
    for r in headline.itertuples():
        if str(r.signature).startswith("mixed"):
            notes.append(f"{r.column}: the runs of {grouping.label(r.key)} were measured "
                         f"differently ({r.signature.removeprefix('mixed: ')})")  # fmt: skip
    return notes


def _run_count(runs: pd.DataFrame) -> str:
    """'4 run(s)', or '6 run(s) (4 trained, 2 floors)' when raw-pixel/random rows are among them."""
    floors = int(runs["method"].astype(str).map(is_floor_method).sum())
    if not floors:
        return f"{len(runs)} run(s)"
    return f"{len(runs)} run(s) ({len(runs) - floors} trained, {floors} floor{'s' * (floors > 1)})"


@dataclass
class _Context:
    report: Report
    grouping: Grouping
    options: Options
    headline: pd.DataFrame
    deltas: pd.DataFrame
    power: pd.DataFrame
    columns: list[Column]
    runs: pd.DataFrame
    drawn: list[tuple[FigureSpec, str]]
    formats: tuple[str, ...]
    head_grid: render.Grid
    delta_grid: render.Grid | None
    preset_line: str
    regularizer_line: str | None


def _markdown(c: _Context) -> str:
    grouping, report = c.grouping, c.report
    datasets = sorted({d for d in c.runs["dataset"] for d in d.split(", ") if d})
    base = method_label(grouping.baseline) if grouping.baseline else None
    max_seeds = int(c.headline["n"].max()) if not c.headline.empty else 0
    tests = tests_count(c.deltas)
    title = c.options.title or header.default_title(grouping, datasets)
    md_layout = "standard" if c.options.table_layout == "auto" else c.options.table_layout
    lines = [
        f"# {title}",
        "",
        _run_count(c.runs)
        + f" on {', '.join(datasets) or 'unknown data'}"
        + (f", grouped by method and {', '.join(grouping.group_by)}" if grouping.group_by else "")
        + (f"; baseline: {base}." if base else "; no baseline."),
        f"Seeds per row: {summary.seeds_sentence(c.headline, grouping)}.",
        c.preset_line,
    ]
    if c.regularizer_line:
        lines.append(c.regularizer_line)
    lines += ["", header.statistics_sentence(c.options.correction, tests), ""]
    lines += [f"**{w}**" for w in report.warnings] + ([""] if report.warnings else [])
    lines += ["## Summary", ""]
    bullets = summary.comparison_lines(c.deltas, grouping, c.columns)
    bullets += summary.floor_lines(c.headline, grouping)
    if max_seeds < 2:
        bullets.insert(
            0,
            "Every row has a single seed: values are single measurements, no interval is "
            "given. Train more seeds before reading small differences.",
        )
    if not bullets:
        bullets = ["Nothing to compare: add a baseline run or more methods."]
    lines += [f"- {b}" for b in bullets] + [""]

    lines += ["## Headline results", ""]
    if c.columns:
        lines.append(render.grid_markdown(c.head_grid, md_layout))
        lines.append(
            f"Mean over seeds; ± the 95% t-interval's half-width from {MIN_SEEDS_FOR_INTERVAL} "
            "seeds on, the per-seed values in parentheses below that (`(n=k)` where a cell has "
            "fewer seeds than its row). **Bold**: best mean in the column among rows measured "
            "alike"
            + (" per dataset" if "dataset" in grouping.group_by else "")
            + f"; {render.APART_MARK}: measured under another setting than the column's "
            "reference row (the baseline's; e.g. another embedding dimension for RankMe), so "
            "compared only with rows measured alike. ↑ higher is better, ↓ lower is better."
        )
        lines.append("")
        lines += [f"- *{col.name}* (`{col.id}`): {col.description}" for col in c.columns] + [""]
    else:
        lines += ["No headline measurements (kNN, linear, low-shot, robustness, RankMe) found.", ""]

    if base:
        lines += [f"## Difference to {base}", ""]
        if c.delta_grid is None:
            lines += [f"No row can be paired with {base}.", ""]
        else:
            lines.append(render.grid_markdown(c.delta_grid, md_layout))
            correction = (
                f"Holm-adjusted over the {tests} test(s) of this table"
                if c.options.correction == "holm"
                else f"uncorrected ({tests} test(s); `--correction holm` adjusts them)"
            )
            lines += [
                f"Δ = row − {base}, paired by seed. From {MIN_SEEDS_FOR_INTERVAL} pairs: "
                "[low, high] is the 95% t-interval of the mean paired difference (n−1 degrees "
                f"of freedom, unadjusted) and * marks a paired t-test p < 0.05, {correction}. "
                f"Below {MIN_SEEDS_FOR_INTERVAL} pairs: the per-seed differences in "
                f"parentheses, no interval and no mark. {render.NOT_COMPARABLE}: measured "
                "under different settings, not compared.",
                "",
            ]
        lines += _power_section(c, base)

    lines += ["## Figures", ""]
    for spec, caption in c.drawn:
        lines += [
            f"### {spec.title}",
            "",
            f"![{spec.title}](figures/{spec.name}.png)",
            "",
            f"{caption} Vector version: [figures/{spec.name}.pdf](figures/{spec.name}.pdf).",
            "",
        ]
    if not c.drawn and not report.skipped:
        lines += ["No figures were requested.", ""]
    if report.skipped:
        lines += ["Skipped figures (nothing to draw):", ""]
        lines += [f"- {s}" for s in report.skipped] + [""]

    lines += ["## Runs", "", render.simple_markdown(c.runs)]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += ["## Files", ""]
    if "csv" in c.formats:
        lines.append(
            "- `tables/*.csv`: the tables above in long form (one row per cell, with "
            "per-seed values, p-values and the power figures)."
        )
    if "tex" in c.formats:
        lines.append(
            "- `tables/*.tex`: booktabs tables for `\\input{}` inside `table` or `table*` "
            "(need `booktabs` and `graphicx`); each fits `\\linewidth`"
            + (
                ": one row per method when that fits, else one row per metric."
                if c.options.table_layout == "auto"
                else f" ({c.options.table_layout} layout)."
            )
        )
    lines.append("- `records.csv`: every result record the report used, one per line.")
    lines.append("- `figures/*.png` and `figures/*.pdf`.")
    return "\n".join(lines) + "\n"


def _power_section(c: _Context, base: str) -> list[str]:
    """The power table: detectable differences and seeds needed, per compared column."""
    lines = [f"## Power: what these seeds can resolve against {base}", ""]
    if c.power.empty:
        return lines + [
            "Needs at least two paired seeds per row to estimate the seed-to-seed spread; "
            "none of the compared rows has them.",
            "",
        ]
    rows = render.power_grid(c.power, c.grouping, c.columns)
    header_cells = ["Row", "vs", "Column", "pairs", "observed Δ", "sd of Δ",
                    "detectable Δ (80%)", "seeds for observed Δ"]  # fmt: skip
    lines.append(render.table_markdown(header_cells, rows, ["l", "l", "l"] + ["r"] * 5))
    few = int(c.power["n_pairs"].min()) < MIN_SEEDS_FOR_INTERVAL
    lines += [
        "Two-sided paired t-test at alpha 0.05 (unadjusted), 80% power, with the sd of the "
        "observed paired differences taken as the true one (noncentral t): *detectable Δ* is "
        "the smallest true difference the current number of pairs resolves; *seeds for "
        "observed Δ* is how many seed pairs would resolve a true difference as large as the "
        "observed one."
        + (
            " With 2 pairs the sd rests on one degree of freedom: treat these as rough "
            "planning figures."
            if few
            else ""
        ),
        "",
    ]
    lines += [f"- {line}" for line in summary.power_lines(c.power, c.grouping)] + [""]
    return lines
