"""The report's tables as pandas frames: headline (over seeds), paired deltas, power.

Every cell knows the setting it was measured under (its `signature`: the embedding
dimension for RankMe, the corruption set for the robustness columns, ...). Rows are
compared (bold, paired deltas, floor checks) only with rows of the same signature.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from djepa_bench.errors import UserError
from djepa_bench.reports.collect import OUTCOME_PARAMS
from djepa_bench.reports.groups import Grouping, Key, keys_of
from djepa_bench.reports.power import detectable_difference, paired_power, seeds_needed
from djepa_bench.reports.stats import adjust, paired_difference, summarise


@dataclass(frozen=True)
class Column:
    """One headline column: which records feed it, which direction is better, and which
    params must agree before two rows are compared."""

    id: str  # what --columns takes
    name: str
    protocol: str
    metric: str
    where: tuple[tuple[str, Any], ...] = ()  # params that must equal these values
    prefer: tuple[tuple[str, Any], ...] = ()  # params values used when several are present
    higher_is_better: bool = True
    decimals: int = 1
    description: str = ""
    comparable_on: tuple[str, ...] = ()  # params whose values must agree across rows
    per_dim: bool = False  # divide each value by its record's params.dim


def _knn(k: int) -> Column:
    return Column(f"knn{k}", f"kNN@{k}", "knn", "top1", (("k", k),), (("weighting", "dino"),),
                  description=f"k-NN top-1 (%), k={k}")  # fmt: skip


def _shots(n: int) -> Column:
    return Column(f"{n}shot", f"{n}-shot", "lowshot", "top1", (("shots", n),),
                  (("classifier", "logreg"),),
                  description=f"{n} labelled image{'s' * (n > 1)} per class, logistic regression "
                              "top-1 (%), mean over trials")  # fmt: skip


CORRUPTION_SET = ("corruptions", "severities", "param_set", "source", "test_images")
CATALOG: tuple[Column, ...] = (
    _knn(10), _knn(20), _knn(100), _knn(200),
    Column("linear", "linear", "linear", "top1", description="linear-probe top-1 (%)"),
    Column("linear_top5", "linear top-5", "linear", "top5",
           description="linear-probe top-5 (%)"),
    _shots(1), _shots(2), _shots(5), _shots(10), _shots(25),
    Column("corr_acc", "mean corr. acc", "robustness", "mean_corruption_acc", (),
           (("classifier", "linear"),), comparable_on=CORRUPTION_SET,
           description="top-1 (%) averaged over corruptions and severities; compared only "
                       "between rows evaluated on the same corruptions and severities"),
    Column("mce", "mCE", "robustness", "mce", (), (("classifier", "linear"),),
           higher_is_better=False, comparable_on=CORRUPTION_SET,
           description="mean corruption error over the 15 ImageNet-C corruptions "
                       "(CE: error summed over severities / the baseline's); 100 = baseline"),
    Column("rankme", "RankMe", "representation", "rankme", comparable_on=("dim",),
           description="effective rank of the embeddings; compared only between rows of "
                       "equal embedding dimension D"),
    Column("attentive", "attentive", "attentive", "top1",
           description="attentive-probe top-1 (%): a learned query cross-attending to the "
                       "frozen patch tokens (V-JEPA)"),
    Column("finetune", "fine-tune", "finetune", "top1",
           description="end-to-end fine-tuning top-1 (%)"),
    Column("rankme_per_dim", "RankMe/D", "representation", "rankme", decimals=3,
           per_dim=True,
           description="RankMe divided by the embedding dimension D (fraction of dimensions "
                       "in use), comparable across dimensions"),
)  # fmt: skip
# Columns without records are left out, so attentive and fine-tuning show only when run.
DEFAULT_COLUMN_IDS = (
    "knn20", "linear", "1shot", "5shot", "25shot", "corr_acc", "mce", "rankme", "attentive",
    "finetune",
)  # fmt: skip
COLUMN_BY_NAME = {c.name: c for c in CATALOG}
COLUMN_BY_ID = {c.id: c for c in CATALOG}
COLUMNS: tuple[Column, ...] = tuple(COLUMN_BY_ID[i] for i in DEFAULT_COLUMN_IDS)
# Records of one cell differing only in these are averaged silently: repeated draws (trial
# and its seed) and what a protocol chose per draw (e.g. the logistic-regression C).
IGNORED_PARAM_SPREAD = {"trial", "seed", *OUTCOME_PARAMS}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def parse_columns(text: str | None) -> tuple[Column, ...]:
    """'knn20,linear,rankme' -> those Columns in that order; None or '' -> the defaults.

    Ids (knn20, 5shot, corr_acc, rankme_per_dim) and display names (kNN@20, 5-shot) both
    work; an unknown name is a UserError listing the choices.
    """
    if not text or not text.strip():
        return COLUMNS
    by_slug = {_slug(c.id): c for c in CATALOG} | {_slug(c.name): c for c in CATALOG}
    chosen: list[Column] = []
    for part in text.split(","):
        if not part.strip():
            continue
        column = by_slug.get(_slug(part))
        if column is None:
            raise UserError(
                f"unknown --columns entry '{part.strip()}'; choose from "
                f"{', '.join(c.id for c in CATALOG)}"
            )
        if column not in chosen:
            chosen.append(column)
    if not chosen:
        raise UserError("--columns is empty; name at least one column, e.g. knn20,linear")
    return tuple(chosen)


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
VALUE_COLUMNS = [*RUN, "column", "value", "signature"]


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


def _param_text(value: Any) -> str:
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, list):
        return ",".join(_param_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _signature(params: dict[str, Any], names: tuple[str, ...]) -> str:
    """'D=128' or 'corruptions=15, severities=1,3,5': the setting rows must share."""
    parts = []
    for name in names:
        if name in params and params[name] is not None:
            label = "D" if name == "dim" else name
            parts.append(f"{label}={_param_text(params[name])}")
    return ", ".join(parts)


def _corruption_set_signature(rows: pd.DataFrame) -> str:
    corruptions = sorted(set(rows["corruption"]))
    severities = sorted({int(s) for s in rows["severity"] if s == s})
    return f"corruptions={len(corruptions)}, severities={','.join(map(str, severities))}"


def _signatures(selected: pd.DataFrame, column: Column) -> pd.DataFrame:
    """One signature per run: the comparable_on params its records share ('' if none)."""
    if selected.empty:
        return pd.DataFrame(columns=[*RUN, "signature"])
    texts = [
        _signature(json.loads(p), column.comparable_on) if column.comparable_on else ""
        for p in selected["params"]
    ]
    frame = selected[RUN].assign(signature=texts)
    return frame.groupby(RUN, as_index=False)["signature"].agg(lambda s: " | ".join(sorted(set(s))))


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
        column = COLUMN_BY_ID["mce"]
        own = select(records, column)
        if not own.empty:
            notes.append("mCE: taken from the robustness protocol's own mce records")
        values = own.groupby(RUN, as_index=False)["value"].mean()
        return values.merge(_signatures(own, column), on=RUN, how="left")
    if grouping.baseline is None:
        return pd.DataFrame(columns=[*RUN, "value", "signature"])
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
                used = both[both["corruption"].isin(sums.index)]
                out.append({"key": key, "run_key": run_key, "seed": seed, "value": mce,
                            "signature": _corruption_set_signature(used)})  # fmt: skip
    return pd.DataFrame(out, columns=[*RUN, "value", "signature"])


def _corr_acc_values(records: pd.DataFrame, column: Column) -> pd.DataFrame:
    """Mean corrupted accuracy: the protocol's records, else the mean over per-corruption
    records (signature: the corruption and severity set each run was evaluated on)."""
    selected = select(records, column)
    if not selected.empty:
        values = selected.groupby(RUN, as_index=False)["value"].mean()
        return values.merge(_signatures(selected, column), on=RUN, how="left")
    rows = _corruption_rows(records)
    if rows.empty:
        return pd.DataFrame(columns=[*RUN, "value", "signature"])
    rows = rows.assign(
        corruption=rows["params.corruption"].astype(str),
        severity=pd.to_numeric(rows["params.severity"], errors="coerce"),
    )
    values = rows.groupby(RUN, as_index=False)["value"].mean()
    signatures = rows.groupby(RUN)[["corruption", "severity"]].apply(_corruption_set_signature)
    return values.merge(signatures.rename("signature").reset_index(), on=RUN, how="left")


def run_values(
    records: pd.DataFrame,
    grouping: Grouping,
    notes: list[str],
    columns: tuple[Column, ...] = COLUMNS,
) -> pd.DataFrame:
    """One value per (row key, run, column): the mean of that run's records (trials are
    averaged here, so every spread later is over seeds), with the run's signature."""
    records = records.assign(key=keys_of(records, grouping))
    frames = []
    for column in columns:
        if column.id == "mce":
            values = _mce_values(records, grouping, notes)
        elif column.id == "corr_acc":
            values = _corr_acc_values(records, column)
        else:
            selected = select(records, column)
            note = _spread_note(selected, column.name)
            if note:
                notes.append(note)
            if column.per_dim:
                dims = selected["params"].map(lambda p: json.loads(p).get("dim"))
                dims = pd.to_numeric(dims, errors="coerce")
                if dims.isna().any():
                    notes.append(f"{column.name}: records without params.dim are left out")
                selected = selected.assign(value=selected["value"] / dims)[dims.notna()]
            values = selected.groupby(RUN, as_index=False)["value"].mean()
            values = values.merge(_signatures(selected, column), on=RUN, how="left")
        frames.append(values.assign(column=column.name))
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True) if frames else None
    if frame is None or frame.empty:
        return pd.DataFrame(columns=VALUE_COLUMNS)
    frame["signature"] = frame["signature"].fillna("").astype(str)
    return frame.reindex(columns=VALUE_COLUMNS)


def seed_values(values: pd.DataFrame) -> dict[tuple[Key, str], dict[int, float]]:
    """{(row key, column): {seed: value}}; several runs with one seed are averaged."""
    out: dict[tuple[Key, str], dict[int, float]] = {}
    for (key, column, seed), group in values.groupby(["key", "column", "seed"], sort=True):
        out.setdefault((key, column), {})[int(seed)] = float(group["value"].mean())
    return out


def cell_signatures(values: pd.DataFrame) -> dict[tuple[Key, str], str]:
    """{(row key, column): signature}; runs of one row measured differently give 'mixed'."""
    out: dict[tuple[Key, str], str] = {}
    for (key, column), group in values.groupby(["key", "column"], sort=True):
        found = sorted(set(group["signature"]))
        out[(key, column)] = found[0] if len(found) == 1 else "mixed: " + " | ".join(found)
    return out


def _seed_text(values: dict[int, float]) -> str:
    return ";".join(f"{v:.6g}" for _, v in sorted(values.items()))


def headline_table(
    values: pd.DataFrame, grouping: Grouping, columns: tuple[Column, ...] = COLUMNS
) -> pd.DataFrame:
    """Long table: one row per (row key, column) with mean, sd, n seeds, the 95% t
    half-width (from 3 seeds), the per-seed values, the signature and two flags: `best`
    (best mean among the comparable rows of its dataset) and `apart` (measured under a
    setting the reference row of its column does not share, so compared with no one)."""
    per_seed = seed_values(values)
    signatures = cell_signatures(values)
    rows = []
    for key in grouping.keys:
        for column in columns:
            seeds = per_seed.get((key, column.name))
            if not seeds:
                continue
            summary = summarise([seeds[s] for s in sorted(seeds)])
            rows.append(
                {
                    **grouping.columns(key),
                    "key": key,
                    "column": column.name,
                    "mean": summary.mean,
                    "std": summary.std,
                    "n": summary.n,
                    "ci_half": summary.half,
                    "seeds": ";".join(str(s) for s in sorted(seeds)),
                    "per_seed": _seed_text(seeds),
                    "signature": signatures.get((key, column.name), ""),
                }
            )
    names = ["method", *grouping.group_by]
    table = pd.DataFrame(
        rows,
        columns=[*names, "key", "column", "mean", "std", "n", "ci_half", "seeds", "per_seed",
                 "signature"],
    )  # fmt: skip
    table["best"] = False
    table["apart"] = False
    for column in columns:
        in_column = table["column"] == column.name
        blocks = table.loc[in_column, "key"].map(grouping.block)
        for block in sorted(set(blocks)):
            index = blocks[blocks == block].index
            signature = table.loc[index, "signature"]
            reference = _reference_signature(table.loc[index], grouping)
            table.loc[index, "apart"] = (signature != reference).to_numpy()
            for value in sorted(set(signature)):
                group = signature[signature == value].index
                if len(group) < 2 or value.startswith("mixed"):
                    continue  # a lone row (or one measured inconsistently) is best of nothing
                shown = table.loc[group, "mean"].round(column.decimals)
                best = shown.max() if column.higher_is_better else shown.min()
                table.loc[group[(shown == best).to_numpy()], "best"] = True
    return table


def _reference_signature(cells: pd.DataFrame, grouping: Grouping) -> str:
    """The setting a column's rows are judged under: the baseline's, else the most common
    among trained rows, else among all rows."""
    for cell in cells.itertuples():
        if grouping.baseline is not None and cell.key[0] == grouping.baseline:
            return cell.signature
    trained = cells[[not grouping.is_floor(k) for k in cells["key"]]]
    pool = trained if not trained.empty else cells
    counts = pool["signature"].value_counts(sort=False)
    return str(counts.idxmax())


def delta_table(
    values: pd.DataFrame,
    grouping: Grouping,
    columns: tuple[Column, ...] = COLUMNS,
    correction: str = "holm",
) -> pd.DataFrame:
    """Paired (by seed) differences to the baseline row: mean, per-seed differences, and
    from 3 pairs the 95% t-interval and a paired t-test whose p-values are adjusted over
    every test of the table (`correction`: holm | none). Cells whose row and baseline were
    measured under different settings (signatures) are kept, marked not comparable."""
    per_seed = seed_values(values)
    signatures = cell_signatures(values)
    rows = []
    for key in grouping.keys:
        base = grouping.baseline_key(key)
        if base is None or base == key:
            continue
        for column in columns:
            mine, theirs = per_seed.get((key, column.name)), per_seed.get((base, column.name))
            if not mine or not theirs:
                continue
            sig_mine = signatures.get((key, column.name), "")
            sig_base = signatures.get((base, column.name), "")
            comparable = sig_mine == sig_base and not sig_mine.startswith("mixed")
            diff = paired_difference(mine, theirs)
            rows.append(
                {
                    **grouping.columns(key),
                    "key": key,
                    "baseline": grouping.label(base),
                    "column": column.name,
                    "comparable": comparable,
                    "signature": sig_mine,
                    "baseline_signature": sig_base,
                    "diff": diff.mean if comparable else math.nan,
                    "ci_low": diff.low if comparable else math.nan,
                    "ci_high": diff.high if comparable else math.nan,
                    "n_pairs": diff.n,
                    "sd": diff.sd if comparable else math.nan,
                    "per_seed": _seed_text(dict(zip(diff.seeds, diff.diffs, strict=True)))
                    if comparable
                    else "",
                    "p": diff.p if comparable else math.nan,
                }
            )
    names = ["method", *grouping.group_by]
    tested = ["p_adjusted", "correction", "significant", "better"]
    columns_out = [*names, "key", "baseline", "column", "comparable", "signature",
                   "baseline_signature", "diff", "ci_low", "ci_high", "n_pairs", "sd",
                   "per_seed", "p", *tested]  # fmt: skip
    table = pd.DataFrame(rows, columns=[c for c in columns_out if c not in tested])
    table["p_adjusted"] = adjust(table["p"].tolist(), correction) if len(table) else []
    table["correction"] = correction
    table["significant"] = table["p_adjusted"].map(lambda p: bool(math.isfinite(p) and p < 0.05))
    by_name = {c.name: c for c in columns}
    table["better"] = [
        _better(by_name[c], d) if s else None
        for c, d, s in zip(table["column"], table["diff"], table["significant"], strict=True)
    ]
    return table.reindex(columns=columns_out)


def tests_count(deltas: pd.DataFrame) -> int:
    """How many paired tests the correction was applied over."""
    return int(deltas["p"].map(lambda p: math.isfinite(p)).sum()) if len(deltas) else 0


def power_table(deltas: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """Per delta cell with at least two pairs: the smallest paired difference detectable
    with 80% power at alpha 0.05 (two-sided, unadjusted) given the observed sd of the
    paired differences and the current number of pairs, and the number of seed pairs
    that would resolve the observed difference with that power."""
    out = []
    names = [c for c in deltas.columns if c not in _DELTA_ONLY]
    for row in deltas.itertuples(index=False):
        if not row.comparable or row.n_pairs < 2 or not math.isfinite(row.sd):
            continue
        detectable = detectable_difference(row.sd, row.n_pairs)
        needed = seeds_needed(row.diff, row.sd)
        out.append(
            {
                **{n: getattr(row, n) for n in names},
                "n_pairs": row.n_pairs,
                "diff": row.diff,
                "sd": row.sd,
                "detectable_diff": detectable,
                "power_observed": paired_power(row.diff, row.sd, row.n_pairs),
                "seeds_needed": needed,
            }
        )
    order = {c.name: i for i, c in enumerate(columns)}
    table = pd.DataFrame(
        out, columns=[*names, "n_pairs", "diff", "sd", "detectable_diff", "power_observed",
                      "seeds_needed"],
    )  # fmt: skip
    if not table.empty:
        table = table.iloc[sorted(range(len(table)), key=lambda i: order[table["column"].iloc[i]])]
        table = table.reset_index(drop=True)
    table["seeds_needed"] = table["seeds_needed"].astype("Int64")
    return table


_DELTA_ONLY = {"comparable", "signature", "baseline_signature", "diff", "ci_low", "ci_high",
               "n_pairs", "sd", "per_seed", "p", "p_adjusted", "correction", "significant",
               "better"}  # fmt: skip


def _better(column: Column, diff: float) -> bool | None:
    if not math.isfinite(diff) or diff == 0:
        return None
    return (diff > 0) == column.higher_is_better


def present_columns(table: pd.DataFrame, columns: tuple[Column, ...] = COLUMNS) -> list[Column]:
    """The chosen columns that have at least one value, in the chosen order."""
    names = set(table["column"])
    return [c for c in columns if c.name in names]


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
    presets = records.groupby("run_key")["eval_preset"].agg(
        lambda s: ", ".join(sorted({p for p in s if p}))
    )
    table = pd.DataFrame(
        {
            "run": runs["run_key"],
            "method": runs["method"],
            "seed": runs["seed"],
            "dataset": runs["run_key"].map(datasets).fillna(""),
            "records": runs["run_key"].map(counts).fillna(0).astype(int),
        }
    )
    if (presets != "").any():
        table["eval preset"] = runs["run_key"].map(presets).fillna("")
    for name in ("model.size", "train.epochs", *grouping.group_by):
        column = f"config.{name}"
        if column in runs.columns and name not in table.columns:
            table[name] = runs[column].map(_cell_text)
    regularizer = runs.get("regularizer", pd.Series(dtype=str)).fillna("").astype(str)
    if "regularizer" not in table.columns and regularizer.str.len().gt(0).any():
        table["regularizer"] = regularizer
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
