"""benchmarks/knn_scale.py at a small size: streamed exact kNN equals brute force, IVF-PQ recall."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "knn_scale.py"
    spec = importlib.util.spec_from_file_location("knn_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_knn_scale_benchmark_matches_brute_force_within_memory(tmp_path, capsys):
    out = _benchmark().main(
        ["--bank", "12000", "--queries", "1500", "--classes", "40", "--dim", "64",
         "--ref-queries", "150", "--shard-rows", "5000", "--block-rows", "4000", "--stream",
         "--nlist", "64", "--workdir", str(tmp_path)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "streamed, blocks of 4,000 rows" in printed and "equal True" in printed
    assert out["reference_equal"] and 100 / 40 < out["exact_top1"] < 100
    assert out["exact_peak_gb"] < 6
    assert 0.5 < out["recall"] <= 1.0  # IVF-PQ with exact re-ranking of 4k candidates
    assert abs(out["approx_top1"] - out["exact_top1"]) < 10
    assert len(list((tmp_path / "bank").glob("shard-*.npy"))) == 3
