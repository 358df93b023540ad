"""The training loop: I-JEPA or D-JEPA on one process or many (torchrun), resumable, logged.

The step itself (models, optimiser, schedules, masks, precision) is `step.TrainStep`; this
module keeps the data, the run directory, signals, checks and logs. All randomness is
derived from (seed, rank, step): masks, diffusion noise, drop-path and the batch order and
augmentation. Together with the optimiser state in the checkpoint, a resumed run therefore
continues exactly where the interrupted one stopped.

Guarantees: a checkpoint is written only after every rank agreed that the loss of every
step since the last check was finite and the weights are finite, so checkpoint.pt is always
the last good state; the run directory is locked while a process trains in it; a run that
fails (full disk, an error) is marked "failed" in meta.json with the reason.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from djepa_bench import __version__
from djepa_bench.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    FORMAT_VERSION,
    check_resumable,
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
from djepa_bench.train.batches import epoch_batches
from djepa_bench.train.monitor import Monitor
from djepa_bench.train.reporting import Display, TensorBoardMirror, display, epoch_line
from djepa_bench.train.reporting import tensorboard_writer_class as require_tensorboard
from djepa_bench.train.rundir import (
    LOG_NAME,
    RunDirError,
    RunDirLock,
    TrainingLog,
    describe_os_error,
    environment,
    mark_failed,
    now_iso,
    read_meta,
    reporting_os_errors,
    write_config,
    write_meta,
)
from djepa_bench.train.step import TrainStep

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
    "train.compile_mode",
    "train.cpu_threads",
    "train.tensorboard",
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
    """One training run in `run_dir` (fresh or resumed): data, run directory, signals, logs."""

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
            check_resumable(checkpoint_path)  # a malformed checkpoint fails before the set-up
            self.resumed_from = load_checkpoint(checkpoint_path)
            config = merge_resume_config(config_from_dict(self.resumed_from["config"]), config)
        if config.train.tensorboard and info.is_main:
            require_tensorboard()  # before the data is read: a missing package is one line now
        self.cfg = config
        self.device = info.device
        self._load_data()
        self.train_step = TrainStep(
            config,
            self.image_size,
            self.train_split.channels,
            self.device,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            rank=info.rank,
            distributed=info.distributed,
        )
        if self.resumed_from is not None:
            self._restore(self.resumed_from)
        else:
            self.step = 0
            self.elapsed_before = 0.0
        self.checked_step = self.step  # the loss of every step up to here is known finite
        # Sum of the losses since then: non-finite iff one of them was (NaN and Inf propagate).
        self.loss_since_check = torch.zeros((), device=self.device)

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

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt.get("train_state", {})
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            raise UserError(
                f"checkpoint has {state.get('steps_per_epoch')} steps per epoch but this set-up "
                f"gives {self.steps_per_epoch} (different data or process count); resume with "
                "the original set-up"
            )
        self.train_step.load_state_dict(ckpt)
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
            **self.train_step.state_dict(),
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
        """Write checkpoint.pt (and checkpoint-epNNN.pt) from the main rank; all ranks wait.

        Every rank first checks that the losses since the last check and the weights are
        finite, so a checkpoint never holds a diverged state."""
        self.check_finite(weights=True)
        path = self.run_dir / CHECKPOINT_NAME
        if self.info.is_main:
            state = self.checkpoint_state()
            with reporting_os_errors(path):
                save_checkpoint(state, path)
            if also_epoch is not None:
                epoch_path = self.run_dir / epoch_checkpoint_name(also_epoch)
                with reporting_os_errors(epoch_path):
                    save_checkpoint(state, epoch_path)
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

    # --- divergence ------------------------------------------------------------------------

    def check_finite(self, weights: bool = False) -> None:
        """Stop (on every rank) if any rank saw a non-finite loss since the last check, or,
        with `weights`, holds a non-finite weight. Syncs the device and all ranks."""
        loss = float(self.loss_since_check)
        loss_ok = math.isfinite(loss)
        weights_ok = self.train_step.weights_finite() if weights and loss_ok else True
        if any_rank(not (loss_ok and weights_ok), self.info):
            self.diverged(loss, loss_ok, weights_ok)
        self.checked_step = self.step
        self.loss_since_check.zero_()

    def diverged(self, loss: float, loss_ok: bool, weights_ok: bool) -> None:
        path = self.run_dir / CHECKPOINT_NAME
        last = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint yet"
        first, last_step = self.checked_step + 1, self.step
        when = f"at step {last_step}" if first >= last_step else f"in steps {first}-{last_step}"
        if not loss_ok:
            what = f"loss became {loss}"
        elif not weights_ok:
            what = "weights became non-finite"
        else:
            what = "loss became non-finite on another process"
        self.update_meta(status="diverged", finished=now_iso(), step=self.checked_step)
        raise TrainingDiverged(f"{what} {when}; {last}; lower optim.lr or set optim.clip_grad")

    # --- the run -------------------------------------------------------------------------

    def run(self) -> Path:
        """Train to the end (or a signal) and return the run directory; a failure is recorded
        in meta.json ("failed" and the reason) before it propagates."""
        self.started = time.perf_counter()
        try:
            self._run()
        except (TrainingStopped, TrainingDiverged):
            raise
        except KeyboardInterrupt:
            self._mark_failed("interrupted", "a second Ctrl-C stopped it without a checkpoint")
            raise
        except OSError as err:
            where = Path(err.filename) if err.filename else self.run_dir
            message = describe_os_error(err, where, "read or write")
            self._mark_failed("failed", message)
            raise RunDirError(message) from err
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else ""
            if not isinstance(err, UserError):
                reason = f"{type(err).__name__}: {reason}"
            self._mark_failed("failed", reason)
            raise
        return self.run_dir

    def _mark_failed(self, status: str, reason: str) -> None:
        if self.info.is_main and (self.run_dir / "meta.json").exists():
            mark_failed(self.run_dir, status, error=reason, step=self.step)

    def _run(self) -> None:
        cfg, info = self.cfg, self.info
        # On one CPU process a check costs nothing, so the loss is checked after every step;
        # elsewhere every sync_every steps (a device sync and an all-reduce), and always
        # before a checkpoint.
        self.check_every_step = self.device.type == "cpu" and not info.distributed
        mirror = None
        if cfg.train.tensorboard and info.is_main:
            purge = self.step + 1 if self.resumed_from is not None else None
            with reporting_os_errors(self.run_dir / "tensorboard"):
                mirror = TensorBoardMirror(self.run_dir, purge_step=purge)
        log = TrainingLog(self.run_dir / LOG_NAME, enabled=info.is_main, mirror=mirror)
        if info.is_main:
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
            meta.pop("error", None)
            write_meta(self.run_dir, meta)
        flag = _SignalFlag()
        flag.install()
        threads_before = torch.get_num_threads()
        if self.device.type == "cpu" and cfg.train.cpu_threads > 0:
            torch.set_num_threads(cfg.train.cpu_threads)
        try:
            with display(
                self.progress_enabled, cfg.train.method, self.total_steps, self.step
            ) as shown:
                self._loop(log, flag, shown)
        finally:
            flag.restore()
            torch.set_num_threads(threads_before)
            log.close()
        fingerprints = all_gather_strings(self.train_step.fingerprint(), info)
        self.update_meta(
            status="finished",
            finished=now_iso(),
            step=self.step,
            wall_s=round(self.elapsed(), 2),
            rank_fingerprints=fingerprints,
        )
        barrier(info)  # no rank leaves the group while another still writes or gathers

    def _loop(self, log: TrainingLog, flag: _SignalFlag, shown: Display) -> None:
        cfg, info = self.cfg, self.info
        spe = self.steps_per_epoch
        sync_every = 1 if self.check_every_step else max(1, min(10, cfg.train.log_every))
        sums = torch.zeros(4, device=self.device)  # loss parts since the last log row
        epoch_sums = torch.zeros(4, device=self.device)  # ... since the epoch (or resume) began
        interval_steps, interval_start = 0, time.perf_counter()
        while self.step < self.total_steps:
            epoch = self.step // spe
            epoch_first_step = self.step
            epoch_sums.zero_()
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
            epoch_start = time.perf_counter()
            for images in batches:
                step = self.step
                out = self.train_step(images, step, grad_norm=(step + 1) % cfg.train.log_every == 0)
                self.step = step + 1
                parts = out.parts
                stacked = torch.stack(
                    [parts.loss.detach(), parts.loss_jepa, parts.loss_diff, parts.loss_reg]
                )
                sums += stacked
                epoch_sums += stacked
                self.loss_since_check += parts.loss.detach()
                interval_steps += 1
                if self.step % sync_every == 0 or self.step % spe == 0:
                    stop = any_rank(flag.name is not None, info)
                    self.check_finite()
                    if stop:
                        path = self.save()
                        self.update_meta(status="interrupted", step=self.step)
                        raise TrainingStopped(flag.name or "signal", self.step, path)
                if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                    means = (sums / interval_steps).tolist()
                    now = time.perf_counter()
                    ips = interval_steps * cfg.optim.batch_size / max(now - interval_start, 1e-9)
                    log.append(
                        {
                            "kind": "step",
                            "step": self.step,
                            "epoch": round(self.step / spe, 4),
                            "loss": means[0],
                            "loss_jepa": means[1],
                            "loss_diff": means[2],
                            "loss_reg": means[3],
                            "lr": out.values.lr,
                            "wd": out.values.wd,
                            "ema": out.values.ema,
                            "grad_norm": None if out.grad_norm is None else float(out.grad_norm),
                            "images_per_s": round(ips, 1),
                            "time": round(self.elapsed(), 2),
                        }
                    )
                    shown.update(loss=f"{means[0]:.4f}", ips=f"{ips:.0f}")
                    sums.zero_()
                    interval_steps, interval_start = 0, now
                shown.update(completed=self.step)
                every = cfg.train.checkpoint_every_steps
                if every and self.step % every == 0 and self.step % spe != 0:
                    self.save()
            trained = self.step - epoch_first_step
            losses = (epoch_sums / max(trained, 1)).tolist()
            self._end_epoch(log, shown, losses, trained, time.perf_counter() - epoch_start)

    def _end_epoch(
        self, log: TrainingLog, shown: Display, losses: list[float], steps: int, train_s: float
    ) -> None:
        cfg = self.cfg
        epoch = self.step // self.steps_per_epoch
        metrics = None
        if self.monitor is not None and self.info.is_main:
            metrics = self.monitor(self.train_step.target_encoder)
            log.append(
                {"kind": "epoch", "epoch": epoch, "step": self.step, **metrics,
                 "time": round(self.elapsed(), 2)}
            )  # fmt: skip
        keep = epoch % max(1, cfg.train.checkpoint_every) == 0 or self.step == self.total_steps
        self.save(also_epoch=epoch if keep else None)
        seconds_per_step = train_s / max(steps, 1)
        shown.line(
            epoch_line(
                epoch,
                cfg.train.epochs,
                self.step,
                self.total_steps,
                losses,
                steps * cfg.optim.batch_size / max(train_s, 1e-9),
                metrics,
                (self.total_steps - self.step) * seconds_per_step,
            )
        )


def train_run(
    config: Config, out_dir: str | Path, resume: bool = False, progress: bool = False
) -> Path:
    """Train `config` into run directory `out_dir` (resuming its checkpoint if asked).

    Works in one process or under torchrun (every rank calls it). Returns the run directory.
    Raises UserError for bad input, a locked run directory or an OS error (full disk...),
    TrainingDiverged on NaN/Inf and TrainingStopped when SIGINT/SIGTERM arrived (after
    writing checkpoint.pt).
    """
    info = setup_distributed(config.train.device)
    created_group = info.distributed
    run_dir = Path(out_dir)
    lock = RunDirLock(run_dir) if info.is_main else None
    try:
        lock_error = None
        if lock is not None:
            try:
                lock.acquire()
            except RunDirError as err:
                lock_error = err
        if any_rank(lock_error is not None, info):
            raise lock_error or RunDirError(f"rank 0 could not lock {run_dir}; see its error")
        trainer = Trainer(config, run_dir, info, resume, progress)
        return trainer.run()
    except OSError as err:  # reading data or the checkpoint to resume (run() handles its own)
        where = Path(err.filename) if err.filename else run_dir
        raise RunDirError(describe_os_error(err, where, "read")) from err
    finally:
        if lock is not None:
            lock.release(remove_if_unused=True)
        # DDP's reducer and its gloo work objects go before the group they use: left for
        # interpreter exit, gloo's threads can abort the finished process (SIGABRT).
        trainer = None
        if created_group:
            cleanup_distributed()
