"""The training loop: I-JEPA or D-JEPA on one process or many (torchrun), resumable, logged.

All randomness is derived from (seed, rank, step): masks, diffusion noise, drop-path and
the batch order and augmentation. Together with the optimiser state in the checkpoint,
a resumed run therefore continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from djepa_bench import __version__
from djepa_bench.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    FORMAT_VERSION,
    clean_state_dict,
    epoch_checkpoint_name,
    load_checkpoint,
    save_checkpoint,
)
from djepa_bench.config import Config, config_from_dict, to_dict
from djepa_bench.data import ImageSplit, load_dataset, split_to_device
from djepa_bench.distributed import (
    DistInfo,
    all_gather_strings,
    any_rank,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from djepa_bench.errors import UserError
from djepa_bench.masks import MultiBlockMasker
from djepa_bench.models import build_encoder, build_predictor, build_schedule
from djepa_bench.models.predictor import METHODS
from djepa_bench.train.batches import derived_seed, epoch_batches, generator_for
from djepa_bench.train.monitor import Monitor
from djepa_bench.train.objectives import JepaModel, LossParts, compute_losses, projector_for
from djepa_bench.train.optim import build_optimizer, ema_update, set_lr_wd
from djepa_bench.train.rundir import (
    LOG_NAME,
    TrainingLog,
    environment,
    now_iso,
    read_meta,
    write_config,
    write_meta,
)
from djepa_bench.train.schedules import Schedules

# Config keys that say where and how loudly a run happens, not what it computes: a resumed
# run may change them.
RUNTIME_KEYS = {
    "train.device",
    "train.log_every",
    "train.monitor",
    "train.monitor_size",
    "train.checkpoint_every",
    "train.checkpoint_every_steps",
    "train.compile",
    "train.cpu_threads",
    "data.root",
    "data.download",
    "data.cache_dir",
    "data.num_workers",
}
# Crash-safety tests set this to make the process SIGKILL itself right after writing a
# checkpoint at or beyond the given step (a deterministic `kill -9`).
FAULT_KILL_ENV = "DJEPA_FAULT_KILL_AFTER_CHECKPOINT_STEP"


class TrainingStopped(Exception):
    """A signal stopped the run after a checkpoint was written."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint saved to {checkpoint}; "
            "continue with --resume"
        )
        self.signal_name = signal_name
        self.exit_code = 130 if signal_name == "SIGINT" else 143


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge_resume_config(saved: Config, given: Config) -> Config:
    """The saved config with runtime keys taken from `given`; other differences are errors."""
    saved_flat, given_flat = _flat(to_dict(saved)), _flat(to_dict(given))
    for key, value in given_flat.items():
        if key.startswith("eval.") or key in RUNTIME_KEYS:
            continue
        if saved_flat.get(key) != value:
            raise UserError(
                f"--resume continues the saved run, but {key} differs (saved "
                f"{saved_flat.get(key)!r}, given {value!r}); drop the change or use a new --out"
            )
    merged = to_dict(saved)
    for key in RUNTIME_KEYS:
        section, name = key.split(".")
        merged[section][name] = to_dict(given)[section][name]
    return config_from_dict(merged)


def param_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, to compare weights across ranks or runs."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _SignalFlag:
    """Records SIGINT/SIGTERM so the loop can checkpoint before exiting."""

    def __init__(self):
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Trainer:
    """One training run in `run_dir` (fresh or resumed)."""

    def __init__(self, config: Config, run_dir: Path, info: DistInfo, resume: bool, progress: bool):
        self.info = info
        self.run_dir = run_dir
        self.progress_enabled = progress and info.is_main
        checkpoint_path = run_dir / CHECKPOINT_NAME
        self.resumed_from: dict[str, Any] | None = None
        if checkpoint_path.exists() and not resume:
            raise UserError(
                f"{run_dir} already holds a run (checkpoint.pt); continue it with --resume "
                "or choose another --out"
            )
        if resume and checkpoint_path.exists():
            self.resumed_from = load_checkpoint(checkpoint_path)
            config = merge_resume_config(config_from_dict(self.resumed_from["config"]), config)
        if config.train.method not in METHODS:
            raise UserError(f"unknown method '{config.train.method}'; use ijepa or djepa")
        for name in ("variance", "covariance"):
            if getattr(config.regularizer, name) < 0:
                raise UserError(f"regularizer.{name} must be >= 0 (0 turns it off)")
        if config.regularizer.projector_dim < 0:
            raise UserError("regularizer.projector_dim must be >= 0 (0: no projector)")
        self.cfg = config
        self.device = info.device
        self._load_data()
        self._build()
        if self.resumed_from is not None:
            self._restore(self.resumed_from)
        else:
            self.step = 0
            self.elapsed_before = 0.0

    # --- set-up ------------------------------------------------------------------------

    def _load_split(self, split: str) -> ImageSplit:
        d = self.cfg.data
        return load_dataset(d.dataset, split, d.root, d.download, d.cache_dir)

    def _load_data(self) -> None:
        cfg, info = self.cfg, self.info
        if not info.is_main:
            barrier(info)  # the main rank downloads / decodes into the cache first
        train_split = self._load_split("train")
        test_split = self._load_split("test") if cfg.train.monitor and info.is_main else None
        if info.is_main:
            barrier(info)
        if cfg.data.train_subset:
            # The subset is fixed (seed 0), whatever the run's seed, so seeds share data.
            order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(0))
            train_split = train_split.subset(order[: cfg.data.train_subset].sort().values)
        self.image_size = cfg.data.image_size or train_split.image_size
        batch = cfg.optim.batch_size
        if batch % info.world_size:
            raise UserError(
                f"optim.batch_size {batch} (global) must be divisible by the "
                f"{info.world_size} processes"
            )
        self.batch_per_rank = batch // info.world_size
        self.steps_per_epoch = (len(train_split) // info.world_size) // self.batch_per_rank
        if self.steps_per_epoch < 1:
            raise UserError(
                f"optim.batch_size {batch} is larger than the {len(train_split)} training "
                "images; lower optim.batch_size"
            )
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if self.device.type == "cuda" and train_split.in_memory:
            train_split = split_to_device(train_split, self.device)  # GPU-resident uint8
        self.train_split = train_split
        self.monitor = None
        if test_split is not None:
            self.monitor = Monitor(
                train_split,
                test_split,
                cfg.train.monitor_size,
                self.image_size,
                self.device,
                knn=cfg.eval.knn,
            )

    def _build(self) -> None:
        cfg, split = self.cfg, self.train_split
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        encoder = build_encoder(cfg.model, self.image_size, split.channels)
        predictor = build_predictor(cfg.model, encoder, cfg.train.method)
        self.target_encoder = copy.deepcopy(encoder).to(self.device)
        for param in self.target_encoder.parameters():
            param.requires_grad_(False)
        projector = projector_for(cfg.regularizer, encoder.embed_dim)
        self.model = JepaModel(encoder, predictor, projector).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.schedules = Schedules(cfg.optim, self.total_steps, self.steps_per_epoch)
        self.diffusion = build_schedule(cfg.diffusion) if cfg.train.method == "djepa" else None
        self.masker = MultiBlockMasker(encoder.grid_size, cfg.mask)
        precision = cfg.train.precision
        if precision not in ("auto", "fp32", "bf16"):
            raise UserError(f"unknown train.precision '{precision}'; use auto, fp32 or bf16")
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        self.forward_model: torch.nn.Module = self.model
        self.forward_target: torch.nn.Module = self.target_encoder
        if self.info.distributed:
            self.forward_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        if cfg.train.compile:
            self.forward_model = torch.compile(self.forward_model)
            self.forward_target = torch.compile(self.target_encoder)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt.get("train_state", {})
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            raise UserError(
                f"checkpoint has {state.get('steps_per_epoch')} steps per epoch but this set-up "
                f"gives {self.steps_per_epoch} (different data or process count); resume with "
                "the original set-up"
            )
        self.model.context_encoder.load_state_dict(ckpt["context_encoder"])
        self.model.predictor.load_state_dict(ckpt["predictor"])
        self.target_encoder.load_state_dict(ckpt["target_encoder"])
        if self.model.projector is not None:
            self.model.projector.load_state_dict(ckpt["projector"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    # --- checkpoints and logs ------------------------------------------------------------

    def data_info(self) -> dict[str, Any]:
        split = self.train_split
        return {
            "dataset": split.name,
            "image_size": self.image_size,
            "channels": split.channels,
            "num_classes": split.num_classes,
            "mean": list(split.mean),
            "std": list(split.std),
        }

    def _projector_state(self) -> dict[str, Any]:
        projector = self.model.projector
        return {} if projector is None else {"projector": clean_state_dict(projector.state_dict())}

    def checkpoint_state(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": cfg.train.method,
            "seed": cfg.train.seed,
            "epoch": self.step // self.steps_per_epoch,
            "step": self.step,
            "config": to_dict(cfg),
            "data": self.data_info(),
            "context_encoder": clean_state_dict(self.model.context_encoder.state_dict()),
            "target_encoder": clean_state_dict(self.target_encoder.state_dict()),
            "predictor": clean_state_dict(self.model.predictor.state_dict()),
            **self._projector_state(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "scheme": "derived per (seed, rank, step); torch_cpu is informational",
                "torch_cpu": torch.get_rng_state(),
            },
            "train_state": {
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "world_size": self.info.world_size,
                "global_batch_size": cfg.optim.batch_size,
                "elapsed_s": self.elapsed(),
            },
            "version": __version__,
            "created": now_iso(),
        }

    def save(self, also_epoch: int | None = None) -> Path:
        """Write checkpoint.pt (and checkpoint-epNNN.pt) from the main rank; all ranks wait."""
        path = self.run_dir / CHECKPOINT_NAME
        if self.info.is_main:
            state = self.checkpoint_state()
            save_checkpoint(state, path)
            if also_epoch is not None:
                save_checkpoint(state, self.run_dir / epoch_checkpoint_name(also_epoch))
        barrier(self.info)
        kill_at = os.environ.get(FAULT_KILL_ENV)
        if kill_at is not None and self.step >= int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    def update_meta(self, **fields: Any) -> None:
        if not self.info.is_main:
            return
        meta = read_meta(self.run_dir)
        meta.update(fields)
        write_meta(self.run_dir, meta)

    # --- the loop ------------------------------------------------------------------------

    def train_step(self, images: torch.Tensor, step: int) -> tuple[LossParts, float]:
        cfg, info = self.cfg, self.info
        values = self.schedules(step)
        set_lr_wd(self.optimizer, values.lr, values.wd)
        masks = self.masker(
            images.shape[0], generator_for(cfg.train.seed, "mask", info.rank, step)
        ).to(self.device)
        noise_gen = generator_for(cfg.train.seed, "noise", info.rank, step, device=self.device)
        torch.manual_seed(derived_seed(cfg.train.seed, "torch", info.rank, step))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with autocast:
            parts = compute_losses(
                self.forward_model,
                self.forward_target,
                self.diffusion,
                images,
                masks,
                cfg,
                noise_gen,
            )
        if self.check_every_step and not torch.isfinite(parts.loss):
            self.diverged(step, parts.loss)
        self.optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        grad_norm = None
        if cfg.optim.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        elif (step + 1) % cfg.train.log_every == 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        self.optimizer.step()
        ema_update(self.target_encoder, self.model.context_encoder, values.ema)
        return parts, grad_norm

    def diverged(self, step: int, loss: torch.Tensor | float) -> None:
        path = self.run_dir / CHECKPOINT_NAME
        last = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint yet"
        value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
        self.update_meta(status="diverged", finished=now_iso())
        raise TrainingDiverged(
            f"loss became {value} at step {step + 1}; {last}; lower optim.lr or set optim.clip_grad"
        )

    def run(self) -> Path:
        cfg, info = self.cfg, self.info
        self.started = time.perf_counter()
        self.check_every_step = self.device.type == "cpu" and not info.distributed
        log = TrainingLog(self.run_dir / LOG_NAME, enabled=info.is_main)
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_config(self.run_dir, cfg)
            meta = read_meta(self.run_dir)
            if self.resumed_from is None:
                meta = {
                    "run": self.run_dir.name,
                    "method": cfg.train.method,
                    "seed": cfg.train.seed,
                    "started": now_iso(),
                    "environment": environment(),
                    "device": str(self.device),
                    "world_size": info.world_size,
                    "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps,
                    "resumes": [],
                }
            else:
                meta.setdefault("resumes", []).append({"step": self.step, "at": now_iso()})
                log.truncate_after(self.step)
            meta.update(status="running", finished=None)
            write_meta(self.run_dir, meta)
        flag = _SignalFlag()
        flag.install()
        threads_before = torch.get_num_threads()
        if self.device.type == "cpu" and cfg.train.cpu_threads > 0:
            torch.set_num_threads(cfg.train.cpu_threads)
        try:
            with self._progress() as progress:
                self._loop(log, flag, progress)
        finally:
            flag.restore()
            torch.set_num_threads(threads_before)
        fingerprints = all_gather_strings(
            param_fingerprint(
                self.model.context_encoder, self.model.predictor, self.target_encoder
            ),
            info,
        )
        self.update_meta(
            status="finished",
            finished=now_iso(),
            step=self.step,
            wall_s=round(self.elapsed(), 2),
            rank_fingerprints=fingerprints,
        )
        return self.run_dir

    @contextmanager
    def _progress(self):
        if not self.progress_enabled:
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task(
                f"{self.cfg.train.method}", total=self.total_steps, completed=self.step,
                loss="-", ips="-",
            )  # fmt: skip
            yield progress, task

    def _loop(self, log: TrainingLog, flag: _SignalFlag, progress) -> None:
        cfg, info = self.cfg, self.info
        spe = self.steps_per_epoch
        sync_every = 1 if self.check_every_step else max(1, min(10, cfg.train.log_every))
        sums = torch.zeros(4, device=self.device)
        interval_steps, interval_start = 0, time.perf_counter()
        while self.step < self.total_steps:
            epoch = self.step // spe
            batches = epoch_batches(
                self.train_split,
                self.batch_per_rank,
                spe,
                rank=info.rank,
                world=info.world_size,
                seed=cfg.train.seed,
                epoch=epoch,
                device=self.device,
                image_size=self.image_size,
                crop_scale=cfg.data.crop_scale,
                hflip=cfg.data.hflip,
                start=self.step - epoch * spe,
                num_workers=cfg.data.num_workers,
            )
            for images in batches:
                step = self.step
                parts, grad_norm = self.train_step(images, step)
                self.step = step + 1
                sums += torch.stack(
                    [parts.loss.detach(), parts.loss_jepa, parts.loss_diff, parts.loss_reg]
                )
                interval_steps += 1
                if self.step % sync_every == 0 or self.step % spe == 0:
                    stop = any_rank(flag.name is not None, info)
                    finite = not any_rank(not bool(torch.isfinite(sums).all()), info)
                    if not finite:
                        self.diverged(step, sums[0] / interval_steps)
                    if stop:
                        path = self.save()
                        self.update_meta(status="interrupted", step=self.step)
                        raise TrainingStopped(flag.name or "signal", self.step, path)
                if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                    means = (sums / interval_steps).tolist()
                    now = time.perf_counter()
                    ips = interval_steps * cfg.optim.batch_size / max(now - interval_start, 1e-9)
                    values = self.schedules(step)
                    log.append(
                        {
                            "kind": "step",
                            "step": self.step,
                            "epoch": round(self.step / spe, 4),
                            "loss": means[0],
                            "loss_jepa": means[1],
                            "loss_diff": means[2],
                            "loss_reg": means[3],
                            "lr": values.lr,
                            "wd": values.wd,
                            "ema": values.ema,
                            "grad_norm": None if grad_norm is None else float(grad_norm),
                            "images_per_s": round(ips, 1),
                            "time": round(self.elapsed(), 2),
                        }
                    )
                    if progress is not None:
                        bar, task = progress
                        bar.update(task, loss=f"{means[0]:.4f}", ips=f"{ips:.0f}")
                    sums.zero_()
                    interval_steps, interval_start = 0, now
                if progress is not None:
                    progress[0].update(progress[1], completed=self.step)
                every = cfg.train.checkpoint_every_steps
                if every and self.step % every == 0 and self.step % spe != 0:
                    self.save()
            self._end_epoch(log)

    def _end_epoch(self, log: TrainingLog) -> None:
        cfg = self.cfg
        epoch = self.step // self.steps_per_epoch
        if self.monitor is not None and self.info.is_main:
            metrics = self.monitor(self.target_encoder)
            log.append(
                {"kind": "epoch", "epoch": epoch, "step": self.step, **metrics,
                 "time": round(self.elapsed(), 2)}
            )  # fmt: skip
        keep = epoch % max(1, cfg.train.checkpoint_every) == 0 or self.step == self.total_steps
        self.save(also_epoch=epoch if keep else None)


def train_run(
    config: Config, out_dir: str | Path, resume: bool = False, progress: bool = False
) -> Path:
    """Train `config` into run directory `out_dir` (resuming its checkpoint if asked).

    Works in one process or under torchrun (every rank calls it). Returns the run directory.
    Raises UserError for bad input, TrainingDiverged on NaN/Inf and TrainingStopped when
    SIGINT/SIGTERM arrived (after writing checkpoint.pt).
    """
    info = setup_distributed(config.train.device)
    created_group = info.distributed
    try:
        trainer = Trainer(config, Path(out_dir), info, resume, progress)
        return trainer.run()
    finally:
        if created_group:
            cleanup_distributed()
