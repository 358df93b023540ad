"""Low-shot protocol: n labelled images per class (or a percentage), several seeded draws.

Per draw, a scikit-learn pipeline of StandardScaler and logistic regression: features are
standardised with the statistics of the drawn (labelled) images only, as a user with only
those labels would (of each fold's training part inside cross-validation; a dimension
constant on them is centred, not scaled). C is chosen by stratified cross-validation on the
drawn images when every class has at least `cv_min_shots` of them (else `default_c`). And a
kNN vote with the drawn images as the bank. One record per (size, trial, classifier), so
reports give mean, std and a 95% CI. Draws are nested: the first n images of a per-class
seeded permutation, so a trial's 5-shot set contains its 2-shot set.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from djepa_bench.config import LowShotConfig
from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.registry import register
from djepa_bench.knn import KnnClassifier


def class_permutations(labels: torch.Tensor, seed: int) -> dict[int, np.ndarray]:
    """A seeded random order of each class's indices."""
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    return {int(c): rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}


def draw_shots(labels: torch.Tensor, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of `shots` images per class (every image of a smaller class)."""
    perms = class_permutations(labels, seed)
    return np.sort(np.concatenate([p[:shots] for p in perms.values()]))


def draw_percent(labels: torch.Tensor, percent: float, seed: int) -> np.ndarray:
    """Sorted indices of `percent`% of each class (at least one image per class)."""
    if not 0 < percent <= 100:
        raise UserError(f"low-shot percent {percent} must be in (0, 100]")
    perms = class_permutations(labels, seed)
    take = [p[: max(1, int(round(len(p) * percent / 100)))] for p in perms.values()]
    return np.sort(np.concatenate(take))


def fit_logreg(x: np.ndarray, y: np.ndarray, cfg: LowShotConfig, seed: int):
    """A fitted StandardScaler + LogisticRegression pipeline and its C (by stratified CV when
    there are enough shots); the scaler learns from `x` (each CV fold: its training part)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    min_count = int(np.bincount(y)[np.unique(y)].min())
    logreg = LogisticRegression(C=cfg.default_c, max_iter=cfg.max_iter)
    base = make_pipeline(StandardScaler(), logreg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on tiny sets
        if min_count >= max(2, cfg.cv_min_shots) and len(cfg.cs) > 1:
            folds = StratifiedKFold(min(5, min_count), shuffle=True, random_state=seed)
            grid = {"logisticregression__C": list(cfg.cs)}
            search = GridSearchCV(base, grid, cv=folds, n_jobs=cfg.n_jobs)
            search.fit(x, y)
            return search.best_estimator_, float(search.best_params_[next(iter(grid))]), True
        return base.fit(x, y), float(cfg.default_c), False


def _sizes(cfg: LowShotConfig) -> list[tuple[str, float]]:
    sizes = [("shots", int(n)) for n in cfg.shots] + [("percent", float(p)) for p in cfg.percents]
    if not sizes:
        raise UserError("eval.lowshot.shots and eval.lowshot.percents are both empty")
    if any(kind == "shots" and n < 1 for kind, n in sizes):
        raise UserError("eval.lowshot.shots must be positive integers")
    return sizes


def _trial_seed(cfg: LowShotConfig, trial: int) -> int:
    return cfg.seed * 1000 + trial


@register("lowshot", "low-shot: n images per class (or %), seeded draws; logistic regression + kNN")
def run(ctx: EvalContext) -> list[dict]:
    """Records top-1 per (shots or percent, trial, classifier)."""
    cfg = ctx.config.eval.lowshot
    sizes = _sizes(cfg)
    train, test = ctx.features.get("train"), ctx.features.get("test")
    train_labels, test_labels = ctx.features.labels("train"), ctx.features.labels("test")
    x_test = test.float().numpy()
    knn_cfg = ctx.config.eval.knn
    records = []
    for kind, size in sizes:
        accs = []
        for trial in range(cfg.trials):
            seed = _trial_seed(cfg, trial)
            if kind == "shots":
                idx = draw_shots(train_labels, int(size), seed)
            else:
                idx = draw_percent(train_labels, float(size), seed)
            y = train_labels[idx].numpy()
            base = {kind: size, "trial": trial, "seed": seed, "num_labelled": len(idx)}
            start = time.perf_counter()
            clf, c, cv = fit_logreg(train[idx].float().numpy(), y, cfg, seed)
            acc = 100.0 * float((clf.predict(x_test) == test_labels.numpy()).mean())
            params = base | {
                "classifier": "logreg", "C": c, "cv": cv, "standardised_on": "labelled"
            }  # fmt: skip
            records.append(
                ctx.record("lowshot", "top1", acc, params, time_s=time.perf_counter() - start)
            )
            accs.append(acc)
            if cfg.knn:
                start = time.perf_counter()
                k = min(cfg.knn_k, len(idx))
                knn = KnnClassifier(
                    train[idx], train_labels[idx], ctx.num_classes, knn_cfg.temperature,
                    knn_cfg.weighting, knn_cfg.backend, ctx.device,
                )  # fmt: skip
                acc_knn = knn.accuracy(test, test_labels, [k], topk=(1,))[k][1]
                params = base | {"classifier": "knn", "k": k, "temperature": knn_cfg.temperature}
                records.append(
                    ctx.record(
                        "lowshot", "top1", acc_knn, params, time_s=time.perf_counter() - start
                    )
                )
        ctx.log(f"lowshot: {size} {kind}: logreg top-1 {np.mean(accs):.2f} +- {np.std(accs):.2f}")
    return records
