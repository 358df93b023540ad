"""The auto-generated prose of a report: what differs from the baseline, by how much, how sure."""

from __future__ import annotations

import math

import pandas as pd

from djepa_bench.reports.groups import REGULARIZER_FIELD, Grouping
from djepa_bench.reports.power import MAX_SEEDS
from djepa_bench.reports.render import number
from djepa_bench.reports.stats import MIN_SEEDS_FOR_INTERVAL
from djepa_bench.reports.tables import COLUMN_BY_NAME, Column

# Config keys that say where/how a run ran, not what was trained: never worth a note.
INFRA_CONFIG_PREFIXES = (
    "train.seed", "train.device", "train.precision", "train.compile", "train.log_every",
    "train.checkpoint_every", "train.monitor", "data.root", "data.cache_dir", "data.download",
    "data.num_workers", "eval.",
)  # fmt: skip
# Keys expected to differ between methods (the comparison itself).
METHOD_CONFIG_PREFIXES = ("train.method", "diffusion.")


def _fmt(value: float, column: Column, signed: bool = False) -> str:
    return number(value, column.decimals, signed)


def seeds_sentence(headline: pd.DataFrame, grouping: Grouping) -> str:
    """'D-JEPA: 3 seeds, I-JEPA: 3 seeds, raw pixels: 1 seed'."""
    seeds = headline.groupby("key")["n"].max()
    parts = []
    for key in grouping.keys:
        if key in seeds.index:
            n = int(seeds[key])
            parts.append(f"{grouping.label(key)}: {n} seed{'s' if n != 1 else ''}")
    return ", ".join(parts)


def _diff_text(r, column: Column) -> str:
    """'kNN@20 +3.0 [+0.5, +5.5]' from 3 pairs, 'kNN@20 +0.8 (per seed +0.4, +1.3)' below."""
    text = f"{r.column} {_fmt(r.diff, column, True)}"
    if r.n_pairs >= MIN_SEEDS_FOR_INTERVAL:
        return text + f" [{_fmt(r.ci_low, column, True)}, {_fmt(r.ci_high, column, True)}]"
    if r.n_pairs > 1:
        per_seed = ", ".join(_fmt(float(v), column, True) for v in str(r.per_seed).split(";"))
        return text + f" (per seed {per_seed})"
    return text


def comparison_lines(
    deltas: pd.DataFrame, grouping: Grouping, columns: list[Column] | None = None
) -> list[str]:
    """One bullet per compared row: resolved gains, resolved losses, and what is within noise.

    Below MIN_SEEDS_FOR_INTERVAL pairs nothing is called resolved: the per-seed differences
    are listed instead. 'Resolved' means significant after the table's correction.
    """
    by_name = {c.name: c for c in (columns or COLUMN_BY_NAME.values())}
    lines = []
    for key in grouping.keys:
        part = deltas[(deltas["key"] == key) & deltas["column"].isin(list(by_name))]
        if part.empty or grouping.is_floor(key):
            continue
        base = part["baseline"].iloc[0]
        pairs = int(part["n_pairs"].max())
        head = f"**{grouping.label(key)} vs {base}**"
        apart = [r.column for r in part.itertuples() if not r.comparable]
        part = part[part["comparable"].astype(bool)]
        tail = (
            f" Not compared (measured under different settings): {', '.join(apart)}."
            if apart
            else ""
        )
        if pairs < MIN_SEEDS_FOR_INTERVAL:
            diffs = "; ".join(
                _diff_text(r, by_name[r.column]) for r in part.itertuples() if r.n_pairs >= 1
            )
            lines.append(
                f"{head} ({pairs} paired seed{'s' * (pairs != 1)}; below "
                f"{MIN_SEEDS_FOR_INTERVAL} pairs no interval or test is given, so these are "
                f"per-seed measurements, not established differences): {diffs}.{tail}"
            )
            continue
        correction = str(part["correction"].iloc[0]) if len(part) else "none"
        better, worse, unresolved = [], [], []
        for r in part.itertuples():
            text = _diff_text(r, by_name[r.column])
            if r.significant:
                (better if r.better else worse).append(text)
            else:
                unresolved.append(text)
        parts = []
        if better:
            parts.append("better on " + "; ".join(better))
        if worse:
            parts.append("worse on " + "; ".join(worse))
        if unresolved:
            parts.append("no difference resolved on " + "; ".join(unresolved))
        how = "Holm-adjusted p < 0.05" if correction == "holm" else "p < 0.05, uncorrected"
        lines.append(
            f"{head} ({pairs} seeds paired, Δ [95% CI]; resolved: {how}): "
            + "; ".join(parts)
            + "."
            + tail
        )
    return lines


def power_lines(power: pd.DataFrame, grouping: Grouping) -> list[str]:
    """One bullet per compared trained row: the smallest detectable difference per column."""
    lines = []
    for key in grouping.keys:
        part = power[power["key"] == key]
        if part.empty or grouping.is_floor(key):
            continue
        pairs = int(part["n_pairs"].max())
        texts = []
        for r in part.itertuples():
            column = COLUMN_BY_NAME[r.column]
            count = f"> {MAX_SEEDS}" if pd.isna(r.seeds_needed) else str(int(r.seeds_needed))
            needed = (
                "" if r.diff == 0
                else f", {count} seeds for the observed {_fmt(r.diff, column, True)}"
            )  # fmt: skip
            texts.append(f"{r.column} {_fmt(r.detectable_diff, column)}{needed}")
        lines.append(
            f"With {pairs} seed pairs, {grouping.label(key)} vs {part['baseline'].iloc[0]} "
            "resolves (80% power, two-sided paired t-test, alpha 0.05) differences of at "
            f"least: {'; '.join(texts)}."
        )
    return lines


def floor_lines(headline: pd.DataFrame, grouping: Grouping) -> list[str]:
    """Whether every trained row clears the raw-pixel / random-init floors, column by column
    (only columns where floor and row were measured under the same setting)."""
    lines = []
    cells = {(r.key, r.column): r for r in headline.itertuples()}
    trained = [k for k in grouping.keys if not grouping.is_floor(k)]
    for floor in (k for k in grouping.keys if grouping.is_floor(k)):
        below: list[str] = []
        compared = 0
        skipped: set[str] = set()
        for key in trained:
            if grouping.block(key) != grouping.block(floor):
                continue
            columns, losing = 0, []
            for column in COLUMN_BY_NAME.values():
                floor_cell, cell = cells.get((floor, column.name)), cells.get((key, column.name))
                if floor_cell is None or cell is None:
                    continue
                if floor_cell.signature != cell.signature:
                    skipped.add(column.name)
                    continue
                if not math.isfinite(cell.mean + floor_cell.mean):
                    continue
                columns += 1
                margin = (
                    cell.mean - floor_cell.mean
                    if column.higher_is_better
                    else floor_cell.mean - cell.mean
                )
                if margin <= 0:
                    losing.append(column.name)
            compared += columns
            if losing and len(losing) == columns:
                below.append(f"{grouping.label(key)} on all {columns} compared columns")
            elif losing:
                below.append(f"{grouping.label(key)} on {', '.join(losing)}")
        if not compared:
            continue
        name = grouping.label(floor)
        apart = (
            f" ({', '.join(sorted(skipped))} not compared: measured under another setting)"
            if skipped
            else ""
        )
        if below:
            lines.append(f"Not above the {name} floor (means): {'; '.join(below)}{apart}.")
        else:
            lines.append(
                f"Every trained row is above the {name} floor "
                f"({compared} of {compared} row-column comparisons){apart}."
            )
    return lines


def config_notes(runs: pd.DataFrame, grouping: Grouping) -> list[str]:
    """Config fields that differ inside a row (a hidden factor) or between a row and baseline."""
    config_columns = [
        c
        for c in runs.columns
        if c.startswith("config.")
        and not c.removeprefix("config.").startswith(INFRA_CONFIG_PREFIXES)
    ]
    if not config_columns:
        return []
    runs = runs[runs["has_config"]].copy()
    runs["key"] = [tuple(str(r[f]) for f in grouping.fields) for _, r in runs.iterrows()]
    notes = []

    def values(frame: pd.DataFrame, column: str) -> set[str]:
        return {str(v) for v in frame[column]}

    for key in grouping.keys:
        mine = runs[runs["key"] == key]
        if len(mine) > 1:
            differ = [c for c in config_columns if len(values(mine, c)) > 1]
            if differ:
                names = ", ".join(
                    f"{c.removeprefix('config.')} ({', '.join(sorted(values(mine, c)))})"
                    for c in differ[:5]
                )
                more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
                first = differ[0].removeprefix("config.")
                notes.append(
                    f"{grouping.label(key)} averages runs whose config differs in {names}{more}; "
                    f"pass --group-by {first} to separate them"
                )
        base = grouping.baseline_key(key)
        if base is None or base == key or mine.empty:
            continue
        theirs = runs[runs["key"] == base]
        if theirs.empty:
            continue
        split = ("regularizer.",) if REGULARIZER_FIELD in grouping.group_by else ()
        differ = [
            c.removeprefix("config.")
            for c in config_columns
            if not c.removeprefix("config.").startswith((*METHOD_CONFIG_PREFIXES, *split))
            and c.removeprefix("config.") not in grouping.group_by
            and values(mine, c) != values(theirs, c)
        ]
        if differ:
            notes.append(
                f"{grouping.label(key)} and {grouping.label(base)} also differ in "
                f"{', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}: "
                "the comparison is not matched on these"
            )
    return notes
