"""`djepa-bench demo`: train I-JEPA and D-JEPA on embedded data, run every protocol, report.

Offline and CPU-sized: the `demo` preset on scikit-learn's digits, two seeds per method,
the raw-pixel and random-init floors, every evaluation protocol, then one report. Stages
already completed in --out are reused, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from djepa_bench.errors import UserError

METHODS = ("ijepa", "djepa")


def _stage(message: str) -> None:
    typer.secho(f"==> {message}", err=True, bold=True)


def _log(message: str) -> None:
    typer.echo(f"    {message}", err=True)


def _finished(run_dir: Path) -> bool:
    import json

    meta = run_dir / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("status") == "finished"


def _train_all(
    preset: str, seeds: list[int], epochs: int | None, overrides: list[str], runs: Path
) -> list[Path]:
    from djepa_bench.config import build_config
    from djepa_bench.train.api import train_run

    jobs = [(method, seed) for seed in seeds for method in METHODS]
    run_dirs = []
    for number, (method, seed) in enumerate(jobs, 1):
        run_dir = runs / f"{method}-s{seed}"
        run_dirs.append(run_dir)
        if _finished(run_dir):
            _stage(f"[train {number}/{len(jobs)}] {method} seed {seed}: already trained")
            continue
        _stage(f"[train {number}/{len(jobs)}] {method} seed {seed} -> {run_dir}")
        extra = [f"train.method={method}", f"train.seed={seed}"]
        if epochs is not None:
            extra.append(f"train.epochs={epochs}")
        cfg = build_config(preset, None, [*overrides, *extra])
        resume = (run_dir / "checkpoint.pt").is_file()
        start = time.perf_counter()
        train_run(cfg, run_dir, resume=resume, progress=True)  # plain epoch lines off a TTY
        _log(f"trained in {time.perf_counter() - start:.0f}s")
    return run_dirs


def _evaluate(subject_args: dict, results: Path, protocols: list[str], overrides: list[str]):
    from djepa_bench.commands.eval_cmd import run_protocols
    from djepa_bench.encoders import load_subject
    from djepa_bench.eval_protocols.base import build_context

    done = results / ".complete"
    if done.exists():
        _log("already evaluated")
        return
    for stale in results.glob("*.jsonl"):  # a half-finished evaluation starts over
        stale.unlink()
    subject = load_subject(overrides=overrides, **subject_args)
    ctx = build_context(subject, device="cpu", log=_log)
    run_protocols(ctx, protocols, results, _log)
    done.touch()


def demo_command(
    out: Path = typer.Option(
        Path("demo-out"), "--out", "-o", help="Folder for runs/, floors/ and report/."
    ),
    seeds: int = typer.Option(2, "--seeds", min=1, help="Seeds per method (0, 1, ...)."),
    epochs: int = typer.Option(
        None, "--epochs", help="Training epochs per run (default: the preset's)."
    ),
    preset: str = typer.Option("demo", "--preset", "-p", help="Training preset to use."),
    overrides: list[str] = typer.Option(
        None, "--set", "-s", help="Training config override, e.g. --set model.depth=2."
    ),
    eval_preset: str = typer.Option(
        None,
        "--eval-preset",
        "-E",
        help="Named evaluation preset (`djepa-bench list presets`); default: quick for the "
        "demo preset, paper for any other.",
    ),
    eval_overrides: list[str] = typer.Option(
        None,
        "--eval-set",
        help="Evaluation override on top of the evaluation preset, e.g. --eval-set "
        "eval.lowshot.trials=2 (repeatable); records then say PRESET+overrides.",
    ),
    protocols: str = typer.Option(
        "all", "--protocols", help="Protocols to run (comma list or all)."
    ),
) -> None:
    """Train I-JEPA and D-JEPA on digits (2 seeds each), run every protocol, write a report.

    Needs no internet and no GPU; about 9 minutes on 2 CPU cores. Re-running continues an
    interrupted demo: finished runs and evaluations in --out are reused.
    """
    from djepa_bench.checkpoint import load_checkpoint
    from djepa_bench.commands.eval_cmd import _protocol_names
    from djepa_bench.presets import eval_preset_overrides
    from djepa_bench.reports.build import build_report

    names = _protocol_names(protocols)
    eval_set = eval_preset_overrides(
        eval_preset or ("quick" if preset == "demo" else "paper"), list(eval_overrides or [])
    )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; choose another path")
    runs, floors, report_dir = out / "runs", out / "floors", out / "report"
    start = time.perf_counter()

    run_dirs = _train_all(preset, list(range(seeds)), epochs, list(overrides or []), runs)

    jobs = [({"ckpt": d}, d / "results", d.name) for d in run_dirs]
    # The floors share the runs' data and encoder shape (the preset's model section); the
    # random floor is named after the runs' ViT size, so its report row says which.
    trained = load_checkpoint(run_dirs[0], mmap=True)  # only its config and data entries
    random_model = f"random:{trained['config']['model']['size']}"
    floor_set = [f"data.dataset={trained['data']['dataset']}", *list(overrides or []), *eval_set]
    jobs += [
        ({"model": "pixels"}, floors / "pixels", "raw-pixel floor"),
        ({"model": random_model}, floors / "random", "random-init floor"),
    ]
    for number, (subject, results, label) in enumerate(jobs, 1):
        _stage(f"[eval {number}/{len(jobs)}] {label}: {', '.join(names)}")
        is_run = "ckpt" in subject
        subject_overrides = eval_set if is_run else _floor_overrides(preset, floor_set)
        _evaluate(subject, results, names, subject_overrides)

    _stage(f"[report] {report_dir}")
    report = build_report([str(runs), str(floors)], report_dir, baseline="ijepa")
    _log(f"{len(report.figures)} figures; skipped: {len(report.skipped)}")
    elapsed = time.perf_counter() - start
    typer.echo(f"demo finished in {elapsed / 60:.1f} min: open {report_dir / 'report.md'}")


def _floor_overrides(preset: str, extra: list[str]) -> list[str]:
    """The preset's model and data keys as overrides, so floors match the trained runs."""
    from djepa_bench.presets import load_preset

    data = load_preset(preset)
    keys = [
        f"{section}.{key}={value}"
        for section in ("model", "data")
        for key, value in (data.get(section) or {}).items()
        if not isinstance(value, (list, dict))
    ]
    return [*keys, *extra]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
