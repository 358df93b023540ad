"""Robustness protocol: clean-trained linear head and kNN tested on corrupted test images.

The linear head and the kNN bank come from clean train features (shared with the linear
and knn protocols). For every (corruption, severity) the test images are corrupted in
batches on the evaluation device (seeded per image, so the same images come out on any
batch size), encoded, and scored; features are cached under a key naming corruption,
severity, parameter set, seed and test subset. With `eval.robustness.official` the
published CIFAR-10-C / ImageNet-C files are read instead of generated.

`plan` settles and checks the settings (names, severities, official files, the baseline's
records) before any work; `measure` computes the top-1 of every (corruption, severity).

Records (CONTRACT.md): metric "top1" per (corruption, severity, classifier), clean as
corruption "clean" severity 0, with params.family (ImageNet-C's grouping: noise, blur,
weather, digital, extra; brightness is weather there and here) and, where a generated
corruption uses a stand-in for an ingredient of the original, params.substitute (frost:
"procedural frost textures"); per classifier "mean_corruption_acc" (mean top-1 over all
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
from dataclasses import dataclass, field
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
    substitute_of,
)
from djepa_bench.eval_protocols.corruptions import official as official_sets
from djepa_bench.eval_protocols.registry import register
from djepa_bench.feature_cache import FeatureSource
from djepa_bench.records import read_records

PROTOCOL = "robustness"
CLASSIFIERS = ("linear", "knn")
# Part of every corrupted-feature cache key: bump when a corruption's output changes.
CORRUPTION_VERSION = "c2"  # c2: 8-bit output truncated as the original; frost retuned

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


@dataclass(frozen=True)
class RobustnessPlan:
    """What one robustness evaluation measures, settled and checked before any work."""

    classifiers: list[str]
    corruptions: list[str]
    severities: list[int]
    param_set: str  # "cifar", "imagenet", or "official" for the published files
    seed: int
    knn_k: int
    test: ImageSplit  # the whole clean test split
    split: ImageSplit  # the evaluated images: `test` or a seeded subset of it
    positions: torch.Tensor  # their indices in `test` (the per-image corruption seeds)
    official_root: Path | None
    baselines: dict[str, tuple[dict[tuple[str, int], float], float | None, str]] = field(
        default_factory=dict
    )  # classifier -> load_baseline(...) of eval.robustness.baseline
    baseline: Path | None = None

    @property
    def n_images(self) -> int:
        return len(self.positions)

    @property
    def subset(self) -> bool:
        return self.n_images < len(self.test)

    @property
    def source(self) -> str:
        return "official" if self.official_root else "generated"

    def params(self, corruption: str, severity: int, classifier: str) -> dict[str, Any]:
        """The params of a top-1 record (clean: corruption "clean", severity 0)."""
        out = {
            "corruption": corruption, "severity": severity, "classifier": classifier,
            "param_set": self.param_set,
            "family": None if severity == 0 else family_of(corruption),
            "seed": self.seed, "test_images": self.n_images, "source": self.source,
        }  # fmt: skip
        substitute = substitute_of(corruption) if self.source == "generated" else None
        if substitute and severity > 0:
            out["substitute"] = substitute
        return out

    def summary_params(self, classifier: str) -> dict[str, Any]:
        """The params of the per-classifier summary records."""
        return {
            "classifier": classifier, "param_set": self.param_set, "test_images": self.n_images,
            "corruptions": len(self.corruptions), "severities": self.severities,
            "source": self.source,
        }  # fmt: skip

    def cache_name(self, corruption: str, severity: int) -> str:
        """The feature-cache transform name of one generated (corruption, severity)."""
        name = f"{corruption}-s{severity}-{self.param_set}-seed{self.seed}-{CORRUPTION_VERSION}"
        return name + (f"-subset{self.n_images}r{self.seed}" if self.subset else "")


def plan(ctx: EvalContext) -> RobustnessPlan:
    """Resolve and check eval.robustness (names, severities, official files, baseline) so
    that bad settings fail before any feature is computed."""
    cfg = ctx.config.eval.robustness
    classifiers = parse_classifiers(cfg.classifiers)
    corruptions = resolve_corruptions(cfg.corruptions)
    severities = resolve_severities(cfg.severities)
    test = ctx.splits["test"]
    param_set = resolve_param_set(cfg.params, test.image_size)
    positions = subset_indices(len(test), cfg.test_subset, cfg.seed)
    split = test if positions is None else test.subset(positions)
    positions = torch.arange(len(test)) if positions is None else positions
    official_root = Path(cfg.official) if cfg.official else None
    if official_root:
        param_set = "official"
        have = set(official_sets.available(official_root))
        missing = [c for c in corruptions if c not in have]
        if missing:
            ctx.log(f"robustness: {official_root} lacks {', '.join(missing)}; skipped")
        corruptions = [c for c in corruptions if c in have]
        if not corruptions:
            raise UserError(f"none of the chosen corruptions are in {official_root}")
    source = "official" if official_root else "generated"
    baseline = Path(cfg.baseline) if cfg.baseline else None
    baselines = {}
    if baseline is not None:
        wanted = {(c, s) for c in corruptions for s in severities}
        for name in classifiers:
            baselines[name] = load_baseline(
                baseline, ctx.dataset, name, param_set, source, len(positions), ctx.log
            )
            if not wanted & set(baselines[name][0]):
                raise UserError(
                    f"baseline {baseline} has no {name} robustness records for the corruptions"
                    " and severities asked for here; evaluate the baseline on them first"
                )
    return RobustnessPlan(
        classifiers=classifiers, corruptions=corruptions, severities=severities,
        param_set=param_set, seed=cfg.seed, knn_k=cfg.knn_k, test=test, split=split,
        positions=positions, official_root=official_root, baselines=baselines,
        baseline=baseline,
    )  # fmt: skip


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


def corrupted_features(
    ctx: EvalContext, plan: RobustnessPlan, corruption: str, severity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of one (corruption, severity) of the evaluated test images."""
    if plan.official_root is not None:
        off = official_sets.official_split(plan.official_root, corruption, severity, plan.test)
        if plan.n_images < len(off):
            off = off.subset(plan.positions[plan.positions < len(off)])
        return _feature_source(ctx, off).get("test"), off.labels
    # a fresh source per (corruption, severity): its in-memory memo goes with it
    source = _feature_source(ctx, plan.split)
    transform = corrupting_transform(
        plan.split, corruption, severity, plan.seed, plan.param_set, plan.positions
    )
    name = plan.cache_name(corruption, severity)
    return source.get("test", transform=name, batch_transform=transform), plan.split.labels


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    return bar, bar.add_task("robustness", total=total)


@dataclass
class Measurements:
    """Top-1 per classifier: clean, and per (corruption, severity); the records made."""

    clean: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, dict[tuple[str, int], float]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def measure(ctx: EvalContext, plan: RobustnessPlan) -> Measurements:
    """Score the clean and every corrupted test set with each classifier (top-1 records)."""
    scorers = _scorers(ctx, plan.classifiers, plan.knn_k)
    clean_feats = ctx.features.get("test")
    clean_labels = ctx.features.labels("test")
    if plan.subset:
        full = {name: score(clean_feats, clean_labels) for name, score in scorers.items()}
        scores = ", ".join(f"{k} {v:.2f}" for k, v in full.items())
        ctx.log(
            f"robustness: clean top-1 on all {len(plan.test)} test images: {scores}; "
            f"evaluating a seeded subset of {plan.n_images}"
        )
        clean_feats, clean_labels = clean_feats[plan.positions], clean_labels[plan.positions]
    out = Measurements(accuracy={name: {} for name in scorers})
    for name, score in scorers.items():
        out.clean[name] = score(clean_feats, clean_labels)
        out.records.append(
            ctx.record(PROTOCOL, "top1", out.clean[name], plan.params("clean", 0, name))
        )
    bar = _progress(ctx.features.progress, len(plan.corruptions) * len(plan.severities))
    try:
        for corruption in plan.corruptions:
            line = []
            for severity in plan.severities:
                start = time.perf_counter()
                feats, labels = corrupted_features(ctx, plan, corruption, severity)
                elapsed = time.perf_counter() - start
                for name, score in scorers.items():
                    acc = out.accuracy[name][(corruption, severity)] = score(feats, labels)
                    params = plan.params(corruption, severity, name)
                    out.records.append(ctx.record(PROTOCOL, "top1", acc, params, time_s=elapsed))
                accs = "/".join(f"{out.accuracy[n][(corruption, severity)]:.1f}" for n in scorers)
                line.append(f"s{severity} {accs}")
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=f"{corruption} s{severity}")
            ctx.log(f"robustness: {corruption} ({'/'.join(scorers)}): {', '.join(line)}")
    finally:
        if bar is not None:
            bar[0].stop()
    return out


def summary_records(
    ctx: EvalContext, plan: RobustnessPlan, measured: Measurements
) -> list[dict[str, Any]]:
    """Mean corruption accuracy and relative robustness per classifier, and CE / mCE /
    relative mCE against the baseline when there is one."""
    records = []
    for name, clean in measured.clean.items():
        accuracy = measured.accuracy[name]
        summary = summarise(accuracy, clean)
        base = plan.summary_params(name)
        records.append(ctx.record(PROTOCOL, "mean_corruption_acc", summary["mean"], base))
        records.append(ctx.record(PROTOCOL, "relative_robustness", summary["relative"], base))
        ctx.log(
            f"robustness [{name}]: clean {clean:.2f}, mean corrupted {summary['mean']:.2f}"
            f" ({summary['relative']:.1f}% of clean)"
        )
        if name not in plan.baselines:
            continue
        base_acc, base_clean, base_run = plan.baselines[name]
        errors = corruption_errors(accuracy, clean, base_acc, base_clean)
        if not errors["ce"]:
            raise UserError(
                f"baseline {plan.baseline} has no {name} robustness records for the "
                f"corruptions and severities evaluated here ({', '.join(plan.corruptions)})"
            )
        tagged = dict(base, baseline_run=base_run)
        for corruption, value in errors["ce"].items():
            records.append(ctx.record(PROTOCOL, "ce", value, dict(tagged, corruption=corruption)))
        mce_params = dict(tagged, corruptions=len(errors["mce_set"]), mce_set=errors["set_name"])
        records.append(ctx.record(PROTOCOL, "mce", errors["mce"], mce_params))
        rel = errors["relative_mce"]
        if rel is not None:
            records.append(ctx.record(PROTOCOL, "relative_mce", rel, mce_params))
        ctx.log(
            f"robustness [{name}] vs {base_run}: mCE {errors['mce']:.1f}"
            + (f", relative mCE {rel:.1f}" if rel is not None else "")
        )
    return records


@register(
    PROTOCOL,
    "linear head + kNN from clean features on 19 corruptions x 5 severities; mCE vs a baseline",
)
def run(ctx: EvalContext) -> list[dict[str, Any]]:
    """Accuracy per corruption and severity, summaries, and CE/mCE against a baseline run."""
    chosen = plan(ctx)
    measured = measure(ctx, chosen)
    return measured.records + summary_records(ctx, chosen, measured)


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
