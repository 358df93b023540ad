"""Benchmark: the linear probe streamed from a memmap at ImageNet-1k scale, memory and accuracy.

Synthetic features like an extraction of ImageNet-1k would give (default 1,281,167 x 768
fp16 train rows sorted by class as an image-folder walk gives them, 50,000 shuffled test
rows, 1,000 classes: Gaussian class centres plus unit noise) are written to disk chunk by
chunk, then:
(a) full: `fit_linear_probe` streams the train memmap (chunks in random order, a shuffle
    buffer, standardisation in one streaming pass); its peak resident memory (ru_maxrss, file
    pages of the memmap included) and test top-1;
(b) subset: a seeded random subset of train rows that fits in memory, probed twice with the
    same settings: in memory (a float32 tensor, one global shuffle: buffer >= rows) and
    streamed from an fp16 memmap with chunk and buffer cut by the subset's share of the rows
    (so a class spans as many chunks, and a buffer holds as many chunks, as in the full run);
    the two test top-1 accuracies and their difference (goal: within 0.2 points).
Each part runs in a fresh process, so each peak is its own. The grid, epochs and refit are
flags: on a shared 2-core CPU the full size is run with one head and one epoch.

    .venv/bin/python benchmarks/linear_scale.py --dir /tmp/scale                 # full size
    .venv/bin/python benchmarks/linear_scale.py --rows 20000 --dim 32 --classes 20 \\
        --test 2000 --subset 10000 --chunk-rows 256 --buffer-rows 2048            # seconds
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

GEN_CHUNK = 65536


def generate(folder: Path, rows: int, dim: int, classes: int, test: int, spread: float) -> None:
    """Write train.f16 / test.f16 (raw fp16 rows) and labels .npy, chunk by chunk."""
    centres = np.random.default_rng(0).standard_normal((classes, dim)).astype(np.float32)
    centres *= spread
    offset = np.random.default_rng(1).uniform(-5, 5, dim).astype(np.float32)  # not centred
    train_labels = (np.arange(rows, dtype=np.int64) * classes) // rows  # sorted by class
    test_labels = np.random.default_rng(2).integers(0, classes, test)
    for name, labels in (("train", train_labels), ("test", test_labels)):
        with open(folder / f"{name}.f16", "wb") as out:
            for i, start in enumerate(range(0, len(labels), GEN_CHUNK)):
                y = labels[start : start + GEN_CHUNK]
                noise = np.random.default_rng([3, len(name), i]).standard_normal((len(y), dim))
                out.write((centres[y] + noise + offset).astype(np.float16).tobytes())
        np.save(folder / f"{name}_labels.npy", labels)


def open_rows(folder: Path, name: str, dim: int) -> np.memmap:
    """The fp16 rows of `name` as a read-only memmap (rows, dim)."""
    path = folder / f"{name}.f16"
    return np.memmap(path, np.float16, "r", shape=(path.stat().st_size // (2 * dim), dim))


def peak_rss_gb() -> float:
    """This process's peak resident set size in GB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def probe(folder: str, dim: int, classes: int, cfg: dict, rows: list[int] | None, mode: str):
    """Fit and test one probe in this (fresh) process -> (test top-1, seconds, peak RSS GB).

    mode: "stream" (the train memmap, or a memmap of `rows` of it), "memory" (those rows as a
    float32 tensor).
    """
    import torch

    from djepa_bench.config import LinearConfig
    from djepa_bench.linear_probe import fit_linear_probe

    torch.set_num_threads(cfg.pop("threads"))
    folder = Path(folder)
    feats, labels = open_rows(folder, "train", dim), np.load(folder / "train_labels.npy")
    if rows is not None:
        keep = np.asarray(rows)
        labels = labels[keep]
        if mode == "memory":
            feats = torch.from_numpy(feats[keep].astype(np.float32))
        else:
            with open(folder / "subset.f16", "wb") as out:
                for start in range(0, len(keep), GEN_CHUNK):
                    out.write(np.ascontiguousarray(feats[keep[start : start + GEN_CHUNK]]).data)
            feats = open_rows(folder, "subset", dim)
    start = time.perf_counter()
    fitted = fit_linear_probe(feats, torch.from_numpy(labels), LinearConfig(**cfg), classes)
    test = open_rows(folder, "test", dim)
    top1 = fitted.score(test, np.load(folder / "test_labels.npy"))
    return top1, time.perf_counter() - start, peak_rss_gb(), fitted.hparams


def run_fresh(*args, in_process: bool = False):
    """probe(*args) in a fresh spawned process (its own peak RSS), or here if `in_process`."""
    if in_process:
        return probe(*args)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(probe, *args).result()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="folder for the feature files (default: a temp folder)")
    parser.add_argument("--rows", type=int, default=1_281_167, help="train rows")
    parser.add_argument("--dim", type=int, default=768, help="feature width")
    parser.add_argument("--classes", type=int, default=1000, help="number of classes")
    parser.add_argument("--test", type=int, default=50_000, help="test rows")
    parser.add_argument("--spread", type=float, default=0.2, help="class-centre scale")
    parser.add_argument("--subset", type=int, default=128_000, help="rows of the in-memory check")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1], help="probe lrs")
    parser.add_argument("--wds", type=float, nargs="+", default=[1e-4], help="probe wds")
    parser.add_argument("--epochs", type=int, default=1, help="probe epochs")
    parser.add_argument("--subset-epochs", type=int, default=3, help="epochs of the check")
    parser.add_argument("--batch-size", type=int, default=2048, help="probe batch")
    parser.add_argument("--chunk-rows", type=int, default=64, help="rows per read")
    parser.add_argument("--buffer-rows", type=int, default=262144, help="shuffle buffer rows")
    parser.add_argument("--refit", action="store_true", help="refit on all of train")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--skip-full", action="store_true", help="only the subset check")
    parser.add_argument(
        "--reuse", action="store_true", help="keep feature files of this size already in --dir"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="no fresh processes (peaks not separate)"
    )
    args = parser.parse_args(argv)
    tmp = None if args.dir else tempfile.TemporaryDirectory()
    folder = Path(args.dir or tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    expected = args.rows * args.dim * 2
    train_file = folder / "train.f16"
    reuse = args.reuse and train_file.is_file() and train_file.stat().st_size == expected
    if not reuse:
        generate(folder, args.rows, args.dim, args.classes, args.test, args.spread)
    size_gb = (folder / "train.f16").stat().st_size / 1e9
    print(
        f"synthetic features: {args.rows} x {args.dim} fp16 train ({size_gb:.2f} GB on disk, "
        f"sorted by class), {args.test} test, {args.classes} classes; "
        + ("reused" if reuse else f"written in {time.perf_counter() - start:.0f} s"),
        flush=True,
    )
    cfg = dict(
        lrs=args.lrs, weight_decays=args.wds, epochs=args.epochs, batch_size=args.batch_size,
        chunk_rows=args.chunk_rows, buffer_rows=args.buffer_rows, refit=args.refit,
        threads=args.threads,
    )  # fmt: skip
    print(
        f"probe: sgd, lrs {args.lrs} x wds {args.wds}, batch {args.batch_size}, chunks of "
        f"{args.chunk_rows} rows, buffer {args.buffer_rows} rows, refit {args.refit}",
        flush=True,
    )
    result: dict = {}
    if not args.skip_full:
        full = (str(folder), args.dim, args.classes, dict(cfg), None, "stream")
        top1, secs, rss, _ = run_fresh(*full, in_process=args.in_process)
        result["full"] = {"top1": top1, "seconds": secs, "peak_rss_gb": rss}
        print(
            f"(a) full, streamed from the memmap, {args.epochs} epoch(s): test top-1 {top1:.2f}, "
            f"{secs:.0f} s, peak RSS {rss:.2f} GB (goal < 6): {rss < 6}",
            flush=True,
        )
    rows = np.sort(np.random.default_rng(4).permutation(args.rows)[: args.subset]).tolist()
    sub = dict(cfg, epochs=args.subset_epochs)
    # The streamed subset keeps the full run's structure: chunk and buffer scaled by the
    # subset's share, so a class spans as many chunks and a buffer holds as many chunks.
    share = args.subset / args.rows
    in_memory = dict(sub, buffer_rows=max(args.subset, args.buffer_rows))
    streamed = dict(
        sub, buffer_rows=max(1, round(args.buffer_rows * share)),
        chunk_rows=max(1, round(args.chunk_rows * share)),
    )  # fmt: skip
    acc_mem, t_mem, rss_mem, _ = run_fresh(
        str(folder), args.dim, args.classes, in_memory, rows, "memory", in_process=args.in_process
    )
    acc_str, t_str, rss_str, _ = run_fresh(
        str(folder), args.dim, args.classes, streamed, rows, "stream", in_process=args.in_process
    )
    diff = acc_str - acc_mem
    result["subset"] = {"memory": acc_mem, "stream": acc_str, "difference": diff}
    print(
        f"(b) subset of {args.subset} rows, {args.subset_epochs} epochs: in memory (float32, one "
        f"global shuffle) {acc_mem:.2f} ({t_mem:.0f} s, peak RSS {rss_mem:.2f} GB); streamed "
        f"(fp16 memmap, chunks of {streamed['chunk_rows']} rows, buffer "
        f"{streamed['buffer_rows']} rows) {acc_str:.2f} ({t_str:.0f} s, "
        f"peak RSS {rss_str:.2f} GB)",
        flush=True,
    )
    print(f"    difference streamed - in memory: {diff:+.2f} points (goal within 0.2): "
          f"{abs(diff) <= 0.2}")  # fmt: skip
    print("times measured on a shared machine")
    print(json.dumps(result))
    if tmp:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
