"""Two CPU processes with gloo under torchrun: they train in lockstep to identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from djepa_bench.config import to_dict
from djepa_bench.io import safe_torch_load
from djepa_bench.train.api import quick_config


def test_torchrun_two_gloo_processes_end_with_identical_weights(tmp_path):
    cfg = quick_config(method="djepa", train__epochs=1, train__monitor=False)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "djepa_bench", "train", "--config", str(config_file), "--out", str(out),
        "--device", "cpu",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2
    fingerprints = meta["rank_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    # Global batch 64 = 2 x 32: each rank takes half of the 1000 images per epoch.
    ckpt = safe_torch_load(out / "checkpoint.pt")
    assert ckpt["step"] == meta["steps_per_epoch"] == (1000 // 2) // 32
    assert result.stdout.count("run directory") == 1  # only rank 0 reports
