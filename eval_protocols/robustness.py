"""Robustness protocol: clean-trained linear head and kNN tested on corrupted test images.

The linear head and the kNN bank come from clean train features (shared with the linear
and knn protocols). For every (corruption, severity) the test images are corrupted in
batches on the evaluation device (seeded per image, so the same images come out on any
batch size), encoded, and scored; features are cached under a key naming corruption,
severity, parameter set, seed and test subset. With `eval.robustness.official` the
published CIFAR-10-C / ImageNet-C files are read instead of generated.

Records (CONTRACT.md): metric "top1" per (corruption, severity, classifier), clean as
corruption "clean" severity 0; per classifier "mean_corruption_acc" (mean top-1 over all
corruptions and severities), "relative_robustness" (100 x mean corrupted / clean
accuracy); with a baseline run (eval.robustness.baseline) the corruption errors of
Hendrycks & Dietterich (ICLR 2019): "ce" per corruption, CE_c = 100 * sum_s E_{s,c} /
sum_s E^base_{s,c}, "mce" their mean and "relative_mce" the mean of 100 * sum_s
(E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean). mCE averages the 15 benchmark
corruptions when any were run (the 4 extra ones are reported but, as in the paper, left
out of mCE), otherwise all that were run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from djepa_bench.data import ImageSplit
from djepa_bench.data.augment import resize, to_normalised_float
from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.corruptions import (
    COMMON,
    corrupt,
    family_of,
    resolve_corruptions,
    resolve_param_set,
    resolve_severities,
)
from djepa_bench.eval_protocols.corruptions import official as official_sets
from djepa_bench.eval_protocols.registry import register
from djepa_bench.feature_cache import FeatureSource
from djepa_bench.records import read_records

PROTOCOL = "robustness"
CLASSIFIERS = ("linear", "knn")
# Part of every corrupted-feature cache key: bump when a corruption's output changes.
CORRUPTION_VERSION = "c1"

Scorer = Callable[[torch.Tensor, torch.Tensor], float]


def parse_classifiers(text: str) -> list[str]:
    """'linear,knn' -> ['linear', 'knn'], checked."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in CLASSIFIERS]
    if bad or not names:
        raise UserError(f"eval.robustness.classifiers must name linear and/or knn, got '{text}'")
    return list(dict.fromkeys(names))


def subset_indices(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random test subset of `size` images (None: all n)."""
    if size is None or size >= n:
        return None
    if size <= 0:
        raise UserError(f"eval.robustness.test_subset must be positive, got {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def _scorers(ctx: EvalContext, classifiers: list[str], k: int) -> dict[str, Scorer]:
    scorers: dict[str, Scorer] = {}
    if "linear" in classifiers:
        probe = ctx.linear_probe()
        scorers["linear"] = lambda f, y: probe.accuracy(f, y, (1,))[1]
    if "knn" in classifiers:
        knn = ctx.knn_classifier()
        scorers["knn"] = lambda f, y: knn.accuracy(f, y, [k], topk=(1,))[k][1]
    return scorers


def _feature_source(ctx: EvalContext, split: ImageSplit) -> FeatureSource:
    """A feature source over `split` sharing the context's encoder, cache and batching."""
    return ctx.features.with_splits({"test": split}, progress=False, distributed=False)


def corrupting_transform(
    split: ImageSplit,
    corruption: str,
    severity: int,
    seed: int,
    param_set: str,
    positions: torch.Tensor,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The FeatureSource batch transform that corrupts a batch before encoding.

    In-memory splits are corrupted from their uint8 images at native resolution (then
    resized and normalised as the clean path does); folder splits arrive resized and
    centre-cropped, and are corrupted at that size (as ImageNet-C corrupts 224 px crops).
    `positions` are the images' indices in the full test split: the per-image seeds.
    """
    mean = torch.tensor(split.mean).view(1, -1, 1, 1)
    std = torch.tensor(split.std).view(1, -1, 1, 1)

    def transform(images: torch.Tensor, start: int) -> torch.Tensor:
        count = images.shape[0]
        index = positions[start : start + count]
        if split.in_memory:
            raw = split.images[start : start + count].to(images.device)
        else:
            pixels = images * std.to(images) + mean.to(images)
            raw = torch.round(pixels.clamp(0, 1) * 255).to(torch.uint8)
        out = corrupt(raw, corruption, severity, seed=seed, indices=index, param_set=param_set)
        out = resize(out.float(), images.shape[-1])
        return to_normalised_float(out, split.mean, split.std).to(images.dtype)

    return transform


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    return bar, bar.add_task("robustness", total=total)


@register(
    PROTOCOL,
    "linear head + kNN from clean features on 19 corruptions x 5 severities; mCE vs a baseline",
)
def run(ctx: EvalContext) -> list[dict[str, Any]]:
    """Accuracy per corruption and severity, summaries, and CE/mCE against a baseline run."""
    cfg = ctx.config.eval.robustness
    classifiers = parse_classifiers(cfg.classifiers)
    corruptions = resolve_corruptions(cfg.corruptions)
    severities = resolve_severities(cfg.severities)
    test = ctx.splits["test"]
    param_set = resolve_param_set(cfg.params, test.image_size)
    positions = subset_indices(len(test), cfg.test_subset, cfg.seed)
    scorers = _scorers(ctx, classifiers, cfg.knn_k)

    clean_feats = ctx.features.get("test")
    clean_labels = ctx.features.labels("test")
    if positions is not None:
        full = {name: score(clean_feats, clean_labels) for name, score in scorers.items()}
        scores = ", ".join(f"{k} {v:.2f}" for k, v in full.items())
        ctx.log(
            f"robustness: clean top-1 on all {len(test)} test images: {scores}; "
            f"evaluating a seeded subset of {len(positions)}"
        )
        clean_feats, clean_labels = clean_feats[positions], clean_labels[positions]
        split = test.subset(positions)
    else:
        positions = torch.arange(len(test))
        split = test
    n_images = len(positions)
    official_root = Path(cfg.official) if cfg.official else None
    source = "official" if official_root else "generated"
    if official_root:
        param_set = "official"
        have = set(official_sets.available(official_root))
        missing = [c for c in corruptions if c not in have]
        if missing:
            ctx.log(f"robustness: {official_root} lacks {', '.join(missing)}; skipped")
        corruptions = [c for c in corruptions if c in have]
        if not corruptions:
            raise UserError(f"none of the chosen corruptions are in {official_root}")

    def params(corruption: str, severity: int, classifier: str) -> dict[str, Any]:
        return {
            "corruption": corruption, "severity": severity, "classifier": classifier,
            "param_set": param_set, "family": None if severity == 0 else family_of(corruption),
            "seed": cfg.seed, "test_images": n_images, "source": source,
        }  # fmt: skip

    records: list[dict[str, Any]] = []
    accuracy: dict[str, dict[tuple[str, int], float]] = {name: {} for name in scorers}
    clean: dict[str, float] = {}
    for name, score in scorers.items():
        clean[name] = score(clean_feats, clean_labels)
        records.append(ctx.record(PROTOCOL, "top1", clean[name], params("clean", 0, name)))

    bar = _progress(ctx.features.progress, len(corruptions) * len(severities))
    try:
        for corruption in corruptions:
            line = []
            for severity in severities:
                start = time.perf_counter()
                feats, labels = _corrupted_features(
                    ctx, split, corruption, severity, cfg.seed, param_set, positions,
                    official_root, n_images, test,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
                for name, score in scorers.items():
                    acc = score(feats, labels)
                    accuracy[name][(corruption, severity)] = acc
                    records.append(
                        ctx.record(
                            PROTOCOL,
                            "top1",
                            acc,
                            params(corruption, severity, name),
                            time_s=elapsed,
                        )  # fmt: skip
                    )
                line.append(
                    f"s{severity} " + "/".join(f"{accuracy[n][(corruption, severity)]:.1f}"
                                               for n in scorers)
                )  # fmt: skip
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=f"{corruption} s{severity}")
            ctx.log(f"robustness: {corruption} ({'/'.join(scorers)}): {', '.join(line)}")
    finally:
        if bar is not None:
            bar[0].stop()

    baseline = Path(cfg.baseline) if cfg.baseline else None
    for name in scorers:
        summary = summarise(accuracy[name], clean[name])
        base: dict[str, Any] = {
            "classifier": name, "param_set": param_set, "test_images": n_images,
            "corruptions": len(corruptions), "severities": severities, "source": source,
        }  # fmt: skip
        records.append(ctx.record(PROTOCOL, "mean_corruption_acc", summary["mean"], base))
        records.append(ctx.record(PROTOCOL, "relative_robustness", summary["relative"], base))
        ctx.log(
            f"robustness [{name}]: clean {clean[name]:.2f}, mean corrupted {summary['mean']:.2f}"
            f" ({summary['relative']:.1f}% of clean)"
        )
        if baseline is None:
            continue
        base_acc, base_clean, base_run = load_baseline(
            baseline, ctx.dataset, name, param_set, source, n_images, ctx.log
        )
        errors = corruption_errors(accuracy[name], clean[name], base_acc, base_clean)
        if not errors["ce"]:
            raise UserError(
                f"baseline {baseline} has no {name} robustness records for the corruptions and "
                f"severities evaluated here ({', '.join(corruptions)})"
            )
        tagged = dict(base, baseline_run=base_run)
        for corruption, value in errors["ce"].items():
            records.append(ctx.record(PROTOCOL, "ce", value, dict(tagged, corruption=corruption)))
        mce_params = dict(tagged, corruptions=len(errors["mce_set"]), mce_set=errors["set_name"])
        records.append(ctx.record(PROTOCOL, "mce", errors["mce"], mce_params))
        if errors["relative_mce"] is not None:
            records.append(ctx.record(PROTOCOL, "relative_mce", errors["relative_mce"], mce_params))
        rel = errors["relative_mce"]
        ctx.log(
            f"robustness [{name}] vs {base_run}: mCE {errors['mce']:.1f}"
            + (f", relative mCE {rel:.1f}" if rel is not None else "")
        )
    return records


def _corrupted_features(
    ctx, split, corruption, severity, seed, param_set, positions, official_root, n_images, test
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of one (corruption, severity) of the evaluated test images."""
    if official_root is not None:
        off = official_sets.official_split(official_root, corruption, severity, like=test)
        if n_images < len(off):
            off = off.subset(positions[positions < len(off)])
        source = _feature_source(ctx, off)
        return source.get("test"), off.labels
    name = f"{corruption}-s{severity}-{param_set}-seed{seed}-{CORRUPTION_VERSION}"
    if n_images < len(test):
        name += f"-subset{n_images}r{seed}"
    # a fresh source per (corruption, severity): its in-memory memo goes with it
    source = _feature_source(ctx, split)
    transform = corrupting_transform(split, corruption, severity, seed, param_set, positions)
    return source.get("test", transform=name, batch_transform=transform), split.labels


def summarise(accuracy: dict[tuple[str, int], float], clean: float) -> dict[str, float]:
    """Mean top-1 over all (corruption, severity) and its percentage of the clean top-1."""
    if not accuracy:
        return {"mean": float("nan"), "relative": float("nan")}
    mean = sum(accuracy.values()) / len(accuracy)
    return {"mean": mean, "relative": 100.0 * mean / clean if clean > 0 else float("nan")}


def corruption_errors(
    accuracy: dict[tuple[str, int], float],
    clean: float,
    base_accuracy: dict[tuple[str, int], float],
    base_clean: float | None,
) -> dict[str, Any]:
    """CE per corruption, mCE and relative mCE (Hendrycks & Dietterich), in percent.

    Errors are 100 - top-1. Only severities present in both runs count; a corruption the
    baseline never got wrong (zero error sum) has no CE. relative mCE needs both clean
    accuracies and a baseline whose corrupted error exceeds its clean error.
    """
    ce: dict[str, float] = {}
    relative: dict[str, float] = {}
    for corruption in dict.fromkeys(c for c, _ in accuracy):
        shared = [s for (c, s) in accuracy if c == corruption and (corruption, s) in base_accuracy]
        if not shared:
            continue
        err = [100.0 - accuracy[(corruption, s)] for s in shared]
        base_err = [100.0 - base_accuracy[(corruption, s)] for s in shared]
        if sum(base_err) > 0:
            ce[corruption] = 100.0 * sum(err) / sum(base_err)
        if base_clean is not None:
            gap = sum(e - (100.0 - clean) for e in err)
            base_gap = sum(e - (100.0 - base_clean) for e in base_err)
            if base_gap > 0:
                relative[corruption] = 100.0 * gap / base_gap
    in_common = [c for c in ce if c in COMMON]
    mce_set = in_common or list(ce)
    rel_set = [c for c in mce_set if c in relative]
    return {
        "ce": ce,
        "relative_ce": relative,
        "mce": sum(ce[c] for c in mce_set) / len(mce_set) if mce_set else float("nan"),
        "relative_mce": sum(relative[c] for c in rel_set) / len(rel_set) if rel_set else None,
        "mce_set": mce_set,
        "set_name": "common" if in_common else "evaluated",
    }


def _baseline_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / "results" / f"{PROTOCOL}.jsonl", path / f"{PROTOCOL}.jsonl"):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"baseline {path} has no results/{PROTOCOL}.jsonl; evaluate it first with "
        f"`djepa-bench eval --protocol robustness --ckpt {path}`"
    )


def load_baseline(
    path: Path,
    dataset: str,
    classifier: str,
    param_set: str,
    source: str,
    test_images: int,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[dict[tuple[str, int], float], float | None, str]:
    """A baseline run's top-1 per (corruption, severity) and clean top-1 for one classifier
    (latest record wins), and its run name."""
    file = _baseline_file(path)
    accuracy: dict[tuple[str, int], float] = {}
    clean = None
    run_name = path.name
    sizes = set()
    for record in read_records(file):
        p = record.get("params") or {}
        if (
            record.get("protocol") != PROTOCOL
            or record.get("metric") != "top1"
            or record.get("dataset") != dataset
            or p.get("classifier") != classifier
            or p.get("source", "generated") != source
            or p.get("param_set") != param_set
        ):
            continue
        run_name = record.get("run") or run_name
        sizes.add(p.get("test_images"))
        if p.get("corruption") == "clean":
            clean = float(record["value"])
        else:
            accuracy[(p["corruption"], int(p["severity"]))] = float(record["value"])
    if not accuracy:
        raise UserError(
            f"baseline {file} has no {classifier} robustness records on {dataset} with "
            f"{param_set} parameters; evaluate the baseline with the same settings first"
        )
    if sizes - {test_images}:
        log(
            f"robustness: baseline {run_name} was evaluated on {sorted(s for s in sizes if s)} "
            f"test images, this run on {test_images}; CE compares different image sets"
        )
    return accuracy, clean, run_name
