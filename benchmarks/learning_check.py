"""Did training help? kNN@20 of trained target encoders vs the same encoder at initialisation.

For each run directory: the target encoder's average-pooled final tokens on the full train
split (the bank) and test split, kNN@20 with the first run's eval.knn settings (DINO
weighting, T=0.07, cosine by default) via djepa_bench.knn.knn_accuracy; and the same for
a randomly initialised encoder of the same config (the run's own initial weights: same
seed). Prints each accuracy, the gain in points
and the ratio trained/random, measured in one run.

    .venv/bin/python benchmarks/learning_check.py /work/runs/cifar10-cpu-ijepa-s0 \
        /work/runs/cifar10-cpu-djepa-s0 --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from djepa_bench.checkpoint import load_checkpoint, load_encoder
from djepa_bench.config import config_from_dict
from djepa_bench.data import load_dataset
from djepa_bench.knn import knn_accuracy
from djepa_bench.models import build_encoder
from djepa_bench.train.monitor import extract, pooled_encode_fn


def knn20(encoder, train, test, batch_size: int, device, knn_cfg) -> float:
    encoder = encoder.to(device).eval()
    encode = pooled_encode_fn(encoder)
    bank = extract(encode, train, batch_size, device, train.image_size)
    queries = extract(encode, test, batch_size, device, test.image_size)
    return knn_accuracy(bank, train.labels, queries, test.labels, 20, knn_cfg, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories to measure")
    parser.add_argument("--data-root", default=None, help="dataset folder (e.g. ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    first = load_checkpoint(args.runs[0])
    cfg = config_from_dict(first["config"])
    train = load_dataset(cfg.data.dataset, "train", args.data_root or cfg.data.root)
    test = load_dataset(cfg.data.dataset, "test", args.data_root or cfg.data.root)
    knn_cfg = cfg.eval.knn
    print(
        f"kNN@20 (T={knn_cfg.temperature}, {knn_cfg.weighting} weighting, cosine): bank "
        f"{len(train)} train images, {len(test)} test images"
    )

    torch.manual_seed(cfg.train.seed)  # the runs' own initial encoder weights
    data = first["data"]
    start = time.perf_counter()
    random_init = knn20(
        build_encoder(cfg.model, int(data["image_size"]), int(data["channels"])),
        train, test, args.batch_size, args.device, knn_cfg,
    )  # fmt: skip
    print(f"random init ({cfg.model.size}, seed {cfg.train.seed}): {random_init:.2f}% "
          f"[{time.perf_counter() - start:.0f} s]")  # fmt: skip
    for run in args.runs:
        ckpt = load_checkpoint(run)
        start = time.perf_counter()
        encoder = load_encoder(ckpt, "target")
        acc = knn20(encoder, train, test, args.batch_size, args.device, knn_cfg)
        print(
            f"{run.name} ({ckpt['method']}, step {ckpt['step']}): {acc:.2f}% target encoder; "
            f"{acc - random_init:+.2f} points, ratio trained/random {acc / random_init:.3f} "
            f"[{time.perf_counter() - start:.0f} s]"
        )


if __name__ == "__main__":
    main()
