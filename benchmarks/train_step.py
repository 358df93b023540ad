"""Training-step cost of D-JEPA relative to I-JEPA: same model, batch, masks, in one run.

Each iteration runs one step of the trainer's own step object (train/step.py: schedules,
masks and noise drawn per step, target encoder, context encoder, predictor, backward,
gradient clipping as configured, AdamW, EMA) of each method on the same images and step
index (hence the same masks), interleaved so that a shared machine's load affects both
alike. Prints the median step times, images/s, the ratio djepa/ijepa (goal <= 1.25),
FLOPs per step counted with torch.utils.flop_counter.FlopCounterMode and, on a GPU, the
fraction of the bf16 peak (MFU).

    .venv/bin/python benchmarks/train_step.py --preset cifar10-cpu --steps 20
    python3 benchmarks/train_step.py --preset cifar10-vit-tiny --steps 50   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from djepa_bench.config import Config, build_config
from djepa_bench.data import get_spec
from djepa_bench.distributed import resolve_device
from djepa_bench.train.step import TrainStep, uses_bf16

# No data is read: the schedules run as over an epoch of this many images (CIFAR-10's train).
NOMINAL_EPOCH_IMAGES = 50_000


def build_step(
    cfg: Config,
    method: str,
    image_size: int,
    channels: int,
    device: torch.device,
    steps_per_epoch: int | None = None,
) -> TrainStep:
    """The trainer's own step object for `method` in one process (clipping, schedules, EMA);
    schedules over `steps_per_epoch` (default: a nominal epoch of 50,000 images)."""
    cfg = replace(cfg, train=replace(cfg.train, method=method))
    images = cfg.data.train_subset or NOMINAL_EPOCH_IMAGES
    per_epoch = steps_per_epoch or max(1, images // cfg.optim.batch_size)
    return TrainStep(
        cfg,
        image_size,
        channels,
        device,
        total_steps=per_epoch * cfg.train.epochs,
        steps_per_epoch=per_epoch,
    )


def add_setup_arguments(parser: argparse.ArgumentParser, preset: str) -> None:
    """The options that choose what is stepped: preset, overrides, batch, device, threads."""
    parser.add_argument("--preset", default=preset, help="training preset to measure")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: preset's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")


def setup(args: argparse.Namespace) -> tuple[Config, torch.device, bool, int, int]:
    """Config, device, bf16 flag, image size and channels that the parsed options ask for."""
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.batch:
        overrides.append(f"optim.batch_size={args.batch}")
    cfg = build_config(args.preset, None, overrides)
    device = resolve_device(args.device)
    bf16 = uses_bf16(cfg.train.precision, device)
    if cfg.data.dataset.startswith("imagefolder:"):
        return cfg, device, bf16, cfg.data.image_size or 224, 3
    spec = get_spec(cfg.data.dataset)
    return cfg, device, bf16, cfg.data.image_size or spec.image_size, spec.channels


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "cifar10-cpu")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps per method")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0,
        help="bf16 dense peak of the GPU for MFU (H100/H200 SXM: ~989)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    cfg, device, bf16, image_size, channels = setup(args)
    batch = cfg.optim.batch_size
    methods = {m: build_step(cfg, m, image_size, channels, device) for m in ("ijepa", "djepa")}
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, channels, image_size, image_size, generator=gen).to(device)

    flops = {}
    for name, step in methods.items():
        counter = FlopCounterMode(display=False)
        with counter:
            step(images, 0)
        flops[name] = counter.get_total_flops()

    times: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(1, 1 + args.warmup + args.steps):
        for name, step in methods.items():  # the same step index: the same masks
            sync(device)
            start = time.perf_counter()
            step(images, i)
            sync(device)
            if i > args.warmup:
                times[name].append(time.perf_counter() - start)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"preset {args.preset}: {cfg.model.size}/{cfg.model.patch_size} at {image_size}px, "
        f"batch {batch}, {args.steps} steps, {where}{threads}, "
        f"{'bf16' if bf16 else 'fp32'}, context_batching={cfg.mask.context_batching}"
    )
    median = {m: statistics.median(t) for m, t in times.items()}
    results = {}
    for name in methods:
        rate = batch / median[name]
        achieved = flops[name] / median[name] / 1e12
        line = (
            f"{name}: median step {median[name] * 1e3:.1f} ms, {rate:.0f} images/s, "
            f"{flops[name] / 1e9:.1f} GFLOP/step, {achieved:.3f} TFLOP/s"
        )
        mfu = 100 * achieved / args.peak_tflops if device.type == "cuda" else None
        if mfu is not None:
            line += f", MFU {mfu:.1f}% of {args.peak_tflops:g}"
        print(line)
        results[name] = {
            "step_ms": median[name] * 1e3,
            "images_per_s": rate,
            "gflop_per_step": flops[name] / 1e9,
            "mfu_percent": mfu,
        }
    print(
        f"ratio djepa/ijepa step time: {median['djepa'] / median['ijepa']:.3f} (goal <= 1.25); "
        f"FLOP ratio {flops['djepa'] / flops['ijepa']:.3f}"
    )
    if args.json:
        results["ratio"] = median["djepa"] / median["ijepa"]
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
