"""`djepa-bench train`: train an I-JEPA or D-JEPA run directory from a preset and overrides."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from djepa_bench.config import (
    Config,
    apply_overrides,
    build_config,
    config_from_dict,
    merge,
    to_dict,
)
from djepa_bench.errors import UserError
from djepa_bench.io import load_yaml


def _flag_overrides(
    method: str | None,
    seed: int | None,
    epochs: int | None,
    data_root: Path | None,
    download: bool | None,
    device: str | None,
) -> list[str]:
    pairs = {
        "train.method": method,
        "train.seed": seed,
        "train.epochs": epochs,
        "data.root": str(data_root) if data_root is not None else None,
        "data.download": download,
        "train.device": device,
    }
    out = []
    for key, value in pairs.items():
        if value is not None:
            out.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return out


def _resolve_config(
    preset: str | None, config_file: Path | None, overrides: list[str], out: Path, resume: bool
) -> Config:
    saved = out / "config.yaml"
    if resume and not preset and not config_file:
        if not saved.is_file():
            raise UserError(
                f"nothing to resume in {out} (no config.yaml); check --out, or start a run with"
                " --preset/--config"
            )
        data = apply_overrides(load_yaml(saved), overrides)
        return config_from_dict(merge(to_dict(Config()), data))
    return build_config(preset, config_file, overrides)


def _default_out(preset: str | None, cfg: Config) -> Path:
    name = Path(preset).stem if preset else "run"
    return Path("runs") / f"{name}-{cfg.train.method}-s{cfg.train.seed}"


def train_command(
    preset: str = typer.Option(
        None, "--preset", "-p", help="Named preset (see `djepa-bench list presets`) or a YAML path."
    ),
    config_file: Path = typer.Option(
        None, "--config", "-c", help="YAML config file merged over the preset."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", "-s", help="Override one key, e.g. --set optim.lr=5e-4 (repeatable)."
    ),
    method: str = typer.Option(
        None, "--method", "-m", help="ijepa (L_jepa only) or djepa (L_jepa + lambda L_diff)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Run directory to create (default runs/PRESET-METHOD-sSEED)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its checkpoint.pt."
    ),
    seed: int = typer.Option(None, "--seed", help="Random seed (weights, masks, data order)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of training epochs."),
    data_root: Path = typer.Option(
        None, "--data-root", help="Folder holding the dataset files (e.g. ../shared/data)."
    ),
    download: bool = typer.Option(
        None, "--download/--no-download", help="Allow downloading the dataset if missing."
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Train a JEPA encoder into a run directory (config.yaml, log.jsonl, checkpoint.pt).

    Runs on CPU or GPU; for several GPUs or processes use
    `torchrun --nproc_per_node N -m djepa_bench train ...`. Ctrl-C or SIGTERM writes a
    checkpoint first; continue with --resume.
    """
    from djepa_bench.train.api import TrainingStopped, train_run

    flags = _flag_overrides(method, seed, epochs, data_root, download, device)
    all_overrides = list(overrides or []) + flags
    if resume:
        if out is None:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        cfg = _resolve_config(preset, config_file, all_overrides, out, resume)
    else:
        cfg = build_config(preset, config_file, all_overrides)
        out = out or _default_out(preset, cfg)
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        run_dir = train_run(cfg, out, resume=resume, progress=True)
    except TrainingStopped as stop:
        if is_main:
            typer.echo(str(stop), err=True)
        raise typer.Exit(stop.exit_code) from None
    if is_main:
        _print_summary(run_dir)


def _print_summary(run_dir: Path) -> None:
    meta = json.loads((run_dir / "meta.json").read_text())
    last_epoch = None
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "epoch":
            last_epoch = row
    monitor = ""
    if last_epoch is not None:
        monitor = (
            f"; monitor kNN@20 {last_epoch['knn_top1']:.1f}%, RankMe {last_epoch['rankme']:.1f}"
        )
    typer.echo(
        f"trained {meta.get('method')} for {meta.get('step')} steps in "
        f"{meta.get('wall_s', 0):.0f} s{monitor}\nrun directory: {run_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
