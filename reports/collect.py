"""Finding run directories and loading their records, configs and training logs into pandas."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from djepa_bench.errors import UserError
from djepa_bench.records import read_records, results_dir

RECORD_COLUMNS = [
    "run_dir", "run", "method", "seed", "checkpoint_sha256", "dataset", "split", "protocol",
    "metric", "value", "params", "created", "version",
]  # fmt: skip
MISSING = "—"  # shown for a group-by field a run does not have (e.g. a floor without config)
_GLOB_CHARS = set("*?[")


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


def _is_run_dir(path: Path) -> bool:
    return (
        results_dir(path).is_dir()
        or (path / "log.jsonl").is_file()
        or (path / "config.yaml").is_file()
    )


def _run_dirs_below(path: Path) -> list[Path]:
    found = {p.parent for p in path.rglob("results") if p.is_dir()}
    found |= {p.parent for p in path.rglob("log.jsonl")}
    return sorted(found)


def find_run_dirs(inputs: list[str]) -> list[Path]:
    """Resolve RUN_OR_GLOB arguments to run directories (sorted, without duplicates).

    An argument may be a run directory, a folder holding run directories (searched
    recursively), a results .jsonl file, or a glob pattern of any of these.
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
                    raise UserError(f"'{match}' is a file but not a results .jsonl file")
                parent = path.parent
                dirs.add((parent.parent if parent.name == "results" else parent).resolve())
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
        notes.append(f"could not read {path.name} of {path.parent.name}: {err.__class__.__name__}")
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


def _dedupe(records: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep the newest record where a run has several for the same measurement (re-evaluation)."""
    key = ["run_dir", "dataset", "split", "protocol", "metric", "params"]
    records = records.sort_values(["created", "_order"], kind="mergesort")
    kept = records.drop_duplicates(key, keep="last")
    dropped = len(records) - len(kept)
    if dropped:
        notes.append(
            f"{dropped} older record(s) superseded by a newer one for the same run and "
            "measurement (re-evaluation); only the newest is used"
        )
    return kept


def load_collection(inputs: list[str]) -> Collection:
    """Read every run named by `inputs` into one Collection; UserError if no records exist."""
    run_dirs = find_run_dirs(inputs)
    labels = _run_labels(run_dirs)
    notes: list[str] = []
    record_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        label = labels[run_dir]
        config = (
            _load_config(run_dir / "config.yaml", notes)
            if (run_dir / "config.yaml").is_file()
            else {}
        )
        meta = (
            _load_json_file(run_dir / "meta.json", notes)
            if (run_dir / "meta.json").is_file()
            else {}
        )
        run_records = []
        for path in sorted(results_dir(run_dir).glob("*.jsonl")):
            run_records.extend(read_records(path))
        if (run_dir / "log.jsonl").is_file():
            log_rows.extend(_read_log(run_dir / "log.jsonl", label, notes))
        train = config.get("train", {}) if isinstance(config.get("train"), dict) else {}
        first = run_records[0] if run_records else {}
        run_rows.append(
            {
                "run_dir": label,
                "method": str(first.get("method", train.get("method", meta.get("method", "?")))),
                "seed": int(first.get("seed", train.get("seed", meta.get("seed", 0))) or 0),
                "has_config": bool(config),
                **{f"config.{k}": v for k, v in flatten(config).items()},
            }
        )
        for record in run_records:
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
            "(`djepa-bench eval RUN ...` writes RUN/results/*.jsonl)"
        )
    records = pd.DataFrame(record_rows)
    records["value"] = pd.to_numeric(records["value"], errors="coerce")
    records["seed"] = pd.to_numeric(records["seed"], errors="coerce").fillna(0).astype(int)
    for column in ("method", "dataset", "split", "protocol", "metric", "created"):
        records[column] = records[column].fillna("").astype(str)
    records = _dedupe(records, notes).drop(columns="_order")
    records = records.sort_values(
        ["run_dir", "protocol", "metric", "dataset", "split", "params"], kind="mergesort"
    ).reset_index(drop=True)
    runs = pd.DataFrame(run_rows).sort_values("run_dir", kind="mergesort").reset_index(drop=True)
    logs = pd.DataFrame(log_rows)
    if not logs.empty:
        by_dir = runs.set_index("run_dir")
        logs["method"] = logs["run_dir"].map(by_dir["method"])
        logs["seed"] = logs["run_dir"].map(by_dir["seed"])
    return Collection(records=records, runs=runs, logs=logs, notes=notes)
