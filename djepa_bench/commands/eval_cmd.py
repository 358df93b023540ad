"""`djepa-bench eval`: run evaluation protocols on a run, a checkpoint or a reference model.

Records are appended to RUN/results/<protocol>.jsonl (or --out/<protocol>.jsonl) and a
small summary table is printed. Frozen features are cached on disk and reused.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
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
    "steps", "lr", "wd", "base_lr", "layer_decay",
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
        every = [name for name, info in protocols().items() if info.in_all]
        names = every + [n for n in names if n != "all" and n not in every]
    for name in names:
        get_protocol(name)  # one-line error for an unknown name, before any work
    return list(dict.fromkeys(names))


def _expand_ckpts(paths: list[Path]) -> list[Path]:
    """--ckpt values in order, each glob pattern (quoted on the command line) expanded."""
    out: list[Path] = []
    for path in paths:
        text = os.path.expanduser(str(path))
        if not glob.has_magic(text):
            out.append(Path(text))
            continue
        matches = sorted(glob.glob(text))
        if not matches:
            raise UserError(f"--ckpt {path} matches nothing")
        out.extend(Path(m) for m in matches)
    return list(dict.fromkeys(out))


def _folder_name(subject: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", subject.identity.run).strip("-")[:80] or "model"


def results_dirs(subjects: list[Any], out: Path | None) -> list[Path]:
    """Where each subject's records go: RUN/results, --out, or --out/<name> for several."""
    if out is None:
        return [s.run_dir / "results" for s in subjects]
    if len(subjects) == 1:
        return [Path(out)]
    names: list[str] = []
    for subject in subjects:
        base = name = _folder_name(subject)
        number = 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return [Path(out) / name for name in names]


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={params[k]}" for k in DISPLAY_KEYS if params.get(k) is not None)


def summary_rows(records: list[dict[str, Any]]) -> list[tuple]:
    """(protocol, setting, metric, value text, n): trials of the same setting averaged.

    With records of several runs, each row starts with the run.
    """
    several = len({r.get("run") for r in records}) > 1
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if isinstance(r.get("value"), (int, float)):
            key = (r["protocol"], _format_params(r.get("params") or {}), r["metric"])
            groups[(r.get("run"), *key) if several else key].append(float(r["value"]))
    rows = []
    for key, values in groups.items():
        *run, protocol, setting, metric = key
        mean = sum(values) / len(values)
        text = f"{mean:.2f}"
        if len(values) > 1:
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            text += f" ± {std:.2f}"
        rows.append((*run, protocol, setting or "-", metric, text, len(values)))
    return rows


def print_table(records: list[dict[str, Any]]) -> None:
    """Print the summary of `records` as aligned columns on stdout."""
    rows = summary_rows(records)
    if not rows:
        typer.echo("no results")
        return
    header = ("protocol", "setting", "metric", "value", "n")
    if len(rows[0]) > len(header):
        header = ("run", *header)
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def eval_command(
    ckpt: list[Path] = typer.Option(
        None,
        "--ckpt",
        help="Run directory (uses its checkpoint.pt) or checkpoint file: a djepa-bench "
        "checkpoint or an official I-JEPA .pth.tar. Repeat it, or quote a glob "
        "(--ckpt 'runs/*'), to evaluate several.",
    ),
    model: list[str] = typer.Option(
        None,
        "--model",
        help="Reference model instead of --ckpt: pixels (normalised pixels), random:SIZE "
        "(seeded untrained ViT, e.g. random:tiny) or timm:NAME[,key=value], e.g. "
        "timm:NAME,weights=FILE. Repeatable; models share the decoded data.",
    ),
    protocol: str = typer.Option(
        "knn",
        "--protocol",
        "-P",
        help="Protocols to run: a name, a comma list (knn,linear,lowshot) or all, which "
        "leaves out finetune (see `djepa-bench list protocols`).",
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset to evaluate on (default: the run's training dataset, else "
        "data.dataset); see `djepa-bench list datasets`.",
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
        help="Folder for <protocol>.jsonl records (default RUN/results; required with "
        "--model). With several models or runs, each gets a sub-folder named after it.",
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
        help="Feature pooling: mean (of the final patch tokens, default), last4 (means of "
        "the last 4 blocks, concatenated), cls (class token) or avgpool+cls (both "
        "concatenated, as DINOv2); cls needs a model with a class token.",
    ),
    device: str = typer.Option(
        None, "--device", help="auto (GPU when present, default), cpu, cuda or cuda:N."
    ),
    pretrained: bool = typer.Option(
        False,
        "--pretrained",
        help="With --model timm:NAME: use timm's pretrained weights (from your local cache "
        "or the hub; never fetched unless asked).",
    ),
    weights: Path = typer.Option(
        None,
        "--weights",
        help="With one --model timm:NAME: a local state-dict file, loaded through timm "
        "(position embeddings resampled to the image size) and used with the model's "
        "own normalisation.",
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
    """Evaluate frozen encoders with kNN, linear, low-shot (and other) protocols.

    Several --ckpt / --model values are evaluated one after the other on data decoded once.
    Progress is one line per stage on stderr (bars only on a terminal); the summary table
    goes to stdout.
    """
    from djepa_bench.distributed import barrier, cleanup_distributed, setup_distributed
    from djepa_bench.encoders import check_pool, load_subject
    from djepa_bench.eval_protocols.corruptions.core import resolve_severities

    names = _protocol_names(protocol)
    ckpts, models = _expand_ckpts(list(ckpt or [])), list(model or [])
    if not ckpts and not models:
        raise UserError(
            "give --ckpt RUN_OR_FILE or --model pixels|random:SIZE|timm:NAME (or several)"
        )
    if models and out is None:
        raise UserError("--model has no run directory; give --out RESULTS_DIR for its records")
    timm_models = [m for m in models if m.startswith("timm:")]
    if (pretrained or weights) and not timm_models:
        raise UserError("--pretrained and --weights apply to --model timm:NAME only")
    if weights and len(timm_models) > 1:
        raise UserError(
            "--weights applies to one timm model; with several, name each file in its spec: "
            "--model timm:NAME,weights=FILE"
        )
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
    subjects = [load_subject(ckpt=path, overrides=settings) for path in ckpts]
    for spec in models:
        is_timm = spec.startswith("timm:")
        subjects.append(
            load_subject(
                model=spec, overrides=settings, pretrained=pretrained and is_timm,
                weights=weights if is_timm else None,
            )
        )  # fmt: skip
    for subject in subjects:  # a pool the model can never give fails before any data is read
        check_pool(subject, subject.config.eval.pool)
    folders = results_dirs(subjects, out)
    for results in folders:  # outputs are checked before any work, not after it
        check_results_dir(results, names)
    info = setup_distributed(subjects[0].config.eval.device)
    written: list[dict[str, Any]] = []
    data: dict[tuple, Any] = {}  # decoded splits, shared by subjects on the same data
    try:
        for number, (subject, results) in enumerate(zip(subjects, folders, strict=True), 1):
            tag = f"[{number}/{len(subjects)}] " if len(subjects) > 1 else ""
            records = _evaluate(subject, names, results, info, data, tag)
            written.extend(records or [])
        barrier(info)  # no rank leaves (and tears the group down) while another still writes
    finally:
        # Like training: a process group left to interpreter exit can abort a finished rank.
        if info.distributed:
            cleanup_distributed()
    if info.is_main:
        print_table(written)


def _subject_label(subject: Any) -> str:
    """How the eval log names a subject: a trained run by its method ("ijepa run"), a
    reference model by its kind ("random", "timm"), so an I-JEPA run never reads "djepa"."""
    if subject.kind == "djepa":
        return f"{subject.identity.method} run"
    return subject.kind


def _evaluate(
    subject: Any, names: list[str], results: Path, info: Any, data: dict, tag: str
) -> list[dict[str, Any]] | None:
    """Build the context of one subject and run the protocols (rank 0 only under torchrun)."""
    from djepa_bench.eval_protocols.base import build_context, load_splits
    from djepa_bench.eval_protocols.registry import get_protocol

    cfg = subject.config
    key = (cfg.data.dataset, cfg.data.root, cfg.data.download, cfg.data.cache_dir)
    if key not in data:
        start = time.perf_counter()
        data[key] = load_splits(cfg)
        _log(f"data {cfg.data.dataset}: loaded in {time.perf_counter() - start:.1f}s")
    dev, distributed, rank0 = info.device, info.distributed, info.is_main
    ctx = build_context(
        subject, device=dev, splits=data[key], log=_log, progress=sys.stderr.isatty() and rank0,
        distributed=distributed,
    )  # fmt: skip
    if "robustness" in names:
        from djepa_bench.eval_protocols.robustness import plan

        plan(ctx)  # bad robustness settings or --baseline fail now, not after the other work
    splits, enc = ctx.splits, ctx.encoder
    norm = " (model's own normalisation)" if enc.input_norm else ""
    _log(
        f"eval {tag}{subject.identity.run} ({_subject_label(subject)}, encoder={enc.which}, "
        f"pool={enc.pool}{norm}) on {ctx.dataset} "
        f"[{len(splits['train'])} train / {len(splits['test'])} test] "
        f"device={dev}"
    )
    needed = {s for name in names for s in get_protocol(name).feature_splits}
    if distributed:
        # Every rank writes its own shards of the clean features (nothing is gathered in
        # memory); then rank 0 alone runs the protocols, reading the shards from disk.
        needed = {"train", "test"}
    for split in ("train", "test"):
        if split in needed:
            _extract(ctx, split)
    if distributed:
        ctx.features.distributed = False
        if not rank0:
            return None
    from djepa_bench.row_stream import local_only

    # Under torchrun rank 0 runs the protocols alone: the linear probe must not wait for ranks.
    with local_only() if distributed else contextlib.nullcontext():
        return run_protocols(ctx, names, results, _log)


def _extract(ctx: Any, split: str) -> None:
    """Clean features of one split on disk (the feature source says whether it extracts)."""
    start = time.perf_counter()
    ctx.features.array(split)  # written to the on-disk shards, not held in memory
    if time.perf_counter() - start > 1:
        _log(f"features {split}: ready in {time.perf_counter() - start:.0f}s")


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
        log(f"{name}: running")
        start = time.perf_counter()
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
        elapsed = time.perf_counter() - start
        log(f"{name}: {len(records)} records appended to {path} ({elapsed:.1f}s)")
        written.extend(records)
    return written


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
