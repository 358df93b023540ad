"""Benchmark: the project's kNN and batched linear probe against scikit-learn, same features.

On synthetic clustered features (default 50,000 x 192 train, 10,000 x 192 test, 10 classes):
(a) kNN (DINO weighting, T=0.07, k in {10, 20, 100, 200}, one search at k=200): the
    project's KnnClassifier vs scikit-learn NearestNeighbors(metric="cosine",
    algorithm="brute") followed by the same weighted vote; accuracies must match.
(b) Linear probe: the project's batched (lr x wd) grid with validation selection and refit
    vs scikit-learn LogisticRegression fitted once per grid point (a C grid of the same
    size) with the same validation split, selection and refit.
Prints each accuracy, each time and the ratio of times (sklearn / project).

    .venv/bin/python benchmarks/knn_linear.py [--train 50000] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from djepa_bench.config import LinearConfig
from djepa_bench.knn import KnnClassifier, knn_scores, topk_correct
from djepa_bench.linear_probe import fit_linear_probe, standardiser, stratified_split


def clustered_features(n_train: int, n_test: int, dim: int, classes: int, seed: int = 0):
    """Gaussian clusters: a few sub-centres per class so neither task is trivially separable."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 4, dim, generator=gen)

    def draw(n: int):
        labels = torch.randint(0, classes, (n,), generator=gen)
        sub = torch.randint(0, 4, (n,), generator=gen)
        x = centres[labels, sub] + 3.5 * torch.randn(n, dim, generator=gen)
        return x.float(), labels

    return (*draw(n_train), *draw(n_test))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_knn(xtr, ytr, xte, yte, classes, ks, device, backend):
    def ours():
        clf = KnnClassifier(xtr, ytr, classes, 0.07, "dino", backend, device)
        return {k: a[1] for k, a in clf.accuracy(xte, yte, ks, topk=(1,)).items()}

    def sklearn():
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=max(ks), metric="cosine", algorithm="brute")
        dist, idx = nn.fit(xtr.numpy()).kneighbors(xte.numpy())
        sims = torch.from_numpy(1.0 - dist)
        labels = ytr[torch.from_numpy(idx)]
        return {
            k: 100.0
            * topk_correct(knn_scores(sims, labels, classes, k), yte, 1).double().mean().item()
            for k in ks
        }

    ours()  # warm-up (FAISS / BLAS / CUDA initialisation)
    acc_ours, t_ours = timed(ours)
    acc_sk, t_sk = timed(sklearn)
    print(f"(a) kNN, DINO weighting T=0.07, cosine, one search at k={max(ks)}")
    for k in ks:
        print(f"    k={k:<4d} top-1  project {acc_ours[k]:6.2f}   sklearn {acc_sk[k]:6.2f}")
    same = all(abs(acc_ours[k] - acc_sk[k]) < 0.015 for k in ks)
    print(f"    same accuracy: {same}")
    print(f"    time  project {t_ours:7.2f} s   sklearn NearestNeighbors brute {t_sk:7.2f} s")
    print(f"    ratio sklearn/project: {t_sk / t_ours:.1f}x  (goal >= 5x)")


def sklearn_grid(xtr, ytr, xte, yte, cs, cfg: LinearConfig):
    """LogisticRegression per C on the same fit/val split, best C refit on all of train."""
    from sklearn.linear_model import LogisticRegression

    fit_idx, val_idx = stratified_split(ytr, cfg.val_fraction, cfg.seed)
    mean, std = standardiser(xtr[fit_idx])
    xf, xv = ((xtr[fit_idx] - mean) / std).numpy(), ((xtr[val_idx] - mean) / std).numpy()
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in cs:
            model = LogisticRegression(C=c, max_iter=1000).fit(xf, ytr[fit_idx].numpy())
            scores.append(model.score(xv, ytr[val_idx].numpy()))
        best = cs[int(np.argmax(scores))]
        mean, std = standardiser(xtr)
        model = LogisticRegression(C=best, max_iter=1000)
        model.fit(((xtr - mean) / std).numpy(), ytr.numpy())
    return 100.0 * model.score(((xte - mean) / std).numpy(), yte.numpy()), best


def bench_linear(xtr, ytr, xte, yte, classes, device, batch_size=None, lrs=None):
    cfg = LinearConfig()
    if batch_size:
        cfg.batch_size = batch_size
    if lrs:
        cfg.lrs = lrs
    heads = len(cfg.lrs) * len(cfg.weight_decays)
    cs = np.logspace(-4, 2, heads).tolist()

    def ours():
        probe = fit_linear_probe(xtr, ytr, cfg, classes, device)
        return probe.score(xte, yte), probe.hparams

    # Warm-up (CUDA context, cuBLAS handles, allocator) so the timing is the probe itself.
    fit_linear_probe(xtr[:2000], ytr[:2000], LinearConfig(epochs=1), classes, device)
    (acc_ours, hp), t_ours = timed(ours)
    (acc_sk, best_c), t_sk = timed(lambda: sklearn_grid(xtr, ytr, xte, yte, cs, cfg))
    print(f"(b) linear probe, {heads}-point grid, {cfg.val_fraction:.0%} validation split, refit")
    print(
        f"    project: {heads} heads batched ({cfg.optimizer}, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, lrs {cfg.lrs}), "
        f"chose lr={hp['lr']:g} wd={hp['wd']:g}: test top-1 {acc_ours:6.2f}  in {t_ours:7.2f} s"
    )
    print(
        f"    sklearn: LogisticRegression x {heads} C values (lbfgs), chose C={best_c:.3g}: "
        f"test top-1 {acc_sk:6.2f}  in {t_sk:7.2f} s"
    )
    print(f"    accuracy difference: {acc_ours - acc_sk:+.2f} points (goal within 1)")
    print(f"    ratio sklearn/project: {t_sk / t_ours:.1f}x  (goal >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50000, help="training feature rows")
    parser.add_argument("--test", type=int, default=10000, help="test feature rows")
    parser.add_argument("--dim", type=int, default=192, help="feature width")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--device", default="cpu", help="device for the project's code")
    parser.add_argument("--backend", default="auto", help="kNN backend: auto, faiss or torch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip", choices=["knn", "linear"], help="skip one part")
    parser.add_argument("--batch-size", type=int, help="linear-probe batch (default: config)")
    parser.add_argument("--lrs", type=float, nargs="+", help="linear-probe lrs (default: config)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    xtr, ytr, xte, yte = clustered_features(args.train, args.test, args.dim, args.classes)
    print(
        f"features: {args.train} x {args.dim} train, {args.test} x {args.dim} test, "
        f"{args.classes} classes; project on {args.device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    if args.skip != "knn":
        bench_knn(xtr, ytr, xte, yte, args.classes, [10, 20, 100, 200], args.device, args.backend)
    if args.skip != "linear":
        bench_linear(xtr, ytr, xte, yte, args.classes, args.device, args.batch_size, args.lrs)


if __name__ == "__main__":
    main()
