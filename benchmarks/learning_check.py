"""Did training help? kNN@20 of trained target encoders vs the same encoder at initialisation.

For each run directory: the target encoder's average-pooled final tokens on the train split
(the bank) and test split, DINO-weighted kNN (k=20, T=0.07, cosine) via
djepa_bench.knn.knn_accuracy; and the same for a randomly initialised encoder of the same
config (the run's own initial weights: same seed, one per distinct seed). Prints each
accuracy, the gain in points and the ratio trained/random, measured in one run.

`--bank N --test N` measure on fixed seeded subsets (a cheap proxy for screening recipes);
`--linear` adds the linear probe (djepa_bench.linear_probe, the protocol's grid) and
`--rankme` RankMe of the test features, both for the trained and the initial encoder;
`--json FILE` writes every number.

    .venv/bin/python benchmarks/learning_check.py /work/runs/cifar10-cpu-ijepa-s0 \
        /work/runs/cifar10-cpu-djepa-s0 --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from djepa_bench.checkpoint import load_checkpoint, load_encoder
from djepa_bench.config import LinearConfig, config_from_dict
from djepa_bench.data import load_dataset
from djepa_bench.knn import knn_accuracy
from djepa_bench.linear_probe import fit_linear_probe
from djepa_bench.models import build_encoder
from djepa_bench.spectral import rankme
from djepa_bench.train.monitor import extract, pooled_encode_fn, seeded_subset


def measure(encoder, train, test, args) -> dict[str, float]:
    """kNN@20 (and, if asked, linear top-1 and RankMe) of one encoder's pooled features."""
    encoder = encoder.to(args.device).eval()
    encode = pooled_encode_fn(encoder)
    bank = extract(encode, train, args.batch_size, args.device, train.image_size)
    queries = extract(encode, test, args.batch_size, args.device, test.image_size)
    out = {"knn20": knn_accuracy(bank, train.labels, queries, test.labels, 20, None, args.device)}
    if args.linear:
        probe = fit_linear_probe(
            bank, train.labels, LinearConfig(epochs=args.linear_epochs), train.num_classes
        )
        out["linear"] = probe.score(queries, test.labels)
    if args.rankme:
        out["rankme"] = rankme(queries)
    return out


def describe(values: dict[str, float], reference: dict[str, float] | None = None) -> str:
    parts = []
    for key, label in (("linear", "linear"), ("rankme", "RankMe")):
        if key in values:
            delta = "" if reference is None else f" ({values[key] - reference[key]:+.2f})"
            parts.append(f"{label} {values[key]:.2f}{delta}")
    return "" if not parts else "; " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories to measure")
    parser.add_argument("--data-root", default=None, help="dataset folder (e.g. ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--bank", type=int, default=0, help="bank: a seeded train subset (0: all)")
    parser.add_argument("--test", type=int, default=0, help="queries: seeded test subset (0: all)")
    parser.add_argument("--linear", action="store_true", help="also the linear probe's top-1")
    parser.add_argument("--linear-epochs", type=int, default=100)
    parser.add_argument("--rankme", action="store_true", help="also RankMe of test features")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    first = load_checkpoint(args.runs[0])
    cfg = config_from_dict(first["config"])
    train = load_dataset(cfg.data.dataset, "train", args.data_root or cfg.data.root)
    test = load_dataset(cfg.data.dataset, "test", args.data_root or cfg.data.root)
    if args.bank:
        train = seeded_subset(train, args.bank, seed=1)
    if args.test:
        test = seeded_subset(test, args.test, seed=2)
    print(f"kNN@20 (T=0.07, cosine): bank {len(train)} train images, {len(test)} test images")

    results: dict[str, dict] = {}
    initial: dict[tuple, dict[str, float]] = {}
    for run in args.runs:
        ckpt = load_checkpoint(run)
        run_cfg = config_from_dict(ckpt["config"])
        data = ckpt["data"]
        key = (run_cfg.train.seed, json.dumps(ckpt["config"]["model"], sort_keys=True))
        if key not in initial:
            torch.manual_seed(run_cfg.train.seed)  # the run's own initial encoder weights
            start = time.perf_counter()
            encoder = build_encoder(run_cfg.model, int(data["image_size"]), int(data["channels"]))
            initial[key] = measure(encoder, train, test, args)
            print(
                f"random init ({run_cfg.model.size}, seed {run_cfg.train.seed}): "
                f"{initial[key]['knn20']:.2f}%{describe(initial[key])} "
                f"[{time.perf_counter() - start:.0f} s]"
            )
        start = time.perf_counter()
        trained = measure(load_encoder(ckpt, "target"), train, test, args)
        ref = initial[key]
        print(
            f"{run.name} ({ckpt['method']}, step {ckpt['step']}): {trained['knn20']:.2f}% "
            f"target encoder; {trained['knn20'] - ref['knn20']:+.2f} points, ratio "
            f"trained/random {trained['knn20'] / ref['knn20']:.3f}{describe(trained, ref)} "
            f"[{time.perf_counter() - start:.0f} s]"
        )
        results[str(run)] = {
            "method": ckpt["method"], "seed": run_cfg.train.seed, "step": ckpt["step"],
            "trained": trained, "init": ref,
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
