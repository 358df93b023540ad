"""Training-step cost of D-JEPA relative to I-JEPA: same model, batch, masks, in one run.

Each iteration runs one step of the trainer's own step object (train/step.py: schedules,
masks and noise drawn per step, target encoder, context encoder, predictor, backward,
gradient clipping as configured, AdamW, EMA) of each method on the same images and step
index (hence the same masks), interleaved so that a shared machine's load affects both
alike. Prints the median step times, images/s, the ratio djepa/ijepa (goal <= 1.25),
FLOPs per step counted with torch.utils.flop_counter.FlopCounterMode on an eager twin of
the step (the shapes it executes, padding included) and, on a GPU, the fraction of the
bf16 peak (MFU).

`--compile both` times each method eager (with the preset's own context batching) and
compiled (the same batching: static shapes under `fixed`, symbolic token counts otherwise;
train.compile_mode) in the same run, and prints their ratio and
how often dynamo compiled: graphs, AOT compilations, graph breaks. `--warm-only` compiles
and runs two steps, then exits (gpu_speed.sh warms the inductor caches with it). Lines
starting with SUMMARY repeat the headline figures in a fixed format.

    .venv/bin/python benchmarks/train_step.py --preset cifar10-cpu --compile both --threads 2
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
from torch._dynamo.utils import counters
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


def variant_config(cfg: Config, compiled: bool) -> Config:
    """The preset's config eager or compiled, with the preset's context batching either way
    (compiled: static shapes under "fixed", symbolic token counts otherwise)."""
    return replace(cfg, train=replace(cfg.train, compile=compiled))


def count_flops(cfg: Config, method: str, image_size: int, channels: int, device, images) -> int:
    """FLOPs of one step of an eager twin (FlopCounterMode does not see compiled kernels)."""
    twin = build_step(variant_config(cfg, False), method, image_size, channels, device)
    counter = FlopCounterMode(display=False)
    with counter:
        twin(images, 0)
    return counter.get_total_flops()


def padding_line(step: TrainStep, batch: int) -> str | None:
    """How much of a fixed-shape step's tokens are real (mean over a few steps' masks)."""
    if step.cfg.mask.context_batching != "fixed":
        return None
    ctx = tgt = 0.0
    for i in range(8):
        masks = step.sample_masks(batch, 10_000 + i)
        ctx += float(masks.context_valid.float().mean()) / 8
        tgt += float(masks.target_valid.float().mean()) / 8
    masker = step.masker
    return (
        f"fixed shapes: contexts of {masker.max_context_tokens} tokens ({100 * ctx:.0f}% real), "
        f"target blocks of {masker.max_target_tokens} ({100 * tgt:.0f}% real)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "cifar10-cpu")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps per method")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0,
        help="bf16 dense peak of the GPU for MFU (H100/H200 SXM: ~989)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", choices=("preset", "on", "off", "both"), default="preset",
        help="time the step as the preset says, compiled, eager, or both (interleaved)",
    )  # fmt: skip
    parser.add_argument("--methods", default="ijepa,djepa", help="comma-separated methods")
    parser.add_argument("--warm-only", action="store_true", help="compile, run 2 steps, exit")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    cfg, device, bf16, image_size, channels = setup(args)
    batch = cfg.optim.batch_size
    methods = args.methods.split(",")
    choice = {"preset": [cfg.train.compile], "on": [True], "off": [False], "both": [False, True]}
    variants = {
        (method, compiled): build_step(
            variant_config(cfg, compiled), method, image_size, channels, device
        )
        for method in methods
        for compiled in choice[args.compile]
    }
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, channels, image_size, image_size, generator=gen).to(device)

    first_s = {}
    counters.clear()
    for key, step in variants.items():  # the first call compiles
        sync(device)
        start = time.perf_counter()
        step(images, 0)
        sync(device)
        first_s[key] = time.perf_counter() - start
    compilations = (
        f"unique graphs {counters['stats']['unique_graphs']}, "
        f"AOT compilations {counters['aot_autograd']['ok']}, "
        f"graph breaks {sum(counters['graph_break'].values())}"
    )
    if args.warm_only:
        for step in variants.values():
            step(images, 1)
        sync(device)
        print(
            f"warm: first steps {', '.join(f'{v:.0f} s' for v in first_s.values())}; {compilations}"
        )
        return

    flops = {
        key: count_flops(step.cfg, key[0], image_size, channels, device, images)
        for key, step in variants.items()
    }
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in variants}
    for i in range(1, 1 + args.warmup + args.steps):
        for key, step in variants.items():  # the same step index: the same masks
            sync(device)
            start = time.perf_counter()
            step(images, i)
            sync(device)
            if i > args.warmup:
                times[key].append(time.perf_counter() - start)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"preset {args.preset}: {cfg.model.size}/{cfg.model.patch_size} at {image_size}px, "
        f"batch {batch}, {args.steps} steps, {where}{threads}, "
        f"{'bf16' if bf16 else 'fp32'}, context_batching={cfg.mask.context_batching}, "
        f"compile={args.compile} (mode {cfg.train.compile_mode})"
    )
    compiled_steps = [step for (_, c), step in variants.items() if c]
    if compiled_steps:
        print(
            f"compilations of {len(compiled_steps)} compiled step(s) over "
            f"{1 + args.warmup + args.steps} steps each: {compilations}"
        )
        line = padding_line(compiled_steps[0], batch)
        if line:
            print(line)
    median = {key: statistics.median(t) for key, t in times.items()}
    results: dict = {}
    for (method, compiled), seconds in median.items():
        name = (
            f"{method} ({'compiled' if compiled else 'eager'})"
            if args.compile == "both"
            else method
        )
        rate = batch / seconds
        achieved = flops[(method, compiled)] / seconds / 1e12
        mfu = 100 * achieved / args.peak_tflops if device.type == "cuda" else None
        line = (
            f"{name}: median step {seconds * 1e3:.1f} ms, {rate:.0f} images/s, "
            f"{flops[(method, compiled)] / 1e9:.1f} GFLOP/step, {achieved:.3f} TFLOP/s"
        )
        if mfu is not None:
            line += f", MFU {mfu:.1f}% of {args.peak_tflops:g}"
        print(line)
        results[name] = {
            "step_ms": seconds * 1e3,
            "images_per_s": rate,
            "gflop_per_step": flops[(method, compiled)] / 1e9,
            "mfu_percent": mfu,
            "compiled": compiled,
            "first_step_s": first_s[(method, compiled)],
        }
    summary = []
    for method in methods:
        key = (method, choice[args.compile][-1])  # the compiled variant when both
        mfu = results_for(results, method, args.compile)["mfu_percent"]
        summary.append(
            f"SUMMARY step {method} batch {batch}: {batch / median[key]:.0f} images/s, "
            f"{median[key] * 1e3:.1f} ms/step, MFU {'n/a' if mfu is None else f'{mfu:.1f}%'}"
        )
        if args.compile == "both":
            ratio = median[(method, True)] / median[(method, False)]
            results[f"compiled_over_eager_{method}"] = ratio
            summary.append(
                f"SUMMARY compile {method}: eager {median[(method, False)] * 1e3:.1f} ms, "
                f"compiled {median[(method, True)] * 1e3:.1f} ms, compiled/eager {ratio:.3f}; "
                f"{compilations}"
            )
    if {"ijepa", "djepa"} <= set(methods):
        last = choice[args.compile][-1]
        ratio = median[("djepa", last)] / median[("ijepa", last)]
        flop_ratio = flops[("djepa", last)] / flops[("ijepa", last)]
        results["ratio"] = ratio
        print(
            f"ratio djepa/ijepa step time: {ratio:.3f} (goal <= 1.25); FLOP ratio {flop_ratio:.3f}"
        )
        summary.append(f"SUMMARY ratio djepa/ijepa batch {batch}: {ratio:.3f}")
    print("\n".join(summary))
    if args.json:
        results["compilations"] = compilations
        Path(args.json).write_text(json.dumps(results, indent=2))


def results_for(results: dict, method: str, compile_choice: str) -> dict:
    """The result row of `method` (its compiled variant when both were timed)."""
    return results[f"{method} (compiled)" if compile_choice == "both" else method]


if __name__ == "__main__":
    main()
