"""Rendering report tables as markdown, LaTeX (booktabs) and CSV text, deterministically.

Cells follow the statistics policy of stats.py: from 3 seeds a 95% t half-width (headline)
or interval (deltas) and a significance mark; below 3 the per-seed values instead.
LaTeX tables come in two layouts, one row per method ("standard") or one row per metric
("transposed"); `auto` lets LaTeX pick the standard one when it fits \\linewidth (the
column width in `table`, the text width in `table*`), else the transposed one, and shrinks
only if neither fits, so a table never overflows the page.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pandas as pd

from djepa_bench.reports.groups import Grouping, Key
from djepa_bench.reports.power import MAX_SEEDS
from djepa_bench.reports.stats import MIN_SEEDS_FOR_INTERVAL
from djepa_bench.reports.tables import Column

CSV_FLOAT = "%.6g"
LAYOUTS = ("auto", "standard", "transposed")
NOT_COMPARABLE = "n/c"
APART_MARK = "†"
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "—": "---", "†": r"$^\dagger$", "Δ": r"$\Delta$", "≠": r"$\neq$",
}  # fmt: skip


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def number(value: float, decimals: int, signed: bool = False) -> str:
    """Fixed-decimals text; '—' for missing; never '-0.0' or '+0.0'."""
    if value is None or not math.isfinite(value):
        return "—"
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    zero = f"{0:.{decimals}f}"
    if text.lstrip("+-") == zero:  # no "-0.0" / "+0.0"
        text = zero
    return text


def arrow(column: Column, tex: bool = False) -> str:
    if tex:
        return r"$\uparrow$" if column.higher_is_better else r"$\downarrow$"
    return "↑" if column.higher_is_better else "↓"


@dataclass(frozen=True)
class Cell:
    """One table cell: a number (`main`), what qualifies it (`detail`: '± 1.2', the per-seed
    values '(3.1, 4.0)' or an interval '[-1.0, +2.0]'), and marks."""

    main: str
    detail: str = ""
    bold: bool = False
    star: bool = False  # significant after the multiple-comparison correction
    apart: bool = False  # measured under another setting than its column's reference row
    plain: bool = False  # a text cell (labels), not a number

    def markdown(self) -> str:
        main = f"**{self.main}**" if self.bold else self.main
        text = main + ("*" if self.star else "") + (APART_MARK if self.apart else "")
        return f"{text} {self.detail}" if self.detail else text

    def latex(self) -> str:
        """The cell in LaTeX; a detail goes on a second, smaller line (narrow columns)."""
        if self.plain:
            return tex_escape(self.main)
        if self.main in ("—", NOT_COMPARABLE):
            return "---" if self.main == "—" else NOT_COMPARABLE
        main = f"\\mathbf{{{self.main}}}" if self.bold else self.main
        marks = ("*" if self.star else "") + (r"\dagger" if self.apart else "")
        text = f"${main}" + (f"^{{{marks}}}" if marks else "") + "$"
        if not self.detail:
            return text
        detail = self.detail.replace("±", r"\pm")
        stacked = f"{text}\\\\{{\\scriptsize${detail}$}}"
        return f"\\begin{{tabular}}[t]{{@{{}}r@{{}}}}{stacked}\\end{{tabular}}"


EMPTY = Cell("—")


@dataclass(frozen=True)
class Grid:
    """A table in the standard layout: header cells, row-label cells and value cells."""

    labels_header: list[str]  # e.g. Method, model.size, Seeds
    columns_header: list[str]  # one per metric column (already with arrows)
    rows: list[tuple[list[str], list[Cell]]]  # (label cells, value cells)
    row_labels: list[str]  # one display label per row, for the transposed layout
    tex_columns_header: list[str]
    transposed_corner: str = "Metric"
    transposed_first_rows: tuple[tuple[str, list[str]], ...] = ()  # e.g. ("Seeds", [...])


def _per_seed(values: str, decimals: int, signed: bool = False) -> str:
    parts = [float(v) for v in str(values).split(";") if v not in ("", "nan")]
    return "(" + ", ".join(number(v, decimals, signed) for v in parts) + ")"


def _headline_cell(cell, column: Column, row_seeds: int) -> Cell:
    d = column.decimals
    mean = number(cell.mean, d)
    if cell.n >= MIN_SEEDS_FOR_INTERVAL:
        detail = f"± {number(cell.ci_half, d)}"
        if cell.n < row_seeds:
            detail += f" (n={cell.n})"
    elif cell.n > 1:
        detail = _per_seed(cell.per_seed, d)
    else:
        detail = ""
    return Cell(mean, detail, bold=bool(cell.best), apart=bool(cell.apart))


def _label_cells(key: Key, grouping: Grouping) -> list[str]:
    return [grouping.method_text(key), *grouping.shown_values(key)]


def headline_grid(table: pd.DataFrame, grouping: Grouping, columns: list[Column]) -> Grid:
    """The headline table as a Grid: mean ± 95% half-width (3+ seeds) or per-seed values."""
    cells = {(r.key, r.column): r for r in table.itertuples(index=False)}
    seeds_per_row = table.groupby("key")["n"].max()
    rows, labels, seeds_row = [], [], []
    for key in grouping.keys:
        if key not in seeds_per_row.index:
            continue
        seeds = int(seeds_per_row[key])
        values = []
        for column in columns:
            cell = cells.get((key, column.name))
            values.append(EMPTY if cell is None else _headline_cell(cell, column, seeds))
        rows.append(([*_label_cells(key, grouping), str(seeds)], values))
        labels.append(grouping.label(key))
        seeds_row.append(str(seeds))
    return Grid(
        ["Method", *grouping.shown_fields, "Seeds"],
        [f"{c.name} {arrow(c)}" for c in columns],
        rows,
        labels,
        [f"{tex_escape(c.name)} {arrow(c, tex=True)}" for c in columns],
        transposed_first_rows=(("Seeds", seeds_row),),
    )


def _delta_cell(cell, column: Column) -> Cell:
    if not cell.comparable:
        return Cell(NOT_COMPARABLE)
    d = column.decimals
    diff = number(cell.diff, d, signed=True)
    if cell.n_pairs == 0:
        return Cell("—")
    if cell.n_pairs >= MIN_SEEDS_FOR_INTERVAL:
        low, high = number(cell.ci_low, d, signed=True), number(cell.ci_high, d, signed=True)
        return Cell(diff, f"[{low}, {high}]", star=bool(cell.significant))
    if cell.n_pairs > 1:
        return Cell(diff, _per_seed(cell.per_seed, d, signed=True))
    return Cell(diff)


def delta_grid(deltas: pd.DataFrame, grouping: Grouping, columns: list[Column]) -> Grid:
    """The paired-difference table as a Grid."""
    cells = {(r.key, r.column): r for r in deltas.itertuples(index=False)}
    pairs = deltas.groupby("key")["n_pairs"].max()
    bases = sorted(set(deltas["baseline"]))
    rows, labels, pair_row, base_row = [], [], [], []
    for key in grouping.keys:
        if key not in pairs.index:
            continue
        base = deltas.loc[deltas["key"] == key, "baseline"].iloc[0]
        values = []
        for column in columns:
            cell = cells.get((key, column.name))
            values.append(EMPTY if cell is None else _delta_cell(cell, column))
        rows.append(([*_label_cells(key, grouping), base, str(int(pairs[key]))], values))
        labels.append(grouping.label(key))
        pair_row.append(str(int(pairs[key])))
        base_row.append(base)
    first: tuple[tuple[str, list[str]], ...] = (("Pairs", pair_row),)
    if len(bases) > 1:
        first = (("vs", base_row), *first)
    corner = f"Δ vs {bases[0]}" if len(bases) == 1 else "Δ"
    return Grid(
        ["Method", *grouping.shown_fields, "vs", "Pairs"],
        [f"Δ {c.name} {arrow(c)}" for c in columns],
        rows,
        labels,
        [f"$\\Delta$ {tex_escape(c.name)} {arrow(c, tex=True)}" for c in columns],
        transposed_corner=corner,
        transposed_first_rows=first,
    )


def power_grid(power: pd.DataFrame, grouping: Grouping, columns: list[Column]) -> list[list[str]]:
    """Rows of the power table (markdown): one per compared row and column."""
    by_name = {c.name: c for c in columns}
    lines = []
    for r in power.itertuples(index=False):
        column = by_name.get(r.column)
        if column is None:
            continue
        d = column.decimals
        needed = r.seeds_needed
        seeds = "—" if r.diff == 0 else (f"> {MAX_SEEDS}" if pd.isna(needed) else str(int(needed)))
        lines.append(
            [
                grouping.label(r.key), r.baseline, r.column, str(int(r.n_pairs)),
                number(r.diff, d, signed=True), number(r.sd, d + 1),
                number(r.detectable_diff, d), seeds,
            ]
        )  # fmt: skip
    return lines


# ----------------------------------------------------------------------------- markdown


def _markdown(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    rule = ["---:" if a == "r" else ":---" for a in align]
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def grid_markdown(grid: Grid, layout: str = "standard") -> str:
    """A Grid as a markdown table (auto means standard: markdown viewers scroll)."""
    if layout == "transposed":
        header = [grid.transposed_corner, *grid.row_labels]
        rows = [[name, *values] for name, values in grid.transposed_first_rows]
        for index, name in enumerate(grid.columns_header):
            rows.append([name, *(r[1][index].markdown() for r in grid.rows)])
        return _markdown(header, rows, ["l"] + ["r"] * len(grid.row_labels))
    header = [*grid.labels_header, *grid.columns_header]
    rows = [[*labels, *(c.markdown() for c in values)] for labels, values in grid.rows]
    n_labels = len(grid.labels_header)
    align = ["l"] * (n_labels - 1) + ["r"] * (len(grid.columns_header) + 1)
    return _markdown(header, rows, align)


def simple_markdown(frame: pd.DataFrame) -> str:
    """A plain markdown table of a small frame (all cells as text)."""
    header = [str(c) for c in frame.columns]
    rows = [["" if v is None else str(v) for v in row] for row in frame.itertuples(index=False)]
    align = ["r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns]
    return _markdown(header, rows, align)


def table_markdown(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A markdown table from text cells."""
    return _markdown(header, rows, align)


# -------------------------------------------------------------------------------- LaTeX


def _stacked(label: str) -> str:
    """A long column label broken into lines ('D-JEPA + VICReg (model.size=tiny)')."""
    parts = [label]
    for separator in (" (", " + "):
        parts = [p for part in parts for p in _split_keep(part, separator)]
    if len(parts) == 1:
        return tex_escape(label)
    lines = r"\\".join(tex_escape(p) for p in parts)
    return f"\\begin{{tabular}}[b]{{@{{}}c@{{}}}}{lines}\\end{{tabular}}"


def _split_keep(text: str, separator: str) -> list[str]:
    head, found, tail = text.partition(separator)
    if not found or not head:
        return [text]
    return [head, separator.strip() + tail]


def _tabular(header: list[str], rows: list[list[str]], align: str) -> str:
    return "\n".join(
        [
            f"\\begin{{tabular}}{{@{{}}{align}@{{}}}}",
            "\\toprule",
            " & ".join(header) + " \\\\",
            "\\midrule",
            *(" & ".join(row) + " \\\\" for row in rows),
            "\\bottomrule",
            "\\end{tabular}",
        ]
    )


def _standard_tabular(grid: Grid) -> str:
    header = [tex_escape(h) for h in grid.labels_header] + grid.tex_columns_header
    rows = [[tex_escape(c) for c in labels] + [c.latex() for c in values]
            for labels, values in grid.rows]  # fmt: skip
    n_labels = len(grid.labels_header)
    align = "l" * (n_labels - 1) + "r" * (len(grid.columns_header) + 1)
    return _tabular(header, rows, align)


def _transposed_tabular(grid: Grid) -> str:
    header = [tex_escape(grid.transposed_corner), *(_stacked(label) for label in grid.row_labels)]
    rows = [[tex_escape(n), *(tex_escape(v) for v in values)]
            for n, values in grid.transposed_first_rows]  # fmt: skip
    for index, name in enumerate(grid.tex_columns_header):
        rows.append([name, *(r[1][index].latex() for r in grid.rows)])
    return _tabular(header, rows, "l" + "r" * len(grid.row_labels))


def grid_latex(grid: Grid, layout: str = "auto", name: str = "table") -> str:
    """A self-sizing booktabs table (needs booktabs and graphicx) for `\\input{}` in a
    `table` or `table*` float: it never exceeds \\linewidth (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    first = _transposed_tabular(grid) if layout == "transposed" else _standard_tabular(grid)
    lines = [
        "% generated by `djepa-bench report`; needs \\usepackage{booktabs} and "
        "\\usepackage{graphicx}",
        "% layout: "
        + {
            "auto": "one row per method if that fits \\linewidth, else one row per metric",
            "standard": "one row per method",
            "transposed": "one row per metric",
        }[layout]
        + "; shrunk to \\linewidth only if wider",
        "\\begingroup\\footnotesize\\setlength{\\tabcolsep}{3pt}%",
        "\\setbox0=\\hbox{%",
        first + "}%",
    ]
    if layout == "auto":
        lines += [
            "\\ifdim\\wd0>\\linewidth",
            "\\setbox0=\\hbox{%",
            _transposed_tabular(grid) + "}%",
            f"\\typeout{{djepa-bench: {name}: one row per metric}}%",
            "\\fi",
        ]
    lines += [
        "\\ifdim\\wd0>\\linewidth",
        f"\\typeout{{djepa-bench: {name}: shrunk to linewidth}}%",
        "\\resizebox{\\linewidth}{!}{\\box0}%",
        "\\else\\leavevmode\\box0\\fi",
        "\\endgroup",
    ]
    return "\n".join(lines) + "\n"


def to_csv(frame: pd.DataFrame) -> str:
    """CSV text with a fixed float format and '\\n' line endings."""
    buffer = io.StringIO()
    frame.drop(columns=[c for c in ("key",) if c in frame.columns]).to_csv(
        buffer, index=False, float_format=CSV_FLOAT, lineterminator="\n"
    )
    return buffer.getvalue()
