"""The trainer and the benchmarks run one step object: same state and batch, same step."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from djepa_bench.train.api import quick_config, train_run
from djepa_bench.train.step import TrainStep

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Import benchmarks/NAME.py (a script folder, not a package) as a module."""
    sys.path.insert(0, str(BENCHMARKS))  # step_profile.py imports train_step by name
    try:
        path = BENCHMARKS / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_trainer_step_and_benchmark_step_from_the_same_state_are_the_same_step(
    tmp_path, monkeypatch
):
    # Clipping on, past warmup: the comparison covers clipping, the cosine schedules and EMA.
    cfg = quick_config(method="djepa", train__monitor=False, optim__clip_grad=0.5)
    watched = 10
    seen = {}
    original = TrainStep.__call__

    def recording(self, images, step, **kwargs):
        if step == watched:
            seen["before"] = copy.deepcopy(self.state_dict())
            seen["images"] = images.clone()
        out = original(self, images, step, **kwargs)
        if step == watched:
            seen["out"] = out
            seen["after"] = copy.deepcopy(self.state_dict())
        return out

    monkeypatch.setattr(TrainStep, "__call__", recording)
    run = train_run(cfg, tmp_path / "run")
    monkeypatch.undo()
    steps_per_epoch = json.loads((run / "meta.json").read_text())["steps_per_epoch"]

    bench = load_benchmark("train_step")
    step = bench.build_step(
        cfg, "djepa", 16, 3, torch.device("cpu"), steps_per_epoch=steps_per_epoch
    )
    assert isinstance(step, TrainStep)
    step.load_state_dict(seen["before"])
    out = step(seen["images"], watched)
    trainer_out = seen["out"]
    for part in ("loss", "loss_jepa", "loss_diff", "loss_reg"):
        assert torch.equal(getattr(out.parts, part), getattr(trainer_out.parts, part)), part
    assert out.grad_norm is not None and torch.equal(out.grad_norm, trainer_out.grad_norm)
    assert out.grad_norm > 0.5  # clipping acted
    assert out.values == trainer_out.values and out.values.lr < cfg.optim.lr  # cosine, post-warmup
    after = step.state_dict()
    for module in ("context_encoder", "target_encoder", "predictor"):
        for key, tensor in seen["after"][module].items():
            assert torch.equal(after[module][key], tensor), f"{module}.{key}"


TINY = [
    "--set", "model.embed_dim=32", "--set", "model.depth=1", "--set", "model.num_heads=2",
    "--set", "model.predictor_dim=32", "--set", "model.predictor_depth=1",
    "--set", "model.predictor_heads=2", "--set", "optim.clip_grad=1.0",
    "--batch", "16", "--device", "cpu", "--threads", "1",
]  # fmt: skip


def run_benchmark(name: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--preset", "demo", *TINY, *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # two benchmark processes (FLOP counter, profiler): minutes on a busy machine
def test_benchmarks_run_the_step_object_and_keep_their_output_format():
    out = run_benchmark("train_step", "--steps", "2", "--warmup", "1")
    lines = out.splitlines()
    assert lines[0].startswith("preset demo: ") and "batch 16, 2 steps, cpu, 1 threads" in lines[0]
    for method in ("ijepa", "djepa"):
        line = next(x for x in lines if x.startswith(f"{method}: median step "))
        assert "images/s" in line and "GFLOP/step" in line
    ratio = next(x for x in lines if x.startswith("ratio djepa/ijepa step time: "))
    assert "FLOP ratio" in ratio
    assert lines[-1].startswith("SUMMARY ratio djepa/ijepa batch 16: ")
    profile = run_benchmark("step_profile", "--steps", "2", "--rows", "3")
    assert profile.count("== ijepa: step ") == profile.count("== djepa: step ") == 1
    assert "ratio djepa/ijepa: step " in profile.splitlines()[-1]
