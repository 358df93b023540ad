"""Trainer fault injection: NaN under one and two processes, a locked run directory, a full
disk, --out naming a file. Each test fails on the trainer before these causes were fixed."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import djepa_bench.train.loop as loop
import djepa_bench.train.rundir as rundir
from djepa_bench.config import to_dict
from djepa_bench.errors import UserError
from djepa_bench.io import safe_torch_load
from djepa_bench.train.api import TrainingDiverged, quick_config, train_run
from djepa_bench.train.rundir import LOCK_NAME
from djepa_bench.train.step import TrainStep

TINY_CLI = [
    "--preset", "demo", "--method", "ijepa", "--epochs", "1",
    "--set", "data.dataset=synthetic", "--set", "model.embed_dim=32",
    "--set", "model.depth=1", "--set", "model.patch_size=4", "--set", "model.predictor_dim=32",
    "--set", "model.predictor_depth=1", "--set", "train.monitor=false", "--device", "cpu",
]  # fmt: skip


def all_finite(ckpt: dict) -> bool:
    parts = ("context_encoder", "target_encoder", "predictor")
    return all(torch.isfinite(v).all() for part in parts for v in ckpt[part].values())


def meta(run):
    return json.loads((run / "meta.json").read_text())


# --- 1. a checkpoint is written only from a finite state ---------------------------------


def test_weights_gone_non_finite_under_a_finite_loss_are_never_checkpointed(tmp_path, monkeypatch):
    # NaN gradients at step 12 (an overflow in backward): the loss of step 12 is still
    # finite, the weights after it are not, and step 12 is a checkpoint step.
    cfg = quick_config(
        method="ijepa",
        train__epochs=2,
        train__monitor=False,
        train__log_every=1,  # the grad-norm pass runs every step, where the NaN is injected
        train__checkpoint_every_steps=4,
    )
    original = torch.nn.utils.clip_grad_norm_
    calls = []

    def poison_grads(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        calls.append(1)
        if len(calls) == 12:
            for param in parameters:
                if param.grad is not None:
                    param.grad.fill_(float("nan"))
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poison_grads)
    with pytest.raises(TrainingDiverged) as err:
        train_run(cfg, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "step 12" in message and "last good checkpoint" in message
    ckpt = safe_torch_load(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 8 and all_finite(ckpt)
    assert meta(tmp_path / "run")["status"] == "diverged"


def torchrun_train(config_file, out, nproc=2):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
        str(nproc), "-m", "djepa_bench", "train", "--config", str(config_file), "--out",
        str(out), "--device", "cpu",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_nan_under_two_gloo_processes_leaves_only_finite_checkpoints(tmp_path):
    # lr 30 diverges at step 7 or 8; the loss is checked across ranks every 10 steps, step
    # checkpoints come every 2: each checkpoint must be checked first.
    cfg = quick_config(
        method="djepa",
        train__epochs=1,
        train__monitor=False,
        train__log_every=20,
        train__checkpoint_every_steps=2,
        optim__lr=30.0,
    )
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "ddp"
    result = torchrun_train(config_file, out)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("lower optim.lr" in line for line in errors), result.stderr[-3000:]
    assert meta(out)["status"] == "diverged"
    ckpt = safe_torch_load(out / "checkpoint.pt")
    assert all_finite(ckpt), f"checkpoint at step {ckpt['step']} holds non-finite weights"
    assert 2 <= ckpt["step"] < 10 and "the last good checkpoint is" in errors[0]


# --- 4. one trainer per run directory ------------------------------------------------------


def test_second_train_into_a_locked_run_directory_gets_one_line_and_writes_nothing(
    run_cli, tmp_path
):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(  # another process holding the run directory's lock
        [
            sys.executable, "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242 elsewhere');"
            "print('locked', flush=True); time.sleep(120)",
            str(out / LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("train", *TINY_CLI, "--out", out)
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 2, result.err
    line = result.err.strip()
    assert "\n" not in line and "in use by another training process" in line
    assert "pid 4242" in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing mixed in
    free = run_cli("train", *TINY_CLI, "--out", out)  # lock released: trains normally
    assert free.code == 0, free.err


def test_run_directory_stays_locked_while_training_and_is_freed_after(tmp_path, monkeypatch):
    cfg = quick_config(method="ijepa", train__monitor=False)
    run = tmp_path / "run"
    attempts = []
    original = TrainStep.__call__

    def step_and_intrude(self, images, step, **kwargs):
        if step == 2:  # a second trainer, started while the first one trains
            with pytest.raises(UserError, match="in use by another training process") as err:
                train_run(cfg, run)
            attempts.append(str(err.value))
        return original(self, images, step, **kwargs)

    monkeypatch.setattr(TrainStep, "__call__", step_and_intrude)
    train_run(cfg, run)
    assert len(attempts) == 1 and str(os.getpid()) in attempts[0]
    fd = os.open(run / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the run ended
    finally:
        os.close(fd)


def test_failed_start_leaves_no_run_directory_behind(tmp_path):
    with pytest.raises(UserError, match="larger than the 1000 training images"):
        train_run(quick_config(optim__batch_size=4096), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- 6 and 7. full disk and unusable --out: one line, and the run marked failed --------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_marks_the_run_failed_with_the_reason(run_cli, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(loop, "save_checkpoint", enospc)
    result = run_cli("train", *TINY_CLI, "--out", out)
    assert result.code == 2 and "Traceback" not in result.err
    line = result.err.strip()
    assert "\n" not in line
    assert str(out / "checkpoint.pt") in line and "No space left on device" in line
    recorded = meta(out)
    assert recorded["status"] == "failed" and "No space left on device" in recorded["error"]
    assert recorded["finished"]


def test_failed_mark_is_written_even_when_atomic_writes_fail(tmp_path, monkeypatch):
    # On a truly full disk the temp file of an atomic write cannot be made either.
    def disk_fills(*args, **kwargs):
        monkeypatch.setattr(rundir, "atomic_write_text", enospc)
        enospc()

    monkeypatch.setattr(loop, "save_checkpoint", disk_fills)
    with pytest.raises(UserError, match="No space left on device"):
        train_run(quick_config(method="ijepa", train__monitor=False), tmp_path / "run")
    recorded = meta(tmp_path / "run")
    assert recorded["status"] == "failed" and "No space left" in recorded["error"]


def test_out_naming_a_file_or_a_path_below_a_file_is_one_line(run_cli, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run directory\n")
    result = run_cli("train", *TINY_CLI, "--out", a_file)
    assert result.code == 2 and "Traceback" not in result.err
    assert "is a file, not a directory" in result.err and str(a_file) in result.err
    below = run_cli("train", *TINY_CLI, "--out", a_file / "run")
    assert below.code == 2 and "Traceback" not in below.err
    assert "Not a directory" in below.err and str(a_file / "run") in below.err
    assert a_file.read_text() == "not a run directory\n"
