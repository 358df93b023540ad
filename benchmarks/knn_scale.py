"""Benchmark: kNN at ImageNet-1k scale from on-disk fp16 feature shards, in bounded memory.

Synthetic class-clustered features (default: a 1,281,167 x 768 bank and 50,000 queries,
1,000 classes in 100 superclasses, as ImageNet-1k's train and val sets at ViT-B width) are
generated shard by shard into two shard entries (djepa_bench.shards, float16, as the
feature cache stores them). Their spectrum follows a power law (the i-th direction's
variance ~ 1/i, the regime alpha-ReQ associates with good self-supervised features), so
they have the low effective dimension of learnt features rather than isotropic noise, and
kNN top-1 is far from both chance and 100%. Then:
(a) exact kNN (DINO weighting, T=0.07, k=20), the project's KnnClassifier streaming the
    bank block by block: top-1, wall time, peak resident memory (resource.getrusage);
(b) a brute-force reference written here (numpy matmul over the whole bank, argsort,
    the DINO vote) on a seeded subsample of the queries: its predictions must equal (a)'s;
(c) an approximate FAISS index (IVF-PQ by default): build and search time, recall@k
    against (a)'s neighbours on all queries, top-1, and its speed-up over (a).
Wall times are of this machine (shared, noisy); the ratio (c)/(a) is measured in one run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/knn_scale.py          # full size (long)
    .venv/bin/python benchmarks/knn_scale.py --bank 20000 --queries 2000 --classes 50 \\
        --dim 64 --ref-queries 200                                      # seconds
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from djepa_bench.knn import KnnClassifier, knn_scores, topk_correct
from djepa_bench.shards import EntryWriter, open_entry

TEMPERATURE = 0.07


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def class_model(classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, scale) of `classes` Gaussian clusters grouped into superclasses of 10.

    A sample of class c is scale * (centre_c + N(0, I)): superclass centres are N(0, I),
    a class centre adds N(0, 0.25^2 I), so classes of a superclass overlap; `scale`
    gives the i-th of the (shuffled) dimensions the variance 1/i.
    """
    rng = np.random.default_rng(seed)
    supers = rng.standard_normal(((classes + 9) // 10, dim)).astype(np.float32)
    offsets = 0.25 * rng.standard_normal((classes, dim)).astype(np.float32)
    scale = (np.arange(1, dim + 1, dtype=np.float32) ** -0.5)[rng.permutation(dim)]
    return supers[np.arange(classes) // 10] + offsets, scale


def write_features(
    folder: Path, count: int, model: tuple[np.ndarray, np.ndarray], shard_rows: int, seed: int
) -> np.ndarray:
    """Write `count` samples into a float16 shard entry, shard by shard; return the labels."""
    centres, scale = model
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), count)
    with EntryWriter(folder, count, shard_rows, "float16", source={"synthetic": seed}) as writer:
        for span in writer.my_shards:
            with writer.shard(span) as put:
                y = labels[span.start : span.stop]
                noise = rng.standard_normal((len(y), centres.shape[1]), dtype=np.float32)
                noise += centres[y]
                noise *= scale
                put(noise)
    return labels


def top1_from_neighbours(sims, idx, bank_labels, query_labels, classes, k) -> float:
    """Top-1 % of the DINO vote over given neighbours (scored in chunks)."""
    correct = 0
    for lo in range(0, sims.shape[0], 4096):
        part = slice(lo, lo + 4096)
        scores = knn_scores(sims[part], bank_labels[idx[part].clamp_min(0)], classes, k)
        correct += int(topk_correct(scores, query_labels[part], 1).sum())
    return 100.0 * correct / sims.shape[0]


def brute_force(bank_folder: Path, bank_labels: np.ndarray, queries: np.ndarray, k: int,
                classes: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Reference written from the formula: cosine to every bank row, top-k, DINO vote.

    Reads the shard files with plain numpy, 64 queries at a time (their full similarity
    rows to the bank); returns (predicted classes, top-k indices).
    """
    files = sorted(bank_folder.glob("shard-*.npy"))
    preds, tops = [], []
    for lo in range(0, len(queries), 64):
        q = _unit(queries[lo : lo + 64].astype(np.float32))
        sims = np.concatenate([q @ _unit(np.load(f).astype(np.float32)).T for f in files], 1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, candidates in zip(sims, part, strict=True):
            neighbours = candidates[np.argsort(-row[candidates], kind="stable")]
            scores = np.zeros(classes)
            np.add.at(scores, bank_labels[neighbours], np.exp(row[neighbours] / TEMPERATURE))
            preds.append(int(np.argmax(scores)))
            tops.append(neighbours)
    return np.array(preds), np.array(tops)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=int, default=1_281_167, help="bank rows")
    parser.add_argument("--queries", type=int, default=50_000, help="query rows")
    parser.add_argument("--classes", type=int, default=1000, help="classes (10 per superclass)")
    parser.add_argument("--dim", type=int, default=768, help="feature width")
    parser.add_argument("--k", type=int, default=20, help="neighbours")
    parser.add_argument("--ref-queries", type=int, default=200, help="brute-force subsample")
    parser.add_argument("--index", default="ivf-pq", choices=["ivf-flat", "ivf-pq", "none"])
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: ~sqrt(bank))")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    parser.add_argument("--pq-m", type=int, default=0, help="PQ bytes per vector (0: dim/8)")
    parser.add_argument("--refine", type=int, default=4, help="IVF-PQ candidates re-ranked / k")
    parser.add_argument("--shard-rows", type=int, default=65536, help="rows per shard file")
    parser.add_argument("--workdir", type=Path, help="where the shards go (default: a temp dir)")
    parser.add_argument("--memory-limit-gb", type=float, default=6.0)
    parser.add_argument(
        "--block-rows", type=int, help="bank rows per streamed block (default: 256 MB)"
    )
    parser.add_argument(
        "--stream", action="store_true", help="stream the bank even when it would fit (<1 GiB)"
    )
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="djepa-knn-scale-"))
    print(
        f"synthetic features: bank {args.bank:,} x {args.dim}, queries {args.queries:,}, "
        f"{args.classes} classes; float16 shards of {args.shard_rows:,} rows in {workdir}; "
        f"torch threads {torch.get_num_threads()}"
    )
    try:
        start = time.perf_counter()
        model = class_model(args.classes, args.dim, seed=0)
        bank_labels = write_features(workdir / "bank", args.bank, model, args.shard_rows, 1)
        query_labels = write_features(workdir / "queries", args.queries, model, args.shard_rows, 2)
        bank, queries = open_entry(workdir / "bank"), open_entry(workdir / "queries")
        size_gb = (bank.nbytes + queries.nbytes) / 1e9
        print(
            f"generated {size_gb:.2f} GB of shards in {time.perf_counter() - start:.1f} s; "
            f"peak RSS {peak_rss_gb():.2f} GB"
        )
        return run(args, workdir, bank, queries, bank_labels, query_labels)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir, bank, queries, bank_labels, query_labels) -> dict:
    k, classes = args.k, args.classes
    yb, yq = torch.from_numpy(bank_labels), torch.from_numpy(query_labels)
    out: dict = {}

    start = time.perf_counter()
    stream = {"block_rows": args.block_rows} | ({"resident_bytes": 0} if args.stream else {})
    exact = KnnClassifier(bank, yb, classes, TEMPERATURE, "dino", "auto", **stream)
    sims, idx = exact.search(queries, k)
    out["exact_top1"] = top1_from_neighbours(sims, idx, yb, yq, classes, k)
    out["exact_s"] = time.perf_counter() - start
    out["exact_peak_gb"] = peak_rss_gb()
    streamed = "streamed" if exact._resident is None else "resident"
    print(
        f"(a) exact kNN ({exact.backend}, {streamed}, blocks of {exact.block_rows:,} rows): "
        f"top-1 {out['exact_top1']:.2f}% at k={k} in {out['exact_s']:.1f} s"
    )
    ok = out["exact_peak_gb"] < args.memory_limit_gb
    print(
        f"    peak RSS {out['exact_peak_gb']:.2f} GB (limit {args.memory_limit_gb:g} GB: "
        f"{'below' if ok else 'ABOVE'}); bank on disk {bank.nbytes / 1e9:.2f} GB float16, "
        f"{bank.nbytes * 2 / 1e9:.2f} GB as float32"
    )

    rows = np.sort(np.random.default_rng(3).permutation(len(queries))[: args.ref_queries])
    start = time.perf_counter()
    ref_pred, ref_top = brute_force(workdir / "bank", bank_labels, queries[rows], k, classes)
    ref_s = time.perf_counter() - start
    ours = knn_scores(sims[rows], yb[idx[rows]], classes, k).argmax(1).numpy()
    same_pred = int((ours == ref_pred).sum())
    same_sets = sum(
        set(a) == set(b) for a, b in zip(idx[rows].numpy(), ref_top, strict=True)
    )  # fmt: skip
    out["reference_equal"] = same_pred == len(rows)
    print(
        f"(b) brute-force reference on {len(rows)} queries ({ref_s:.1f} s): same prediction "
        f"{same_pred}/{len(rows)}, same top-{k} set {same_sets}/{len(rows)}; top-1 "
        f"reference {100 * np.mean(ref_pred == query_labels[rows]):.2f}% vs exact "
        f"{100 * np.mean(ours == query_labels[rows]):.2f}%: equal {out['reference_equal']}"
    )

    if args.index != "none":
        start = time.perf_counter()
        approx = KnnClassifier(
            bank, yb, classes, TEMPERATURE, "dino", "faiss", index=args.index,
            nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m, refine=args.refine, **stream,
        )  # fmt: skip
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        a_sims, a_idx = approx.search(queries, k)
        search_s = time.perf_counter() - start
        found = (a_idx.unsqueeze(2) == idx.unsqueeze(1)).any(dim=2) & (a_idx >= 0)
        out["recall"] = float(found.double().mean())
        out["approx_top1"] = top1_from_neighbours(a_sims, a_idx, yb, yq, classes, k)
        out["speedup_search"] = out["exact_s"] / search_s
        out["speedup_total"] = out["exact_s"] / (build_s + search_s)
        settings = ", ".join(f"{p}={v}" for p, v in approx.params.items() if p != "index")
        print(
            f"(c) {args.index} ({settings}): "
            f"build {build_s:.1f} s, search {search_s:.1f} s; recall@{k} vs exact "
            f"{out['recall']:.4f} on all {len(queries):,} queries; top-1 {out['approx_top1']:.2f}%"
        )
        print(
            f"    speed-up over exact: {out['speedup_search']:.1f}x search only, "
            f"{out['speedup_total']:.1f}x with the build; peak RSS {peak_rss_gb():.2f} GB"
        )
    return out


if __name__ == "__main__":
    main()
