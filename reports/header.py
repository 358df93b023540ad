"""What a report states up front: its title, the statistics policy, the evaluation presets
and the anti-collapse regulariser of the runs, and warnings about mixed presets."""

from __future__ import annotations

import pandas as pd

from djepa_bench.reports.groups import NO_REGULARIZER, Grouping, method_label
from djepa_bench.reports.stats import MIN_SEEDS_FOR_INTERVAL

NOT_RECORDED = "not recorded"


def default_title(grouping: Grouping, datasets: list[str]) -> str:
    """'D-JEPA vs I-JEPA on cifar10' (trained methods, the baseline last), or the methods."""
    trained = []
    for key in grouping.keys:
        if grouping.is_floor(key) or key[0] == grouping.baseline:
            continue
        label = method_label(key[0])
        if label not in trained:
            trained.append(label)
    base = method_label(grouping.baseline) if grouping.baseline else None
    has_base = base is not None and any(k[0] == grouping.baseline for k in grouping.keys)
    if trained and has_base:
        methods = f"{', '.join(trained)} vs {base}"
    elif has_base:
        methods = str(base)
    else:
        floors = [method_label(k[0]) for k in grouping.keys if grouping.is_floor(k)]
        methods = ", ".join(dict.fromkeys(trained or floors)) or "runs"
    where = f" on {', '.join(datasets)}" if datasets else ""
    return f"{methods}{where}"


def statistics_sentence(correction: str, tests: int) -> str:
    """The policy in one paragraph: what intervals, marks and corrections mean here."""
    if tests == 0:
        corrected = (
            "`*` marks a significant paired difference (no row has enough seeds for a test "
            f"here; the correction would be {correction}"
            + (", the default)" if correction == "holm" else "; the default is holm)")
        )
    elif correction == "holm":
        corrected = (
            f"`*` marks a difference significant after Holm's correction over the {tests} "
            "paired test(s) of the table (adjusted p < 0.05; `--correction holm`, the default)"
        )
    else:
        corrected = (
            f"`*` marks an uncorrected p < 0.05 over {tests} paired test(s) "
            "(`--correction none`; the default is holm)"
        )
    return (
        f"Statistics: rows are averaged over seeds and compared paired by seed. From "
        f"{MIN_SEEDS_FOR_INTERVAL} seeds on, ± and [low, high] are 95% t-intervals over seeds "
        f"and {corrected}. Below {MIN_SEEDS_FOR_INTERVAL} seeds no interval and no mark is "
        "given; the per-seed values are shown in parentheses instead. Spreads are over seeds "
        "only: repeated trials of one run (low-shot draws) are averaged first."
    )


def preset_lines(records: pd.DataFrame, grouping: Grouping, keys: list) -> tuple[str, list[str]]:
    """('Evaluation preset: quick.', [warnings]) from the records' eval_preset field.

    A warning is given when rows of one table were evaluated under different named
    presets; records without the field (older versions) are listed, not warned about.
    """
    presets = records["eval_preset"] if "eval_preset" in records.columns else None
    if presets is None:
        return f"Evaluation preset: {NOT_RECORDED} in the records.", []
    named = sorted({p for p in presets if p})
    unnamed = int((presets == "").sum())
    if not named:
        return f"Evaluation preset: {NOT_RECORDED} in the records.", []
    line = f"Evaluation preset{'s' * (len(named) > 1)}: {', '.join(named)}"
    if unnamed:
        line += f" ({unnamed} record(s) from older versions do not name one)"
    warnings = []
    frame = records.assign(key=keys)
    per_row = (
        frame[frame["eval_preset"] != ""]
        .groupby("key")["eval_preset"]
        .agg(lambda s: ", ".join(sorted(set(s))))
    )
    if len(named) > 1 and "eval_preset" not in grouping.group_by:
        described = "; ".join(
            f"{grouping.label(k)}: {per_row[k]}" for k in grouping.keys if k in per_row.index
        )
        warnings.append(
            "⚠ Rows compared in these tables were evaluated under different evaluation "
            f"presets ({described}); their numbers are not measured alike. Re-evaluate them "
            "under one preset, or pass --group-by eval_preset to keep them apart."
        )
    return line + ".", warnings


def regularizer_line(runs: pd.DataFrame, grouping: Grouping) -> str | None:
    """'Anti-collapse regulariser: ... in every trained run', or how rows are labelled when
    the runs differ; None when no run has a config."""
    if "regularizer" not in runs.columns:
        return None
    settings = sorted({s for s in runs["regularizer"].astype(str) if s and s != "—"})
    if not settings:
        return None
    if len(settings) == 1:
        setting = settings[0]
        if setting == NO_REGULARIZER:
            return (
                "Anti-collapse regulariser: none in every trained run "
                "(regularizer.variance and covariance are 0 or absent in config.yaml)."
            )
        return f"Anti-collapse regulariser: {setting} in every trained run."
    if "regularizer" in grouping.group_by:
        return (
            "Anti-collapse regulariser differs between runs ("
            + "; ".join(settings)
            + "): rows are split and labelled by it (`+ VICReg`), and deltas pair only runs "
            "with the same setting."
        )
    return "Anti-collapse regulariser differs between runs (" + "; ".join(settings) + ")."
