"""Which rows a report has: runs grouped by method and --group-by fields, their order and labels."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import pandas as pd

from djepa_bench.errors import UserError
from djepa_bench.reports.collect import MISSING, Collection

FLOOR_METHODS = ("pixels", "random")


def is_floor_method(method: str) -> bool:
    """Whether a run's method (e.g. 'random' or 'pixels:raw') is a raw-pixel/random floor."""
    return method.partition(":")[0] in FLOOR_METHODS


METHOD_LABELS = {
    "ijepa": "I-JEPA",
    "djepa": "D-JEPA",
    "pixels": "raw pixels",
    "random": "random init",
}
RECORD_GROUP_FIELDS = ("dataset", "split", "run", "eval_preset")
REGULARIZER_FIELD = "regularizer"  # derived from config regularizer.* (VICReg terms)
NO_REGULARIZER = "none"

Key = tuple[str, ...]


def method_label(row: str) -> str:
    """Display name of a row ("djepa" -> "D-JEPA", "random:tiny" -> "random init (tiny)")."""
    if row in METHOD_LABELS:
        return METHOD_LABELS[row]
    method, _, variant = row.partition(":")
    if method in METHOD_LABELS and variant:
        return f"{METHOD_LABELS[method]} ({variant})"
    return row


@dataclass(frozen=True)
class Grouping:
    """Row keys of a report: (row, *group_by values), in display order, with the baseline.

    `row` is the method (or a reference model's run name, see collect.row_names).
    """

    fields: tuple[str, ...]  # ("row", *group_by)
    keys: tuple[Key, ...]
    baseline: str | None
    regularizer_labels: tuple[tuple[str, str], ...] = ()  # group value -> label suffix

    @property
    def group_by(self) -> tuple[str, ...]:
        return self.fields[1:]

    @property
    def shown_fields(self) -> tuple[str, ...]:
        """Group-by fields shown as their own table columns (the regularizer goes into the
        method's name instead)."""
        return tuple(f for f in self.group_by if f != REGULARIZER_FIELD)

    def method_text(self, key: Key) -> str:
        """ "D-JEPA" or "D-JEPA + VICReg": the method with its regularizer, if rows differ."""
        suffix = dict(self.regularizer_labels)
        values = dict(zip(self.group_by, key[1:], strict=True))
        return method_label(key[0]) + suffix.get(values.get(REGULARIZER_FIELD, ""), "")

    def shown_values(self, key: Key) -> list[str]:
        values = dict(zip(self.group_by, key[1:], strict=True))
        return [values[f] for f in self.shown_fields]

    def label(self, key: Key) -> str:
        """ "D-JEPA", "D-JEPA + VICReg" or "D-JEPA (model.size=small)"."""
        extra = [f"{f}={v}" for f, v in zip(self.shown_fields, self.shown_values(key), strict=True)]
        return self.method_text(key) + (f" ({', '.join(extra)})" if extra else "")

    def block(self, key: Key) -> Key:
        """Rows compared for 'best in column': those evaluated on the same dataset (and
        under the same evaluation preset when rows are grouped by it)."""
        return tuple(
            v for f, v in zip(self.fields, key, strict=True) if f in ("dataset", "eval_preset")
        )

    def baseline_key(self, key: Key) -> Key | None:
        """The baseline row a row is compared with: same group-by values; a row missing a
        field (a floor without config) matches the one baseline agreeing on the rest."""
        if self.baseline is None:
            return None
        exact = (self.baseline, *key[1:])
        if exact in self.keys:
            return exact
        candidates = [
            k
            for k in self.keys
            if k[0] == self.baseline
            and all(a == b or MISSING in (a, b) for a, b in zip(k[1:], key[1:], strict=True))
        ]
        return candidates[0] if len(candidates) == 1 else None

    def is_floor(self, key: Key) -> bool:
        """Raw-pixel and random-init rows: the floors every trained encoder should clear."""
        return is_floor_method(key[0])

    def columns(self, key: Key) -> dict[str, str]:
        """A key as table columns: method, then the group-by fields."""
        return {"method": key[0], **dict(zip(self.group_by, key[1:], strict=True))}


def _text(value: object) -> str | None:
    """A config value as group text (2 rather than 2.0); None when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _config_fields(runs: pd.DataFrame) -> list[str]:
    return sorted(c.removeprefix("config.") for c in runs.columns if c.startswith("config."))


def attach_groups(collection: Collection, group_by: list[str], baseline: str | None) -> Grouping:
    """Add one column per group-by field to records, runs and logs; check the grouping is sound.

    A field is a record field (dataset, split) or a config key (model.size). Mixing
    datasets without grouping by dataset, or naming a baseline no run has, is an error.
    """
    fields: list[str] = []
    for name in group_by:
        if name in ("method", "row", "seed"):
            if name == "seed":
                raise UserError("--group-by seed is not allowed: seeds are what rows average over")
            continue
        if name not in fields:
            fields.append(name)
    records, runs = collection.records, collection.runs
    runs[REGULARIZER_FIELD] = regularizer_settings(runs)
    settings = set(runs.loc[runs[REGULARIZER_FIELD] != "", REGULARIZER_FIELD])
    explicit = any(f.startswith("regularizer.") for f in fields)
    if len(settings) > 1 and REGULARIZER_FIELD not in fields and not explicit:
        fields.append(REGULARIZER_FIELD)  # never average or pair across regularizer settings
    config_fields = _config_fields(runs)
    by_dir = runs.drop_duplicates("run_dir").set_index("run_dir")
    for name in fields:
        if name == REGULARIZER_FIELD:
            values = runs.drop_duplicates("run_dir").set_index("run_dir")[REGULARIZER_FIELD]
            values = values.replace("", MISSING)
            records[name] = records["run_dir"].map(values).fillna(MISSING).astype(str)
            runs[name] = runs["run_dir"].map(values).fillna(MISSING).astype(str)
            continue
        if name in RECORD_GROUP_FIELDS:
            records[name] = records[name].replace("", MISSING)
            first = records.groupby("run_key")[name].first()
            runs[name] = runs["run_key"].map(first).fillna(MISSING).astype(str)
            continue
        if name not in config_fields:
            close = difflib.get_close_matches(name, [*RECORD_GROUP_FIELDS, *config_fields], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "use dataset or a config key"
            raise UserError(f"unknown --group-by field '{name}'; {hint}")
        values = by_dir[f"config.{name}"].map(_text)
        records[name] = records["run_dir"].map(values).fillna(MISSING).astype(str)
        runs[name] = runs["run_dir"].map(values).fillna(MISSING).astype(str)
    if not collection.logs.empty:
        for name in fields:
            collection.logs[name] = collection.logs["run_dir"].map(
                runs.drop_duplicates("run_dir").set_index("run_dir")[name]
            )
    datasets = sorted(d for d in records["dataset"].unique() if d)
    if len(datasets) > 1 and "dataset" not in fields:
        raise UserError(
            f"runs were evaluated on several datasets ({', '.join(datasets)}); "
            "pass --group-by dataset to compare them side by side, or report them separately"
        )
    methods = sorted(records["row"].unique())
    if baseline is not None and baseline not in methods:
        raise UserError(
            f"baseline method '{baseline}' has no records (methods found: {', '.join(methods)}); "
            "pass --baseline with one of them, or --baseline none"
        )
    all_fields = ("row", *fields)
    keys = {tuple(str(v) for v in row) for row in records[list(all_fields)].itertuples(index=False)}

    def order(key: Key) -> tuple:
        method = key[0]
        floor = is_floor_method(method)
        rank = 0 if method == baseline else 2 if floor else 1
        # Plain objectives before regularised ones; rows missing a field (floors) last.
        rest = tuple("" if v == NO_REGULARIZER else "\uffff" if v == MISSING else v
                     for v in key[1:])  # fmt: skip
        return (*rest, rank, method)

    labels = regularizer_labels(settings) if REGULARIZER_FIELD in fields else ()
    return Grouping(all_fields, tuple(sorted(keys, key=order)), baseline, labels)


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if number != number else number


def regularizer_settings(runs: pd.DataFrame) -> pd.Series:
    """Per run: 'none', 'VICReg (variance 1, covariance 0.04, projector 512)', or '' for a
    run without config.yaml (a floor). A config without a regularizer section predates the
    terms and trained without them ('none')."""
    texts = []
    for run in runs.to_dict("records"):
        if not run.get("has_config"):
            texts.append("")
            continue
        get = run.get
        variance = _number(get("config.regularizer.variance"))
        covariance = _number(get("config.regularizer.covariance"))
        projector = int(_number(get("config.regularizer.projector_dim")))
        if variance == 0 and covariance == 0:
            texts.append(NO_REGULARIZER)
            continue
        parts = [f"variance {variance:g}", f"covariance {covariance:g}"]
        if projector > 0:
            parts.append(f"projector {projector}")
        texts.append(f"VICReg ({', '.join(parts)})")
    return pd.Series(texts, index=runs.index, dtype=object)


def regularizer_labels(settings: set[str]) -> tuple[tuple[str, str], ...]:
    """Label suffix per regularizer setting: ' + VICReg' when only one VICReg setting is
    compared (with plain runs), the full setting when several are."""
    enabled = sorted(s for s in settings if s not in ("", NO_REGULARIZER))
    labels = [(NO_REGULARIZER, ""), (MISSING, "")]
    for setting in enabled:
        labels.append((setting, " + VICReg" if len(enabled) == 1 else f" + {setting}"))
    return tuple(labels)


def keys_of(frame: pd.DataFrame, grouping: Grouping) -> list[Key]:
    """The row key of every row of a frame that has the grouping's columns."""
    if frame.empty:
        return []
    columns = [frame[f].astype(str).tolist() for f in grouping.fields]
    return [tuple(values) for values in zip(*columns, strict=True)]
