"""Finding run directories and loading their records, configs and training logs into pandas."""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from djepa_bench.errors import UserError
from djepa_bench.records import read_records, results_dir

REFERENCE_METHODS = ("pixels", "random", "timm", "ijepa-official")
RECORD_COLUMNS = [
    "run_dir", "run", "method", "seed", "checkpoint_sha256", "dataset", "split", "protocol",
    "metric", "value", "params", "created", "version", "eval_preset",
]  # fmt: skip
MISSING = "—"  # shown for a group-by field a run does not have (e.g. a floor without config)
_GLOB_CHARS = set("*?[")
# Params a protocol chooses or measures (not settings): two records differing only in these
# are the same measurement evaluated twice.
OUTCOME_PARAMS = frozenset(
    {"C", "cv", "val_top1", "lr", "wd", "refit", "grid_size", "num_labelled"}
)


@dataclass
class Collection:
    """Everything a report is built from.

    records: one row per result record (params as sorted JSON in `params`, and flattened as
    `params.<key>` columns); runs: one row per run directory with its flattened config as
    `config.<key>` columns; logs: one row per training-log row; notes: what the loader
    noticed (superseded duplicates, unreadable files) for the report.
    """

    records: pd.DataFrame
    runs: pd.DataFrame
    logs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _loose_record_files(path: Path) -> list[Path]:
    """*.jsonl record files directly in a folder (an `eval --out DIR` folder), not log.jsonl."""
    return sorted(p for p in path.glob("*.jsonl") if p.name != "log.jsonl" and p.is_file())


def record_files(run_dir: Path) -> list[Path]:
    """The record files of a run: RUN/results/*.jsonl, else *.jsonl in the folder itself."""
    if results_dir(run_dir).is_dir():
        return sorted(results_dir(run_dir).glob("*.jsonl"))
    return _loose_record_files(run_dir)


def _is_run_dir(path: Path) -> bool:
    return (
        results_dir(path).is_dir()
        or (path / "log.jsonl").is_file()
        or (path / "config.yaml").is_file()
        or bool(_loose_record_files(path))
    )


def _run_dirs_below(path: Path) -> list[Path]:
    found = set()
    for file in path.rglob("*.jsonl"):
        folder = file.parent
        found.add(folder.parent if folder.name == "results" else folder)
    return sorted(found)


def find_run_dirs(inputs: list[str]) -> list[Path]:
    """Resolve RUN_OR_GLOB arguments to run directories (sorted, without duplicates).

    An argument may be a run directory, a folder of records written by `eval --out DIR`,
    a folder holding such directories (searched recursively), a .jsonl record file, or a
    glob pattern of any of these.
    """
    if not inputs:
        raise UserError("no runs given; pass run directories or a glob such as 'runs/*'")
    dirs: set[Path] = set()
    for text in inputs:
        if _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise UserError(f"'{text}' matches nothing; check the pattern")
        else:
            matches = [os.path.expanduser(text)]
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise UserError(f"'{match}' does not exist; pass a run directory or a glob")
            if path.is_file():
                if path.suffix != ".jsonl":
                    if len(matches) > 1:
                        continue  # a glob such as runs/* also matches stray files
                    raise UserError(f"'{match}' is a file but not a .jsonl record file")
                parent = path.parent
                dirs.add((parent.parent if parent.name == "results" else parent).resolve())
            elif path.name == "results" and path.parent.is_dir():
                dirs.add(path.parent.resolve())
            elif _is_run_dir(path):
                dirs.add(path.resolve())
            else:
                dirs.update(p.resolve() for p in _run_dirs_below(path))
    return sorted(dirs)


def _run_labels(run_dirs: list[Path]) -> dict[Path, str]:
    """Short names independent of the working directory: paths below the runs' common parent."""
    if not run_dirs:
        return {}
    common = Path(os.path.commonpath([str(d) for d in run_dirs]))
    base = common.parent if len(run_dirs) == 1 or common in run_dirs else common
    return {d: d.relative_to(base).as_posix() or d.name for d in run_dirs}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value}; lists become their JSON text so they stay hashable."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def _load_json_file(path: Path, notes: list[str]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        notes.append(f"could not read {path} ({err.__class__.__name__}); it is ignored")
        return {}
    return data if isinstance(data, dict) else {}


def _load_config(path: Path, notes: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        notes.append(f"could not read {path} ({err.__class__.__name__}); its config is ignored")
        return {}
    return data if isinstance(data, dict) else {}


def _read_log(path: Path, label: str, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # A run still being written may end in a partial line; keep what is whole.
                notes.append(f"{label}/log.jsonl line {number} is not JSON and was skipped")
                continue
            if isinstance(row, dict):
                rows.append({**row, "run_dir": label})
    return rows


def _measurement_key(params_json: str) -> str:
    params = json.loads(params_json)
    return json.dumps({k: v for k, v in params.items() if k not in OUTCOME_PARAMS}, sort_keys=True)


def _dedupe(records: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep one evaluation per run and protocol: the newest checkpoint's, newest records.

    Evaluating again appends: records of an older checkpoint of the same run (trained
    further since) and repeated measurements of the same setting are superseded.
    """
    records = records.sort_values(["created", "_order"], kind="mergesort")
    subject = ["run_key", "dataset", "protocol"]
    latest = records.groupby(subject)["checkpoint_sha256"].transform("last")
    stale = records["checkpoint_sha256"] != latest
    if stale.any():
        runs = sorted(set(records.loc[stale, "run_key"]))
        notes.append(
            f"{int(stale.sum())} record(s) of older checkpoints ignored (runs: "
            f"{', '.join(runs[:5])}{' ...' if len(runs) > 5 else ''}); the newest checkpoint "
            "evaluated per run and protocol is used"
        )
        records = records[~stale]
    key = records["params"].map(_measurement_key)
    columns = ["run_key", "dataset", "split", "protocol", "metric"]
    duplicate = records.assign(_key=key).duplicated([*columns, "_key"], keep="last")
    if duplicate.any():
        notes.append(
            f"{int(duplicate.sum())} repeated record(s) of the same run, checkpoint and setting "
            "(evaluated again) superseded by the newest"
        )
    return records[~duplicate]


_SEED_SUFFIX = re.compile(r":seed-?\d+$")


def model_variant(checkpoint_id: str) -> str:
    """What distinguishes one reference model from another of the same spec: the model id
    without its seed (timm: 'init', 'pretrained' or 'weights=<sha256 prefix>'; a file: its
    sha256 prefix)."""
    text = _SEED_SUFFIX.sub("", str(checkpoint_id))
    if text.startswith("model:timm:"):
        return text.rsplit(":", 1)[-1]
    if text.startswith("model:"):
        return text.removeprefix("model:")
    return text[:12]


def row_names(records: pd.DataFrame) -> pd.Series:
    """What a record's table row is called: its method for trained runs; for reference
    models (raw pixels, random-init ViTs, timm models, official checkpoints) the model spec
    (the run name `eval --model` gives them, e.g. pixels, random:tiny or
    timm:vit_tiny_patch16_224; prefixed with the method if it lacks it), plus the weights' tag
    when one spec was evaluated with different weights (timm with and without --weights),
    so different models are never averaged into one row."""
    rows = records["method"].copy()
    reference = records["method"].isin(REFERENCE_METHODS)
    if not reference.any():
        return rows
    variants = records.loc[reference, "checkpoint_sha256"].map(model_variant)
    specs = pd.Series(
        [
            run if run == method or run.startswith(f"{method}:") else f"{method}:{run or '?'}"
            for run, method in zip(
                records.loc[reference, "run"], records.loc[reference, "method"], strict=True
            )
        ],
        index=variants.index,
        dtype=object,
    )
    several = variants.groupby(specs).transform("nunique") > 1
    rows[reference] = specs.where(~several, specs + " [" + variants + "]")
    return rows


def _run_keys(records: pd.DataFrame) -> pd.Series:
    """One id per evaluated subject: its folder, plus its name and seed where a folder
    (an `eval --out` folder) holds several subjects. A reference model's name is its row
    (spec and weights), so another model evaluated into the same folder is another subject,
    not a newer checkpoint of the same one."""
    name = records["row"].where(records["method"].isin(REFERENCE_METHODS), records["run"])
    frame = records.assign(_name=name)
    subjects = frame.groupby("run_dir")[["_name", "seed"]].apply(lambda f: len(f.drop_duplicates()))
    shared = records["run_dir"].map(subjects) > 1
    detailed = records["run_dir"] + " [" + name + " s" + records["seed"].astype(str) + "]"
    return detailed.where(shared, records["run_dir"])


def _runs_frame(records: pd.DataFrame, dir_rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per run key (and per log-only run directory) with its folder's config/meta."""
    columns = ["run_key", "run_dir", "run", "method", "row", "seed"]
    subjects = records.drop_duplicates("run_key")[columns]
    rows = []
    for subject in subjects.itertuples(index=False):
        rows.append({**dir_rows[subject.run_dir], **subject._asdict()})
    for run_dir, info in dir_rows.items():
        if run_dir not in set(subjects["run_dir"]) and info.get("has_log"):
            rows.append(
                {**info, "run_key": run_dir, "run": Path(run_dir).name, "row": info["method"]}
            )
    runs = pd.DataFrame(rows)
    return runs.sort_values("run_key", kind="mergesort").reset_index(drop=True)


def load_collection(inputs: list[str]) -> Collection:
    """Read every run named by `inputs` into one Collection; UserError if no records exist."""
    run_dirs = find_run_dirs(inputs)
    labels = _run_labels(run_dirs)
    notes: list[str] = []
    record_rows: list[dict[str, Any]] = []
    dir_rows: dict[str, dict[str, Any]] = {}
    log_rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        label = labels[run_dir]
        config_file, meta_file = run_dir / "config.yaml", run_dir / "meta.json"
        config = _load_config(config_file, notes) if config_file.is_file() else {}
        meta = _load_json_file(meta_file, notes) if meta_file.is_file() else {}
        if (run_dir / "log.jsonl").is_file():
            log_rows.extend(_read_log(run_dir / "log.jsonl", label, notes))
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        dir_rows[label] = {
            "run_dir": label,
            "method": str(train.get("method", meta.get("method", "?"))),
            "seed": int(train.get("seed", meta.get("seed", 0)) or 0),
            "has_config": bool(config),
            "has_log": (run_dir / "log.jsonl").is_file(),
            "status": str(meta.get("status", "")),
            "wall_s": meta.get("wall_s"),
            **{f"config.{k}": v for k, v in flatten(config).items()},
        }
        for path in record_files(run_dir):
            for record in read_records(path):
                params = record.get("params") or {}
                row = {column: record.get(column) for column in RECORD_COLUMNS}
                row.update(
                    run_dir=label,
                    params=json.dumps(params, sort_keys=True),
                    _order=len(record_rows),
                    **{f"params.{k}": v for k, v in flatten(params).items()},
                )
                record_rows.append(row)
    if not record_rows:
        where = ", ".join(inputs)
        raise UserError(
            f"no result records found in {where}; evaluate runs first "
            "(`djepa-bench eval --ckpt RUN ...` writes RUN/results/*.jsonl)"
        )
    records = pd.DataFrame(record_rows)
    records["value"] = pd.to_numeric(records["value"], errors="coerce")
    records["seed"] = pd.to_numeric(records["seed"], errors="coerce").fillna(0).astype(int)
    text_columns = (
        "run", "method", "checkpoint_sha256", "dataset", "split", "protocol", "metric",
        "eval_preset",
    )  # fmt: skip
    for column in (*text_columns, "created"):
        records[column] = records[column].fillna("").astype(str)
    records["row"] = row_names(records)
    records["run_key"] = _run_keys(records)
    records = _dedupe(records, notes).drop(columns="_order")
    records = records.sort_values(
        ["run_key", "protocol", "metric", "dataset", "split", "params"], kind="mergesort"
    ).reset_index(drop=True)
    runs = _runs_frame(records, dir_rows)
    logs = pd.DataFrame(log_rows)
    if not logs.empty:
        by_dir = pd.DataFrame(dir_rows.values()).set_index("run_dir")
        first_row = records.drop_duplicates("run_dir").set_index("run_dir")["row"]
        logs["row"] = logs["run_dir"].map(first_row).fillna(logs["run_dir"].map(by_dir["method"]))
        logs["seed"] = logs["run_dir"].map(by_dir["seed"])
    for run in runs.itertuples(index=False):
        if run.status and run.status not in ("finished", "nan"):
            notes.append(f"run {run.run_key} has training status '{run.status}' in meta.json")
    return Collection(records=records, runs=runs, logs=logs, notes=notes)
