"""Images/s of augmented CIFAR-10 batches: cached uint8 tensor path vs ImageFolder + DataLoader.

Both paths apply the same augmentation (random resized crop to 32 px, scale 0.3-1, and a
horizontal flip, then normalisation) to the same images in the same run; the script
prints each rate and their ratio.

    .venv/bin/python benchmarks/data_throughput.py --data-root ../shared/data [--limit 20000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from djepa_bench.data import iterate_batches, load_dataset


def tensor_path_rate(data, batch_size: int, device: str) -> float:
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    seen = 0
    for images, _ in iterate_batches(
        data, batch_size, device=device, train=True, generator=gen, crop_scale=(0.3, 1.0)
    ):
        seen += images.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def imagefolder_rate(folder: Path, limit: int, batch_size: int, workers: int, mean, std) -> float:
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(32, scale=(0.3, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = ImageFolder(folder, transform=transform)
    if limit < len(dataset):
        dataset = Subset(dataset, torch.randperm(len(dataset))[:limit].tolist())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for images, _ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with CIFAR-10")
    parser.add_argument("--limit", type=int, default=50_000, help="images per epoch, both paths")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference)")
    parser.add_argument("--device", default="cpu", help="device of the tensor path")
    args = parser.parse_args()

    data = load_dataset("cifar10", "train", root=args.data_root)  # decoded once, cached
    if args.limit < len(data):
        data = data.subset(
            torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: args.limit]
        )
    ours = tensor_path_rate(data, args.batch_size, args.device)
    reference = imagefolder_rate(
        Path(data.source) / "train", len(data), args.batch_size, args.workers, data.mean, data.std
    )
    print(
        f"images per epoch: {len(data)}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    print(f"cached tensor path ({args.device}): {ours:,.0f} img/s")
    print(f"ImageFolder + DataLoader ({args.workers} workers): {reference:,.0f} img/s")
    print(f"ratio tensor/imagefolder: {ours / reference:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
