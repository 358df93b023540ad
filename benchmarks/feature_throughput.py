"""Feature-extraction throughput of the encoder `eval` runs: eager vs torch.compile, one run.

Builds the frozen encoder `eval --model random:SIZE` would use (djepa_bench.encoders: the
same module and mean pooling), on synthetic images already on the device, and times
batches of `--batch` under torch.inference_mode and, on a GPU, bf16 autocast (as
djepa_bench.features does). Eager and compiled calls alternate so that load affects both
alike. Prints images/s of each, their ratio, and the time a CIFAR-10-sized (60,000 images)
and an ImageNet-1k-sized (1,331,167 images: train + val) pass would take at the compiled
rate: extrapolated from the measured rate, excluding data loading and decoding.

    python3 benchmarks/feature_throughput.py --size base --patch 16 --image-size 224  # GPU
    .venv/bin/python benchmarks/feature_throughput.py --size nano --patch 4 --image-size 32 \
        --batch 64 --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from djepa_bench.distributed import resolve_device
from djepa_bench.encoders import load_subject, make_encoder

DATASET_IMAGES = {"CIFAR-10 (60,000)": 60_000, "ImageNet-1k (1,331,167)": 1_331_167}


def sync(device: torch.device) -> None:
    """Wait for queued device work so a wall-clock time covers it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", help="ViT size (nano, tiny, small, base)")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed batches per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--mode", default="max-autotune-no-cudagraphs", help="torch.compile mode")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--warm-only", action="store_true", help="compile, run once, exit")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    subject = load_subject(
        model=f"random:{args.size}", overrides=[f"model.patch_size={args.patch}"]
    )
    encoder = make_encoder(subject, args.image_size, 3, device=device)
    eager = encoder.encode
    compiled = torch.compile(eager, mode=args.mode, fullgraph=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    variants = {"eager": eager, "compiled": compiled}
    times: dict[str, list[float]] = {name: [] for name in variants}
    compile_s = 0.0
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        compiled(images).float().sum().item()
        compile_s = time.perf_counter() - start
        if args.warm_only:
            print(f"warm: first compiled call {compile_s:.0f} s")
            return
        for i in range(args.warmup + args.steps):
            for name, fn in variants.items():
                sync(device)
                start = time.perf_counter()
                fn(images).float().cpu()  # features leave the device, as in extraction
                sync(device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = "bf16" if device.type == "cuda" else "fp32"
    print(
        f"features ViT-{args.size}/{args.patch} at {args.image_size}px, batch {args.batch}, "
        f"{where}, {precision}, compile mode {args.mode} (first call {compile_s:.0f} s, "
        f"{counters['stats']['unique_graphs']} graph(s))"
    )
    for name in variants:
        print(f"{name}: {rate[name]:.0f} images/s")
    print(f"ratio compiled/eager images/s: {rate['compiled'] / rate['eager']:.3f}")
    results = {"images_per_s": rate, "batch": args.batch, "compile_s": compile_s}
    for label, count in DATASET_IMAGES.items():
        seconds = count / rate["compiled"]
        results[label] = seconds
        print(f"SUMMARY features {label}: {seconds:.0f} s at the compiled rate (extrapolated)")
    print(
        f"SUMMARY features ViT-{args.size}/{args.patch} {args.image_size}px: "
        f"{rate['compiled']:.0f} images/s compiled, {rate['eager']:.0f} eager ({precision})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
