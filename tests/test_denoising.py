"""Denoising diagnostics: sample scores, noise-level grid, and the protocol on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch

from djepa_bench.eval_protocols.denoising import noise_levels
from djepa_bench.eval_protocols.sample_scores import (
    energy_score,
    pairwise_distance_mean,
    pearson,
    spread_and_error,
)


def test_energy_score_of_a_deterministic_prediction_is_its_l2_error():
    gen = torch.Generator().manual_seed(0)
    prediction = torch.randn(50, 16, generator=gen)
    target = torch.randn(50, 16, generator=gen)
    samples = prediction.expand(8, -1, -1)  # K identical samples
    expected = (prediction - target).norm(dim=-1)
    assert torch.allclose(energy_score(samples, target), expected, atol=1e-5)
    assert torch.allclose(energy_score(prediction[None], target), expected)


def test_energy_score_matches_a_direct_double_loop():
    gen = torch.Generator().manual_seed(1)
    samples = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    for n in range(3):
        to_y = sum((samples[k, n] - target[n]).norm() for k in range(4)) / 4
        pairs = [
            (samples[a, n] - samples[b, n]).norm() for a in range(4) for b in range(4) if a != b
        ]
        expected = to_y - 0.5 * sum(pairs) / len(pairs)
        assert energy_score(samples, target)[n] == pytest.approx(float(expected))
        assert pairwise_distance_mean(samples)[n] == pytest.approx(float(sum(pairs) / len(pairs)))


def test_energy_score_prefers_a_calibrated_spread():
    # Targets ~ N(0, I): samples from the true distribution beat a point mass at the mean
    # and beat samples that are too wide.
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(4000, 8, generator=gen)
    true = torch.randn(16, 4000, 8, generator=gen)
    point = torch.zeros(1, 4000, 8)
    wide = 3 * torch.randn(16, 4000, 8, generator=gen)
    scores = [energy_score(s, target).mean() for s in (true, point, wide)]
    assert scores[0] < scores[1] and scores[0] < scores[2]


def test_spread_error_correlation_sees_heteroscedastic_samples():
    gen = torch.Generator().manual_seed(3)
    scale = torch.linspace(0.1, 2.0, 200)[:, None, None]
    target = scale * torch.randn(200, 4, 8, generator=gen)
    samples = scale * torch.randn(32, 200, 4, 8, generator=gen)
    spread, error = spread_and_error(samples, target)
    assert pearson(spread, error) > 0.8
    assert torch.isnan(torch.tensor(pearson(torch.ones(5), torch.arange(5.0))))


def test_noise_levels_span_the_schedule():
    levels = noise_levels(1000, 10)
    assert levels[0] == 0 and levels[-1] == 999 and len(levels) == 12
    assert levels == sorted(levels)


def _records(path):
    return [json.loads(line) for line in path.open()]


def test_denoising_protocol_on_a_djepa_run(run_cli, tiny_runs, tmp_path):
    result = run_cli(
        "eval", "--ckpt", tiny_runs["djepa"], "--protocol", "denoising", "--no-cache",
        "--out", tmp_path, "--set", "eval.denoising.num_images=64",
        "--set", "eval.denoising.sampling_images=16", "--set", "eval.denoising.steps=[1,3]",
        "--set", "eval.denoising.samples=3", "--set", "eval.denoising.num_levels=3",
    )  # fmt: skip
    assert result.code == 0, result.err
    records = _records(tmp_path / "denoising.jsonl")
    by = {}
    for r in records:
        p = r["params"]
        by[(r["metric"], p.get("estimator"), p.get("noise_t"), p.get("steps"))] = r["value"]
    levels = sorted({k[2] for k in by if k[1] == "predictor"})
    assert levels == [0, 25, 50, 74, 99]  # 3 interior levels; timesteps=100 (tiny config)
    # The noisy input at t=0 is almost the clean target; at the last level it is noise.
    assert by[("mse", "noisy_input", 0, None)] < 0.01
    assert by[("mse", "gaussian_posterior", 99, None)] == pytest.approx(1.0, abs=0.1)
    assert by[("mse", "zeros", None, None)] == pytest.approx(1.0, abs=0.05)
    assert ("mse", "mask_token", None, None) in by and ("mse", "mean_target", None, None) in by
    for steps in (1, 3):
        assert by[("diversity", None, None, steps)] >= 0
        assert by[("energy_score", None, None, steps)] > 0
        assert ("spread_error_corr", None, None, steps) in by
    assert all(r["method"] == "djepa" and r["protocol"] == "denoising" for r in records)


def test_denoising_protocol_on_an_ijepa_run_records_the_reference_once(
    run_cli, tiny_runs, tmp_path
):
    result = run_cli(
        "eval", "--ckpt", tiny_runs["ijepa"], "--protocol", "denoising", "--no-cache",
        "--out", tmp_path, "--set", "eval.denoising.num_images=32",
    )  # fmt: skip
    assert result.code == 0, result.err
    records = _records(tmp_path / "denoising.jsonl")
    estimators = {r["params"]["estimator"] for r in records}
    assert estimators == {"ijepa_predictor", "mean_target", "zeros"}
    assert not any("noise_t" in r["params"] or "steps" in r["params"] for r in records)
    reference = {
        r["metric"]: r["value"] for r in records if r["params"]["estimator"] == "ijepa_predictor"
    }
    assert set(reference) == {"mse", "cosine", "energy_score"}


def test_denoising_is_skipped_for_reference_models(run_cli, tmp_path):
    result = run_cli(
        "eval", "--model", "pixels", "--dataset", "synthetic", "--protocol", "denoising",
        "--no-cache", "--out", tmp_path,
    )  # fmt: skip
    assert result.code == 0
    assert "skipped" in result.err and not (tmp_path / "denoising.jsonl").exists()
