"""Benchmark: the project's linear probe against a tuned scikit-learn logistic regression.

Same features for both: CIFAR-10 pixels as `--model pixels` gives them (3072-d), standardised
with training statistics. The project: `fit_linear_probe` with the configured grid (default:
LinearConfig's), chosen on its stratified 10% validation split of train, refit on all of
train. scikit-learn: LogisticRegression (lbfgs, n_jobs=1) for each C of a small grid on the
same fit / validation split, the best C on validation refit on all of train (warm-started
along the C path: the optimum of a strictly convex problem does not depend on the start).
Prints both test top-1 accuracies, the difference and both wall times from one run.

    .venv/bin/python benchmarks/linear_vs_sklearn.py --data-root /work/shared/data
    .venv/bin/python benchmarks/linear_vs_sklearn.py --train 10000 --pool 4   # minutes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
import warnings

import torch

from djepa_bench.config import LinearConfig
from djepa_bench.linear_probe import fit_linear_probe, standardiser, stratified_split

DEFAULT_CS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]


def pixel_features(data_root: str, train_rows: int = 0, pool: int = 1, seed: int = 0):
    """(train x, train y, test x, test y) of CIFAR-10 from `--model pixels`, optionally pooled.

    `train_rows` > 0 keeps a seeded random subset of train; `pool` > 1 average-pools the
    normalised images by that factor before flattening (a smaller, still real feature set).
    """
    from djepa_bench.encoders import load_subject
    from djepa_bench.eval_protocols.base import build_context

    with tempfile.TemporaryDirectory() as cache:
        overrides = ["data.dataset=cifar10", f"data.root={data_root}", f"eval.cache_dir={cache}"]
        ctx = build_context(load_subject(model="pixels", overrides=overrides))
        out = []
        for split in ("train", "test"):
            feats = ctx.features.get(split).float()
            if pool > 1:
                image = ctx.splits[split]
                shape = (len(feats), image.channels, image.image_size, image.image_size)
                feats = torch.nn.functional.avg_pool2d(feats.view(shape), pool).flatten(1)
            out += [feats, ctx.features.labels(split).long()]
    if train_rows:
        keep = torch.randperm(len(out[0]), generator=torch.Generator().manual_seed(seed))
        keep = keep[:train_rows].sort().values
        out[0], out[1] = out[0][keep], out[1][keep]
    return tuple(out)


def sklearn_tuned(xtr, ytr, xte, yte, cs, val_fraction=0.1, seed=0, max_iter=1000):
    """(test top-1, chosen C, {C: val top-1}) of LogisticRegression with C tuned on validation."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    fit_idx, val_idx = stratified_split(ytr, val_fraction, seed)
    mean, std = standardiser(xtr, fit_idx.numpy())
    xf = ((xtr[fit_idx] - mean) / std).numpy()
    xv = ((xtr[val_idx] - mean) / std).numpy()
    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    scores, coefs = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(cs):
            model.set_params(C=c).fit(xf, ytr[fit_idx].numpy())
            scores[c] = 100.0 * model.score(xv, ytr[val_idx].numpy())
            coefs[c] = (model.coef_.copy(), model.intercept_.copy())
        best = max(sorted(cs), key=lambda c: scores[c])  # first of equals: the smaller C
        mean, std = standardiser(xtr)
        model.coef_, model.intercept_ = coefs[best]
        model.set_params(C=best).fit(((xtr - mean) / std).numpy(), ytr.numpy())
    return 100.0 * model.score(((xte - mean) / std).numpy(), yte.numpy()), best, scores


def _timed_sklearn(*args):
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = sklearn_tuned(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="/work/shared/data", help="folder of CIFAR-10")
    parser.add_argument("--train", type=int, default=0, help="train subset rows (0: all 50k)")
    parser.add_argument("--pool", type=int, default=1, help="average-pool factor (1: none)")
    parser.add_argument("--cs", type=float, nargs="+", default=DEFAULT_CS, help="sklearn Cs")
    parser.add_argument("--epochs", type=int, help="probe epochs (default: config)")
    parser.add_argument("--lrs", type=float, nargs="+", help="probe lrs (default: config)")
    parser.add_argument("--wds", type=float, nargs="+", help="probe wds (default: config)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--parallel", action="store_true", help="run scikit-learn in a second process meanwhile"
    )
    parser.add_argument("--skip-sklearn", action="store_true", help="only the project's probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = LinearConfig()
    cfg.epochs = args.epochs or cfg.epochs
    cfg.lrs = args.lrs or cfg.lrs
    cfg.weight_decays = args.wds if args.wds is not None else cfg.weight_decays
    xtr, ytr, xte, yte = pixel_features(args.data_root, args.train, args.pool)
    print(
        f"CIFAR-10 pixels (pool {args.pool}): {len(xtr)} x {xtr.shape[1]} train, "
        f"{len(xte)} test; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    pool = concurrent.futures.ProcessPoolExecutor(1) if args.parallel else None
    if pool and not args.skip_sklearn:  # scikit-learn in a second process, one thread each
        job = pool.submit(_timed_sklearn, xtr, ytr, xte, yte, args.cs, cfg.val_fraction)
    start = time.perf_counter()
    probe = fit_linear_probe(xtr, ytr, cfg, 10, log=lambda m: print("   ", m, flush=True))
    ours, t_ours = probe.score(xte, yte), time.perf_counter() - start
    hp = probe.hparams
    print(
        f"project: {len(hp['grid'])} heads ({cfg.optimizer}, {cfg.epochs} epochs, batch "
        f"{cfg.batch_size}, lrs {cfg.lrs}, wds {cfg.weight_decays}), chose lr={hp['lr']:g} "
        f"wd={hp['wd']:g} (grid_edge {hp['grid_edge']}): test top-1 {ours:6.2f} in {t_ours:.0f} s",
        flush=True,
    )
    grid = ", ".join(f"{k}: {v:.2f}" for k, v in hp["grid"].items())
    print(f"project val top-1 by (lr,wd): {grid}")
    if args.skip_sklearn:
        return
    if pool:
        (reference, best_c, scores), t_sk = job.result()
        pool.shutdown()
    else:
        (reference, best_c, scores), t_sk = _timed_sklearn(
            xtr, ytr, xte, yte, args.cs, cfg.val_fraction
        )
    print("sklearn val top-1 by C: " + ", ".join(f"{c:g}: {v:.2f}" for c, v in scores.items()))
    edge = " (the C grid's edge)" if best_c in (min(args.cs), max(args.cs)) else ""
    print(
        f"sklearn: LogisticRegression (lbfgs) over C {args.cs}, chose C={best_c:g}{edge}: "
        f"test top-1 {reference:6.2f} in {t_sk:.0f} s",
        flush=True,
    )
    diff = ours - reference
    print(f"difference project - sklearn: {diff:+.2f} points (goal within 0.5): {abs(diff) <= 0.5}")
    print(f"wall times measured on a shared machine{' (run side by side)' if pool else ''}")


if __name__ == "__main__":
    main()
