"""`djepa-bench eval`: run evaluation protocols on a run, a checkpoint or a reference model.

Records are appended to RUN/results/<protocol>.jsonl (or --out/<protocol>.jsonl) and a
small summary table is printed. Frozen features are cached on disk and reused.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from djepa_bench.errors import UserError
from djepa_bench.io import os_errors
from djepa_bench.records import append_records

DISPLAY_KEYS = (
    "shots", "percent", "classifier", "k", "corruption", "severity", "noise_t", "estimator",
    "steps", "lr", "wd",
)  # fmt: skip


def _log(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(message, err=True)


def _flag_overrides(**pairs: Any) -> list[str]:
    return [
        f"{key}={json.dumps(value) if isinstance(value, str) else value}"
        for key, value in pairs.items()
        if value is not None
    ]


def _protocol_names(text: str) -> list[str]:
    from djepa_bench.eval_protocols.registry import get_protocol, protocols

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--protocol is empty; e.g. --protocol knn,linear or --protocol all")
    if "all" in names:
        return list(protocols())
    for name in names:
        get_protocol(name)  # one-line error for an unknown name, before any work
    return list(dict.fromkeys(names))


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={params[k]}" for k in DISPLAY_KEYS if params.get(k) is not None)


def summary_rows(records: list[dict[str, Any]]) -> list[tuple[str, str, str, str, int]]:
    """(protocol, setting, metric, value text, n): trials of the same setting averaged."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        if isinstance(r.get("value"), (int, float)):
            key = (r["protocol"], _format_params(r.get("params") or {}), r["metric"])
            groups[key].append(float(r["value"]))
    rows = []
    for (protocol, setting, metric), values in groups.items():
        mean = sum(values) / len(values)
        text = f"{mean:.2f}"
        if len(values) > 1:
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            text += f" ± {std:.2f}"
        rows.append((protocol, setting or "-", metric, text, len(values)))
    return rows


def print_table(records: list[dict[str, Any]]) -> None:
    """Print the summary of `records` as aligned columns on stdout."""
    rows = summary_rows(records)
    if not rows:
        typer.echo("no results")
        return
    header = ("protocol", "setting", "metric", "value", "n")
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def eval_command(
    ckpt: Path = typer.Option(
        None,
        "--ckpt",
        help="Run directory (uses its checkpoint.pt) or checkpoint file; a "
        "djepa-bench checkpoint or an official I-JEPA .pth.tar.",
    ),
    model: str = typer.Option(
        None,
        "--model",
        help="Reference model instead of --ckpt: pixels (normalised pixels), "
        "random:SIZE (seeded untrained ViT, e.g. random:tiny) or timm:NAME.",
    ),
    protocol: str = typer.Option(
        "knn",
        "--protocol",
        "-P",
        help="Protocols to run: a name, a comma list "
        "(knn,linear,lowshot) or all (see `djepa-bench list protocols`).",
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset to evaluate on (default: the run's training "
        "dataset, else data.dataset); see `djepa-bench list datasets`.",
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Folder holding the dataset files (e.g. ../shared/data)."
    ),
    eval_preset: str = typer.Option(
        "paper",
        "--eval-preset",
        "-E",
        help="Named evaluation preset: paper (the full protocols) or quick (minutes on a "
        "CPU); see `djepa-bench list presets`. --set values apply on top, and the records "
        "then say NAME+overrides.",
    ),
    overrides: list[str] = typer.Option(
        None,
        "--set",
        "-s",
        help="Override a config key, e.g. --set eval.knn.k=[10,20] (repeatable).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for <protocol>.jsonl records (default RUN/results; required with --model).",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Recompute features and do not touch the feature cache."
    ),
    encoder: str = typer.Option(
        None, "--encoder", help="Which encoder of a run: target (default) or context."
    ),
    pool: str = typer.Option(
        None,
        "--pool",
        help="Feature pooling: mean (mean of final tokens, default) or last4 "
        "(concatenated means of the last 4 blocks).",
    ),
    device: str = typer.Option(
        None, "--device", help="auto (GPU when present, default), cpu, cuda or cuda:N."
    ),
    pretrained: bool = typer.Option(
        False,
        "--pretrained",
        help="With --model timm:NAME: use timm's pretrained weights "
        "(from your local cache or the hub; never fetched unless asked).",
    ),
    weights: Path = typer.Option(
        None, "--weights", help="With --model timm:NAME: a local state-dict file to load."
    ),
    corruptions: str = typer.Option(
        None,
        "--corruptions",
        help="Robustness: all (default), common (the 15), extra (the 4 others), ImageNet-C's "
        "families (noise, blur, weather with brightness, digital) or names, comma-separated.",
    ),
    severities: str = typer.Option(
        None, "--severities", help="Robustness: severities to test, e.g. 1,3,5 (default 1-5)."
    ),
    baseline: Path = typer.Option(
        None,
        "--baseline",
        help="Robustness: run directory (or robustness.jsonl) whose errors normalise CE and "
        "mCE, typically the I-JEPA run.",
    ),
) -> None:
    """Evaluate frozen features with kNN, linear, low-shot (and other) protocols."""
    from djepa_bench.distributed import setup_distributed
    from djepa_bench.encoders import load_subject
    from djepa_bench.eval_protocols.base import build_context
    from djepa_bench.eval_protocols.corruptions.core import resolve_severities

    names = _protocol_names(protocol)
    if model is not None and out is None:
        raise UserError("--model has no run directory; give --out RESULTS_DIR for its records")
    if (pretrained or weights) and not (model or "").startswith("timm:"):
        raise UserError("--pretrained and --weights apply to --model timm:NAME only")
    flags = _flag_overrides(
        **{
            "data.dataset": dataset, "data.root": str(data_root) if data_root else None,
            "eval.encoder": encoder, "eval.pool": pool, "eval.device": device,
            "eval.cache": False if no_cache else None,
            "eval.robustness.corruptions": corruptions,
            "eval.robustness.severities": resolve_severities(severities) if severities else None,
            "eval.robustness.baseline": str(baseline) if baseline else None,
        }
    )  # fmt: skip
    from djepa_bench.presets import eval_preset_overrides

    settings = eval_preset_overrides(eval_preset, list(overrides or []) + flags)
    subject = load_subject(ckpt, model, settings, pretrained=pretrained, weights=weights)
    cfg = subject.config
    results = Path(out) if out else subject.run_dir / "results"
    check_results_dir(results, names)  # outputs are checked before any work, not after it
    info = setup_distributed(cfg.eval.device)
    dev, distributed, rank0 = info.device, info.distributed, info.is_main

    ctx = build_context(
        subject, device=dev, log=_log, progress=sys.stderr.isatty() and rank0,
        distributed=distributed,
    )  # fmt: skip
    if "robustness" in names:
        from djepa_bench.eval_protocols.robustness import plan

        plan(ctx)  # bad robustness settings or --baseline fail now, not after the other work
    splits, enc, features = ctx.splits, ctx.encoder, ctx.features
    _log(
        f"eval {subject.identity.run} ({subject.kind}, encoder={enc.which}, pool={enc.pool}) "
        f"on {ctx.dataset} [{len(splits['train'])} train / {len(splits['test'])} test] "
        f"device={dev}"
    )
    if distributed:
        # Every rank writes its own shards of the clean features (nothing is gathered in
        # memory); then rank 0 alone runs the protocols, reading the shards from disk.
        features.array("train")
        features.array("test")
        features.distributed = False
        if not rank0:
            return
    print_table(run_protocols(ctx, names, results, _log))


def check_results_dir(results: Path, names: list[str]) -> None:
    """Fail now, with one line, if records could not be appended to RESULTS/<protocol>.jsonl.

    The folder is created if needed and a file is created in it and removed again (file
    permissions do not tell: root ignores them, a read-only mount does not).
    """
    if results.exists() and not results.is_dir():
        raise UserError(f"{results} is a file, not a folder for records; give another --out")
    with os_errors(results, "write records into"):
        results.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=results)
        os.close(fd)
        os.unlink(probe)
    for name in names:
        target = results / f"{name}.jsonl"
        if target.exists() and not target.is_file():
            raise UserError(f"{target} is not a file; move it away so records can go there")


def keep_records(records: list[dict[str, Any]], name: str) -> str:
    """Save records whose results file could not be written; returns where they went.

    Tried in turn: the temp folder, the current folder, the home folder; as a last resort
    the records are printed on stdout.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for folder in (Path(tempfile.gettempdir()), Path.cwd(), Path.home()):
        path = folder / f"djepa-bench-unsaved-{name}-{stamp}-{os.getpid()}.jsonl"
        try:
            append_records(path, records)
        except UserError:
            continue
        return str(path)
    for record in records:
        typer.echo(json.dumps(record, sort_keys=True))
    return "stdout (above)"


def run_protocols(
    ctx: Any, names: list[str], results: Path, log: Callable[[str], None] = _log
) -> list[dict[str, Any]]:
    """Run each protocol on `ctx`, appending its records to RESULTS/<protocol>.jsonl.

    If an append fails after the work (a full disk, a folder gone read-only), its records
    are kept in a fallback file (see keep_records) and the error says where.
    """
    from djepa_bench.eval_protocols.base import ProtocolSkipped
    from djepa_bench.eval_protocols.registry import get_protocol

    written: list[dict[str, Any]] = []
    for number, name in enumerate(names):
        try:
            records = get_protocol(name).run(ctx)
        except ProtocolSkipped as why:
            log(f"{name}: skipped ({why})")
            continue
        path = results / f"{name}.jsonl"
        try:
            append_records(path, records)
        except UserError as err:
            kept = keep_records(records, name)
            rest = names[number + 1 :]
            not_run = f"; not run: {', '.join(rest)}" if rest else ""
            raise UserError(
                f"{err}; its {len(records)} {name} records are kept in {kept} (append them to "
                f"{path} once it can be written){not_run}"
            ) from None
        log(f"{name}: {len(records)} records appended to {path}")
        written.extend(records)
    return written


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
