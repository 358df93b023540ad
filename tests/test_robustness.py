"""The robustness protocol: CE / mCE arithmetic, baselines, and `eval --protocol robustness`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.robustness import (
    RobustnessPlan,
    corruption_errors,
    load_baseline,
    parse_classifiers,
    subset_indices,
    summarise,
)
from djepa_bench.records import RunIdentity, append_records, make_record

# Fast linear probe: one head, few epochs (the protocol reuses whatever probe eval fits).
FAST = [
    "--set", "eval.linear.epochs=10", "--set", "eval.linear.lrs=[0.01]",
    "--set", "eval.linear.refit=false",
    "--set", "eval.linear.weight_decays=[0.0]", "--set", "eval.knn.k=[5]",
    "--set", "eval.robustness.knn_k=5",
]  # fmt: skip


def test_corruption_errors_follow_hendrycks_dietterich():
    acc = {("gaussian_noise", 1): 80.0, ("gaussian_noise", 5): 40.0, ("speckle_noise", 1): 70.0}
    base = {("gaussian_noise", 1): 60.0, ("gaussian_noise", 5): 20.0, ("speckle_noise", 1): 50.0}
    out = corruption_errors(acc, clean=90.0, base_accuracy=base, base_clean=80.0)
    # CE = 100 * (20 + 60) / (40 + 80); relative = 100 * (10 + 50) / (20 + 60)
    assert out["ce"]["gaussian_noise"] == pytest.approx(100 * 80 / 120)
    assert out["relative_ce"]["gaussian_noise"] == pytest.approx(100 * 60 / 80)
    assert out["ce"]["speckle_noise"] == pytest.approx(100 * 30 / 50)
    # speckle is one of the 4 extra corruptions: left out of mCE when a common one ran
    assert out["mce_set"] == ["gaussian_noise"] and out["set_name"] == "common"
    assert out["mce"] == pytest.approx(100 * 80 / 120)
    assert out["relative_mce"] == pytest.approx(100 * 60 / 80)
    only_extra = corruption_errors(
        {("speckle_noise", 1): 70.0}, 90.0, {("speckle_noise", 1): 50.0}, None
    )
    assert only_extra["mce"] == pytest.approx(60.0) and only_extra["set_name"] == "evaluated"
    assert only_extra["relative_mce"] is None  # no baseline clean accuracy
    # severities missing from the baseline do not count
    partial = corruption_errors(acc, 90.0, {("gaussian_noise", 5): 20.0}, 80.0)
    assert partial["ce"] == {"gaussian_noise": pytest.approx(100 * 60 / 80)}


def test_summary_subset_and_classifier_names():
    s = summarise({("fog", 1): 60.0, ("fog", 2): 40.0}, clean=80.0)
    assert s == {"mean": 50.0, "relative": 62.5}
    a = subset_indices(100, 10, seed=3)
    assert torch.equal(a, subset_indices(100, 10, seed=3)) and len(a) == 10
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 10
    assert not torch.equal(a, subset_indices(100, 10, seed=4))
    assert subset_indices(100, None, 0) is None and subset_indices(100, 500, 0) is None
    assert parse_classifiers("knn, linear") == ["knn", "linear"]
    with pytest.raises(UserError, match="linear and/or knn"):
        parse_classifiers("svm")


def _plan(**changes) -> RobustnessPlan:
    from djepa_bench.data import load_dataset

    test = load_dataset("synthetic", "test")
    settings = dict(
        classifiers=["knn"], corruptions=["frost", "brightness"], severities=[1, 5],
        param_set="cifar", seed=3, knn_k=5, test=test, split=test.subset(torch.arange(10)),
        positions=torch.arange(10), official_root=None,
    )  # fmt: skip
    return RobustnessPlan(**{**settings, **changes})


def test_plan_records_family_and_substitute():
    """Every top-1 record names its ImageNet-C family; generated frost says its textures are
    a substitute, official frost and the clean row do not."""
    plan = _plan()
    frost = plan.params("frost", 5, "knn")
    assert frost["family"] == "weather" and frost["substitute"] == "procedural frost textures"
    assert plan.params("brightness", 1, "knn")["family"] == "weather"
    assert "substitute" not in plan.params("brightness", 1, "knn")
    clean = plan.params("clean", 0, "knn")
    assert clean["family"] is None and "substitute" not in clean
    official = _plan(official_root=Path("/c"), param_set="official")
    assert "substitute" not in official.params("frost", 5, "knn")
    assert official.params("frost", 5, "knn")["source"] == "official"
    assert plan.subset and plan.n_images == 10
    assert plan.cache_name("frost", 5) == "frost-s5-cifar-seed3-c2-subset10r3"
    assert not _plan(split=plan.test, positions=torch.arange(len(plan.test))).subset


def _write_baseline(run_dir: Path, values: dict, classifier: str = "linear") -> None:
    ident = RunIdentity("base", "ijepa", 0, "abc")
    records = []
    for (corruption, severity), value in values.items():
        params = {
            "corruption": corruption, "severity": severity, "classifier": classifier,
            "param_set": "cifar", "source": "generated", "test_images": 200,
        }  # fmt: skip
        records.append(
            make_record(ident, dataset="synthetic", split="test", protocol="robustness",
                        metric="top1", value=value, params=params)
        )  # fmt: skip
    append_records(run_dir / "results" / "robustness.jsonl", records)


def test_load_baseline_filters_and_takes_latest(tmp_path):
    _write_baseline(tmp_path, {("clean", 0): 90.0, ("fog", 1): 50.0})
    _write_baseline(tmp_path, {("fog", 1): 55.0})  # a later evaluation wins
    _write_baseline(tmp_path, {("fog", 1): 10.0}, classifier="knn")
    acc, clean, run = load_baseline(tmp_path, "synthetic", "linear", "cifar", "generated", 200)
    assert acc == {("fog", 1): 55.0} and clean == 90.0 and run == "base"
    with pytest.raises(UserError, match="no linear robustness records on cifar10"):
        load_baseline(tmp_path, "cifar10", "linear", "cifar", "generated", 200)
    with pytest.raises(UserError, match="has no results/robustness.jsonl"):
        load_baseline(tmp_path / "nothing", "synthetic", "linear", "cifar", "generated", 200)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def _top1(records, corruption, severity, classifier):
    (value,) = [
        r["value"] for r in records if r["metric"] == "top1"
        and r["params"]["corruption"] == corruption and r["params"]["severity"] == severity
        and r["params"]["classifier"] == classifier
    ]  # fmt: skip
    return value


def test_eval_robustness_end_to_end(run_cli, tmp_path):
    """Pixels on `digits`: clean row = linear protocol, blur hurts more at severity 5,
    corrupted features are cached, and a run is its own baseline with CE = mCE = 100."""
    cache = tmp_path / "cache"
    common = [
        "eval", "--model", "pixels", "--dataset", "digits", "--device", "cpu",
        "--set", f"eval.cache_dir={cache}", *FAST,
    ]  # fmt: skip
    args = [
        *common, "--set", "eval.robustness.corruptions=gaussian_blur,contrast",
        "--set", "eval.robustness.severities=[1,5]",
    ]  # fmt: skip
    first = run_cli(*args, "--protocol", "linear,robustness", "--out", tmp_path / "a")
    assert first.code == 0, first.err
    records = _records(tmp_path / "a" / "robustness.jsonl")
    linear = [r for r in _records(tmp_path / "a" / "linear.jsonl") if r["metric"] == "top1"]
    assert _top1(records, "clean", 0, "linear") == pytest.approx(linear[0]["value"])
    for classifier in ("linear", "knn"):
        assert _top1(records, "gaussian_blur", 5, classifier) < _top1(
            records, "gaussian_blur", 1, classifier
        )
    metrics = {r["metric"] for r in records}
    assert metrics == {"top1", "mean_corruption_acc", "relative_robustness"}
    top1 = [r for r in records if r["metric"] == "top1"]
    families = {r["params"]["corruption"]: r["params"]["family"] for r in top1}
    assert families == {"clean": None, "gaussian_blur": "extra", "contrast": "digital"}
    assert not any("substitute" in r["params"] for r in records)
    cached = sorted(p.parent.name for p in cache.rglob("manifest.json"))  # entry folders
    assert sum("gaussian_blur-s5" in name for name in cached) == 1

    second = run_cli(  # the same settings through the eval command's own flags
        *common, "--protocol", "robustness", "--out", tmp_path / "b",
        "--corruptions", "gaussian_blur,contrast", "--severities", "1,5",
        "--baseline", tmp_path / "a",
        "--set", "eval.robustness.classifiers=knn",  # the linear head is covered above
    )  # fmt: skip
    assert second.code == 0, second.err
    assert sorted(p.parent.name for p in cache.rglob("manifest.json")) == cached  # all reused
    again = _records(tmp_path / "b" / "robustness.jsonl")
    assert _top1(again, "gaussian_blur", 5, "knn") == _top1(records, "gaussian_blur", 5, "knn")
    by_metric = {(r["metric"], r["params"]["classifier"], r["params"].get("corruption")): r
                 for r in again}  # fmt: skip
    assert by_metric[("mce", "knn", None)]["value"] == pytest.approx(100.0)
    assert by_metric[("relative_mce", "knn", None)]["value"] == pytest.approx(100.0)
    assert by_metric[("ce", "knn", "contrast")]["value"] == pytest.approx(100.0)
    assert by_metric[("mce", "knn", None)]["params"]["baseline_run"] == "pixels"


def test_eval_robustness_reads_official_arrays_and_subsets(run_cli, tmp_path):
    """Official CIFAR-C-style arrays holding the clean test images give the clean accuracy
    at every severity; a test subset evaluates (and records) fewer images."""
    from djepa_bench.data import load_dataset

    test = load_dataset("synthetic", "test")
    images = test.images.permute(0, 2, 3, 1).numpy()
    folder = tmp_path / "synthetic-c"
    folder.mkdir()
    np.save(folder / "fog.npy", np.concatenate([images] * 5))
    np.save(folder / "labels.npy", np.tile(test.labels.numpy().astype(np.uint8), 5))
    result = run_cli(
        "eval", "--model", "pixels", "--dataset", "synthetic", "--device", "cpu", "--no-cache",
        "--protocol", "robustness", "--out", tmp_path / "r", *FAST,
        "--set", f"eval.robustness.official={folder}",
        "--set", "eval.robustness.corruptions=fog,snow",
        "--set", "eval.robustness.severities=[2,4]", "--set", "eval.robustness.test_subset=60",
        "--set", "eval.robustness.classifiers=knn",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "lacks snow" in result.err
    records = _records(tmp_path / "r" / "robustness.jsonl")
    clean = _top1(records, "clean", 0, "knn")
    assert _top1(records, "fog", 2, "knn") == pytest.approx(clean)
    assert _top1(records, "fog", 4, "knn") == pytest.approx(clean)
    assert {r["params"]["classifier"] for r in records} == {"knn"}
    assert {r["params"]["test_images"] for r in records} == {60}
    assert {r["params"]["source"] for r in records} == {"official"}


def test_eval_robustness_errors_are_one_line(run_cli, tmp_path):
    base = ["eval", "--model", "pixels", "--dataset", "synthetic", "--protocol", "robustness",
            "--no-cache", "--out", tmp_path, "--device", "cpu", *FAST,
            "--set", "eval.robustness.classifiers=knn"]  # fmt: skip
    bad = run_cli(*base, "--set", "eval.robustness.corruptions=smog")
    assert bad.code == 2 and "unknown corruption 'smog'" in bad.err
    missing = run_cli(
        *base, "--set", "eval.robustness.corruptions=contrast",
        "--set", "eval.robustness.severities=[1]",
        "--set", f"eval.robustness.baseline={tmp_path}/none",
    )  # fmt: skip
    assert missing.code == 2 and "has no results/robustness.jsonl" in missing.err
    assert "Traceback" not in bad.err + missing.err


def test_missing_baseline_fails_before_any_corruption_is_computed(run_cli, tmp_path):
    cache = tmp_path / "cache"
    result = run_cli(
        "eval", "--model", "pixels", "--dataset", "synthetic", "--protocol", "robustness",
        "--out", tmp_path / "out", "--device", "cpu", *FAST, "--set", f"eval.cache_dir={cache}",
        "--set", "eval.robustness.classifiers=knn", "--set", "eval.robustness.corruptions=fog",
        "--set", "eval.robustness.severities=[1]",
        "--set", f"eval.robustness.baseline={tmp_path}/none",
    )  # fmt: skip
    assert result.code == 2 and "has no results/robustness.jsonl" in result.err
    assert not [p for p in cache.rglob("*.npy") if "fog" in p.name]  # nothing corrupted
