"""The auto-generated prose of a report: what differs from the baseline, by how much, how sure."""

from __future__ import annotations

import math

import pandas as pd

from djepa_bench.reports.groups import Grouping
from djepa_bench.reports.render import number
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


def comparison_lines(deltas: pd.DataFrame, grouping: Grouping) -> list[str]:
    """One bullet per compared row: resolved gains, resolved losses, and what is within noise."""
    lines = []
    for key in grouping.keys:
        part = deltas[deltas["key"] == key]
        if part.empty or grouping.is_floor(key):
            continue
        base = part["baseline"].iloc[0]
        pairs = int(part["n_pairs"].max())
        head = f"**{grouping.label(key)} vs {base}**"
        if pairs < 2:
            diffs = ", ".join(
                f"{r.column} {_fmt(r.diff, COLUMN_BY_NAME[r.column], True)}"
                for r in part.itertuples()
                if r.n_pairs >= 1
            )
            lines.append(
                f"{head} ({pairs} paired seed; no confidence interval can be given, "
                f"so these are single measurements, not established differences): {diffs}."
            )
            continue
        better, worse, unresolved = [], [], []
        for r in part.itertuples():
            column = COLUMN_BY_NAME[r.column]
            text = (
                f"{r.column} {_fmt(r.diff, column, True)} "
                f"[{_fmt(r.ci_low, column, True)}, {_fmt(r.ci_high, column, True)}]"
            )
            if r.excludes_zero:
                (better if r.better else worse).append(text)
            else:
                unresolved.append(text)
        parts = []
        if better:
            parts.append("better on " + "; ".join(better))
        if worse:
            parts.append("worse on " + "; ".join(worse))
        if unresolved:
            parts.append("no difference resolved (95% CI includes 0) on " + "; ".join(unresolved))
        lines.append(f"{head} ({pairs} seeds paired, Δ [95% CI]): " + "; ".join(parts) + ".")
    return lines


def floor_lines(headline: pd.DataFrame, grouping: Grouping) -> list[str]:
    """Whether every trained row clears the raw-pixel / random-init floors, column by column."""
    lines = []
    means = {(r.key, r.column): r.mean for r in headline.itertuples()}
    trained = [k for k in grouping.keys if not grouping.is_floor(k)]
    for floor in (k for k in grouping.keys if grouping.is_floor(k)):
        below: list[str] = []
        compared = 0
        for key in trained:
            if grouping.block(key) != grouping.block(floor):
                continue
            columns, losing = 0, []
            for column in COLUMN_BY_NAME.values():
                floor_mean, mean = means.get((floor, column.name)), means.get((key, column.name))
                if floor_mean is None or mean is None or not math.isfinite(mean + floor_mean):
                    continue
                columns += 1
                margin = mean - floor_mean if column.higher_is_better else floor_mean - mean
                if margin <= 0:
                    losing.append(column.name)
            compared += columns
            if losing and len(losing) == columns:
                below.append(f"{grouping.label(key)} on all {columns} columns")
            elif losing:
                below.append(f"{grouping.label(key)} on {', '.join(losing)}")
        if not compared:
            continue
        name = grouping.label(floor)
        if below:
            lines.append(f"Not above the {name} floor: {'; '.join(below)}.")
        else:
            lines.append(
                f"Every trained row is above the {name} floor "
                f"({compared} of {compared} row-column comparisons)."
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
        differ = [
            c.removeprefix("config.")
            for c in config_columns
            if not c.removeprefix("config.").startswith(METHOD_CONFIG_PREFIXES)
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
