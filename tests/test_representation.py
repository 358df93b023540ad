"""Label-free representation metrics: RankMe, alpha-ReQ, per-dim std, and their protocol."""

from __future__ import annotations

import json

import pytest
import torch

from djepa_bench.spectral import alpha_req, covariance_eigenvalues, feature_std, rankme


def test_rankme_of_isotropic_gaussian_is_close_to_its_dimension():
    z = torch.randn(20_000, 64, generator=torch.Generator().manual_seed(0))
    assert 60 < rankme(z) <= 64


@pytest.mark.parametrize("rank", [1, 5, 20])
def test_rankme_of_rank_r_matrix_is_close_to_r(rank):
    gen = torch.Generator().manual_seed(rank)
    # Orthonormal factors with equal singular values: RankMe is exactly r (up to epsilon).
    left = torch.linalg.qr(torch.randn(2000, rank, generator=gen, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(64, rank, generator=gen, dtype=torch.float64))[0]
    assert rankme(left @ right.T) == pytest.approx(rank, rel=0.01)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_a_synthetic_power_law(alpha):
    # Features with covariance eigenvalues i^-alpha along random orthogonal directions.
    dim, gen = 128, torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0]
    scales = torch.arange(1, dim + 1, dtype=torch.float64) ** (-alpha / 2)
    z = torch.randn(50_000, dim, generator=gen, dtype=torch.float64) * scales @ basis.T
    fit = alpha_req(covariance_eigenvalues(z), (1, 64))
    assert fit.alpha == pytest.approx(alpha, abs=0.08)
    assert fit.r2 > 0.98


def test_metrics_are_float64_and_detect_collapse():
    healthy = torch.randn(1000, 16)
    collapsed = healthy.clone()
    collapsed[:, 8:] = 0.0
    assert isinstance(rankme(healthy.float()), float)
    assert covariance_eigenvalues(healthy.float()).dtype == torch.float64
    assert feature_std(collapsed)["min"] == 0.0
    assert feature_std(healthy)["min"] > 0.8


def test_representation_protocol_writes_records(run_cli, tiny_runs, tmp_path):
    result = run_cli(
        "eval", "--ckpt", tiny_runs["djepa"], "--protocol", "representation", "--no-cache",
        "--out", tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (tmp_path / "representation.jsonl").open()]
    values = {r["metric"]: r["value"] for r in records}
    assert set(values) == {
        "rankme", "alpha_req", "alpha_req_r2", "feature_std_mean", "feature_std_min",
    }  # fmt: skip
    assert 1.0 <= values["rankme"] <= records[0]["params"]["dim"]
    assert all(r["protocol"] == "representation" and r["method"] == "djepa" for r in records)
