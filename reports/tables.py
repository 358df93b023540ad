"""The report's tables as pandas frames: headline (mean +- std over seeds) and paired deltas."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from djepa_bench.reports.collect import OUTCOME_PARAMS
from djepa_bench.reports.groups import Grouping, Key, keys_of
from djepa_bench.reports.stats import paired_difference, summarise


@dataclass(frozen=True)
class Column:
    """One headline column: which records feed it and which direction is better."""

    name: str
    protocol: str
    metric: str
    where: tuple[tuple[str, Any], ...] = ()  # params that must equal these values
    prefer: tuple[tuple[str, Any], ...] = ()  # params values used when several are present
    higher_is_better: bool = True
    decimals: int = 1
    description: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("kNN@20", "knn", "top1", (("k", 20),), (("weighting", "dino"),),
           description="k-NN top-1 (%), k=20"),
    Column("linear", "linear", "top1", description="linear-probe top-1 (%)"),
    Column("1-shot", "lowshot", "top1", (("shots", 1),), (("classifier", "logreg"),),
           description="1 image per class, logistic regression top-1 (%), mean over trials"),
    Column("5-shot", "lowshot", "top1", (("shots", 5),), (("classifier", "logreg"),),
           description="5 images per class top-1 (%)"),
    Column("25-shot", "lowshot", "top1", (("shots", 25),), (("classifier", "logreg"),),
           description="25 images per class top-1 (%)"),
    Column("mean corr. acc", "robustness", "mean_corruption_acc", (),
           (("classifier", "linear"),),
           description="top-1 (%) averaged over corruptions and severities"),
    Column("mCE", "robustness", "mce", (), (("classifier", "linear"),),
           higher_is_better=False,
           description="mean corruption error over the 15 ImageNet-C corruptions "
                       "(CE: error summed over severities / the baseline's); 100 = baseline"),
    Column("RankMe", "representation", "rankme", description="effective rank of the embeddings"),
)  # fmt: skip
COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
# Records of one cell differing only in these are averaged silently: repeated draws (trial
# and its seed) and what a protocol chose per draw (e.g. the logistic-regression C).
IGNORED_PARAM_SPREAD = {"trial", "seed", *OUTCOME_PARAMS}


def _matches(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return pd.to_numeric(series, errors="coerce") == value
    return series.astype(str) == str(value)


def select(records: pd.DataFrame, column: Column | None = None, **kwargs: Any) -> pd.DataFrame:
    """Records of one measurement: protocol/metric/params filters, then preferences.

    Preferences apply across all runs (so every row uses the same variant): the test split
    when present, then each `prefer` param value when any record has it.
    """
    protocol = kwargs.pop("protocol", column.protocol if column else None)
    metric = kwargs.pop("metric", column.metric if column else None)
    where = dict(column.where if column else ()) | kwargs.pop("where", {})
    prefer = dict(column.prefer if column else ()) | kwargs.pop("prefer", {})
    rows = records
    if protocol is not None:
        rows = rows[rows["protocol"] == protocol]
    if metric is not None:
        rows = rows[rows["metric"] == metric]
    for name, value in where.items():
        column_name = f"params.{name}"
        if column_name not in rows.columns:
            return rows.iloc[0:0]
        rows = rows[_matches(rows[column_name], value)]
    rows = rows[rows["value"].notna()]
    if (rows["split"] == "test").any():
        rows = rows[rows["split"] == "test"]
    for name, value in prefer.items():
        column_name = f"params.{name}"
        if column_name in rows.columns:
            hit = _matches(rows[column_name], value)
            if hit.any():
                rows = rows[hit]
    return rows


# The 15 corruptions of the ImageNet-C / CIFAR-10-C benchmark: mCE averages these (the 4
# extra ones, when evaluated, are reported per corruption but left out, as in the paper).
IMAGENET_C_BENCHMARK = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
RUN = ["key", "run_key", "seed"]  # one evaluated subject within one report row


def _spread_note(rows: pd.DataFrame, name: str) -> str | None:
    """A note when one run's records of a cell differ in params other than the trial."""
    varying: set[str] = set()
    for _, run_rows in rows.groupby(RUN):
        if len(run_rows) < 2:
            continue
        params = [json.loads(p) for p in run_rows["params"]]
        keys = set().union(*params) - IGNORED_PARAM_SPREAD
        varying |= {k for k in keys if len({json.dumps(p.get(k)) for p in params}) > 1}
    if varying:
        return f"{name}: averages records that differ in {', '.join(sorted(varying))}"
    return None


def _corruption_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per-corruption top-1 records (not clean), linear head preferred."""
    rows = select(records, protocol="robustness", metric="top1", prefer={"classifier": "linear"})
    if rows.empty or "params.corruption" not in rows.columns:
        return rows.iloc[0:0]
    return rows[rows["params.corruption"].astype(str) != "clean"]


def _mce_values(records: pd.DataFrame, grouping: Grouping, notes: list[str]) -> pd.DataFrame:
    """mCE of every run against its baseline row (100 = the baseline), as Hendrycks &
    Dietterich: CE_c = 100 x sum_s E_{s,c} / sum_s E^base_{s,c} over the severities both
    have, mCE = mean CE over the 15 benchmark corruptions (all evaluated ones when none of
    the 15 were run). The baseline error per (corruption, severity) is its mean over seeds.
    Without per-corruption records the protocol's own `mce` records (normalised by the
    baseline run named at eval time) are used.
    """
    rows = _corruption_rows(records)
    if rows.empty:
        own = select(records, COLUMN_BY_NAME["mCE"])
        if not own.empty:
            notes.append("mCE: taken from the robustness protocol's own mce records")
        return own.groupby(RUN, as_index=False)["value"].mean()
    if grouping.baseline is None:
        return pd.DataFrame(columns=[*RUN, "value"])
    rows = rows.assign(
        error=100.0 - rows["value"],
        corruption=rows["params.corruption"].astype(str),
        severity=pd.to_numeric(rows["params.severity"], errors="coerce"),
    )
    errors = rows.groupby([*RUN, "corruption", "severity"], as_index=False)["error"].mean()
    out = []
    for key in grouping.keys:
        base = grouping.baseline_key(key)
        if base is None:
            continue
        ref = errors[errors["key"] == base]
        # Seeds of the baseline are averaged first so each seed weighs the same.
        reference = ref.groupby(["corruption", "severity", "seed"])["error"].mean()
        reference = reference.groupby(["corruption", "severity"]).mean().rename("base")
        for (run_key, seed), run in errors[errors["key"] == key].groupby(["run_key", "seed"]):
            both = run.join(reference, on=["corruption", "severity"], how="inner")
            sums = both.groupby("corruption")[["error", "base"]].sum()
            sums = sums[sums["base"] > 0]
            benchmark = sums[sums.index.isin(IMAGENET_C_BENCHMARK)]
            sums = benchmark if len(benchmark) else sums
            if len(sums):
                mce = 100.0 * float((sums["error"] / sums["base"]).mean())
                out.append({"key": key, "run_key": run_key, "seed": seed, "value": mce})
    return pd.DataFrame(out, columns=[*RUN, "value"])


def run_values(records: pd.DataFrame, grouping: Grouping, notes: list[str]) -> pd.DataFrame:
    """One value per (row key, run, headline column): the mean of that run's records."""
    records = records.assign(key=keys_of(records, grouping))
    frames = []
    for column in COLUMNS:
        if column.name == "mCE":
            values = _mce_values(records, grouping, notes)
        else:
            selected = select(records, column)
            if column.metric == "mean_corruption_acc" and selected.empty:
                selected = _corruption_rows(records)  # mean over corruptions and severities
            note = _spread_note(selected, column.name)
            if note and column.protocol != "robustness":
                notes.append(note)
            values = selected.groupby(RUN, as_index=False)["value"].mean()
        frames.append(values.assign(column=column.name))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame.reindex(columns=[*RUN, "column", "value"])


def seed_values(values: pd.DataFrame) -> dict[tuple[Key, str], dict[int, float]]:
    """{(row key, column): {seed: value}}; several runs with one seed are averaged."""
    out: dict[tuple[Key, str], dict[int, float]] = {}
    for (key, column, seed), group in values.groupby(["key", "column", "seed"], sort=True):
        out.setdefault((key, column), {})[int(seed)] = float(group["value"].mean())
    return out


def headline_table(values: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    """Long table: one row per (row key, column) with mean, std, n seeds and a best flag."""
    per_seed = seed_values(values)
    rows = []
    for key in grouping.keys:
        for column in COLUMNS:
            seeds = per_seed.get((key, column.name))
            if not seeds:
                continue
            summary = summarise(list(seeds.values()))
            rows.append(
                {
                    **grouping.columns(key),
                    "key": key,
                    "column": column.name,
                    "mean": summary.mean,
                    "std": summary.std,
                    "n": summary.n,
                }
            )
    names = ["method", *grouping.group_by]
    table = pd.DataFrame(rows, columns=[*names, "key", "column", "mean", "std", "n"])
    table["best"] = False
    for column in COLUMNS:
        in_column = table["column"] == column.name
        blocks = table.loc[in_column, "key"].map(grouping.block)
        for block in sorted(set(blocks)):
            index = blocks[blocks == block].index
            shown = table.loc[index, "mean"].round(column.decimals)
            best = shown.max() if column.higher_is_better else shown.min()
            table.loc[index[(shown == best).to_numpy()], "best"] = True
    return table


def delta_table(values: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    """Paired (by seed) differences to the baseline row with their 95% t-interval."""
    per_seed = seed_values(values)
    rows = []
    for key in grouping.keys:
        base = grouping.baseline_key(key)
        if base is None or base == key:
            continue
        for column in COLUMNS:
            mine, theirs = per_seed.get((key, column.name)), per_seed.get((base, column.name))
            if not mine or not theirs:
                continue
            diff = paired_difference(mine, theirs)
            rows.append(
                {
                    **grouping.columns(key),
                    "key": key,
                    "baseline": grouping.label(base),
                    "column": column.name,
                    "diff": diff.mean,
                    "ci_low": diff.low,
                    "ci_high": diff.high,
                    "n_pairs": diff.n,
                    "excludes_zero": diff.excludes_zero,
                    "better": _better(column, diff.mean) if diff.excludes_zero else None,
                }
            )
    columns = ["method", *grouping.group_by, "key", "baseline", "column", "diff", "ci_low",
               "ci_high", "n_pairs", "excludes_zero", "better"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _better(column: Column, diff: float) -> bool | None:
    if not math.isfinite(diff) or diff == 0:
        return None
    return (diff > 0) == column.higher_is_better


def present_columns(table: pd.DataFrame) -> list[Column]:
    """The headline columns that have at least one value, in the fixed order."""
    names = set(table["column"])
    return [c for c in COLUMNS if c.name in names]


def _cell_text(value: Any) -> str:
    """Config value as table text: '' for missing, 2 rather than 2.0 (NaN-padded columns)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def runs_table(runs: pd.DataFrame, records: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    """One row per run: method, seed, dataset, record count, a few config fields, status."""
    counts = records.groupby("run_key").size()
    datasets = records.groupby("run_key")["dataset"].agg(lambda s: ", ".join(sorted(set(s))))
    table = pd.DataFrame(
        {
            "run": runs["run_key"],
            "method": runs["method"],
            "seed": runs["seed"],
            "dataset": runs["run_key"].map(datasets).fillna(""),
            "records": runs["run_key"].map(counts).fillna(0).astype(int),
        }
    )
    for name in ("model.size", "train.epochs", *grouping.group_by):
        column = f"config.{name}"
        if column in runs.columns and name not in table.columns:
            table[name] = runs[column].map(_cell_text)
    if "wall_s" in runs.columns and runs["wall_s"].notna().any():
        table["train time"] = runs["wall_s"].map(_duration)
    return table.reset_index(drop=True)


def _duration(seconds: Any) -> str:
    """'1h 02m', '3m 05s', '' for missing (meta.json wall_s)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    seconds = int(round(float(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
