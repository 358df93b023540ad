"""Crash safety: `kill -9` right after a checkpoint, then --resume, equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from djepa_bench.config import to_dict
from djepa_bench.io import safe_torch_load
from djepa_bench.train.api import quick_config, train_run
from djepa_bench.train.loop import FAULT_KILL_ENV


def weights(run):
    ckpt = safe_torch_load(run / "checkpoint.pt")
    return ckpt["step"], {
        f"{part}.{k}": v
        for part in ("context_encoder", "target_encoder", "predictor")
        for k, v in ckpt[part].items()
    }


def cli(config_file, out, *extra, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "djepa_bench", "train", "--config", str(config_file)]
    cmd += ["--out", str(out), "--device", "cpu", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("method", ["djepa"])
def test_kill_9_after_checkpoint_then_resume_matches_uninterrupted(tmp_path, method):
    cfg = quick_config(
        method=method, train__epochs=2, train__monitor=False, train__checkpoint_every_steps=4
    )
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))

    killed = cli(config_file, tmp_path / "cut", env_extra={FAULT_KILL_ENV: "9"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    step, _ = weights(tmp_path / "cut")
    assert step == 12  # the first step checkpoint at or after step 9, then kill -9

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the killed process
    try:
        train_run(cfg, tmp_path / "cut", resume=True)
        train_run(cfg, tmp_path / "full")
    finally:
        torch.set_num_threads(before)
    step_a, a = weights(tmp_path / "full")
    step_b, b = weights(tmp_path / "cut")
    assert step_a == step_b == 30
    assert all(torch.equal(a[k], b[k]) for k in a)
