"""Where a training step spends its time: CPU enqueue vs synchronised step, GPU kernels.

It profiles the trainer's own step object (train/step.py, built as train_step.py does).
For each method (same model, batch and step indices, hence masks) it prints the median
synchronised step time, the time the CPU takes to enqueue the step (equal to the step
time when the step is launch-bound or waits on the device), the kernels launched and the
GPU-busy time per step, then torch.profiler's table of the costliest operators. Ends with
the djepa/ijepa ratio of step times and, on a GPU, of GPU-busy times.

    python3 benchmarks/step_profile.py --preset cifar10-vit-tiny            # on a GPU
    .venv/bin/python benchmarks/step_profile.py --preset cifar10-cpu --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from train_step import add_setup_arguments, build_step, setup, sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "cifar10-vit-tiny")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per method")
    parser.add_argument("--rows", type=int, default=20, help="operators shown per table")
    args = parser.parse_args()
    cfg, device, bf16, image_size, channels = setup(args)
    cuda = device.type == "cuda"
    batch = cfg.optim.batch_size
    images = torch.randn(batch, channels, image_size, image_size).to(device)

    step_ms: dict[str, float] = {}
    busy_ms: dict[str, float] = {}
    for method in ("ijepa", "djepa"):
        step = build_step(cfg, method, image_size, channels, device)
        for i in range(5):
            step(images, i)
        synced, enqueued = [], []
        for i in range(5, 5 + args.steps):
            sync(device)
            start = time.perf_counter()
            step(images, i)
            launched = time.perf_counter()
            sync(device)
            enqueued.append(launched - start)
            synced.append(time.perf_counter() - start)
        step_ms[method] = 1e3 * statistics.median(synced)
        line = (
            f"== {method}: step {step_ms[method]:.1f} ms, "
            f"CPU enqueue {1e3 * statistics.median(enqueued):.1f} ms"
        )
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        profiled = 3
        with profile(activities=activities) as prof:
            for i in range(profiled):
                step(images, 5 + args.steps + i)
            sync(device)
        if cuda:
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            busy_ms[method] = sum(e.device_time for e in kernels) / profiled / 1e3
            line += (
                f", {len(kernels) / profiled:.0f} kernels/step, "
                f"GPU busy {busy_ms[method]:.1f} ms/step"
            )
        print(line)
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=args.rows)
        print(table, flush=True)
    ratio = f"ratio djepa/ijepa: step {step_ms['djepa'] / step_ms['ijepa']:.3f}"
    if cuda:
        ratio += f", GPU busy {busy_ms['djepa'] / busy_ms['ijepa']:.3f}"
    print(ratio + " (methods profiled one after the other, not interleaved)")


if __name__ == "__main__":
    main()
