"""Can the data path keep up with the step? Batches/s of augmentation and mask sampling.

Times, on the training device and at a preset's batch, what the trainer does per step
besides the step itself: one augmented batch from GPU-resident (device-resident) uint8
images (train/batches.py: crop, flip, normalise; synthetic images of the preset's size),
and the masks of one step, sampled as the step samples them (on the device for
`context_batching=fixed`) and, for comparison, by the host sampler of `pad` with a copy to
the device. Prints each as images/s and as a multiple of `--goal` images/s (the step rate
the data path must sustain): a multiple well above 1 means it is not the bottleneck.

    python3 benchmarks/data_path.py --preset cifar10-vit-tiny       # on a GPU
    .venv/bin/python benchmarks/data_path.py --preset cifar10-cpu --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from train_step import add_setup_arguments, setup, sync

from djepa_bench.data.split import ImageSplit
from djepa_bench.masks import MultiBlockMasker
from djepa_bench.train.batches import epoch_batches, generator_for


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` synchronised calls (after two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "cifar10-vit-tiny")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--goal", type=float, default=22_000, help="images/s to sustain")
    parser.add_argument("--json", default=None, help="accepted for gpu_speed.sh; unused")
    parser.add_argument("--warm-only", action="store_true", help="nothing to compile: exit")
    args = parser.parse_args()
    if args.warm_only:
        return
    cfg, device, _, image_size, channels = setup(args)
    batch = cfg.optim.batch_size
    count = max(4 * batch, 8192)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, channels, image_size, image_size), generator=gen)
    split = ImageSplit(
        "synthetic", "train", ["x"], torch.zeros(count, dtype=torch.long), (0.5,) * channels,
        (0.25,) * channels, image_size, channels, images.to(torch.uint8).to(device),
    )  # fmt: skip
    steps = count // batch
    state = {"batches": iter(())}

    def next_batch():
        try:
            return next(state["batches"])
        except StopIteration:
            state["batches"] = epoch_batches(
                split, batch, steps, rank=0, world=1, seed=0, epoch=0, device=device,
                image_size=image_size, crop_scale=cfg.data.crop_scale, hflip=cfg.data.hflip,
            )  # fmt: skip
            return next(state["batches"])

    grid = image_size // cfg.model.patch_size
    fixed = MultiBlockMasker(grid, replace(cfg.mask, context_batching="fixed"))
    pad = MultiBlockMasker(grid, replace(cfg.mask, context_batching="pad"))
    counter = iter(range(10**9))
    rates = {
        "augmented batch (GPU-resident uint8)": batch / timed(next_batch, device, args.repeats),
        "masks, fixed, sampled on the device": batch
        / timed(
            lambda: fixed(batch, generator_for(0, "mask", 0, next(counter), device=device)),
            device,
            args.repeats,
        ),
        "masks, pad, host sampler + copy": batch
        / timed(
            lambda: pad(batch, generator_for(0, "mask", 0, next(counter))).to(device),
            device,
            args.repeats,
        ),
    }
    print(f"data path of {args.preset} at batch {batch} on {device.type}")
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} images/s, {rate / args.goal:.1f}x the goal of {args.goal:.0f}")
    augment, masks = list(rates.values())[:2]
    both = 1 / (1 / augment + 1 / masks)
    print(f"SUMMARY data path: {both:.0f} images/s (augmentation + device masks, serial), "
          f"{both / args.goal:.1f}x the {args.goal:.0f} images/s goal")  # fmt: skip


if __name__ == "__main__":
    main()
