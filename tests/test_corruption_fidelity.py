"""Fidelity to the official CIFAR-10-C / ImageNet-C generator: on the same fixed images, our
mean absolute change per corruption and severity is within 0.9-1.1 of the official one
(tests/data/corruption_reference.json) and rises and falls with severity as it does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from djepa_bench.eval_protocols.corruptions import CORRUPTIONS
from djepa_bench.eval_protocols.corruptions.fidelity import (
    BOUNDS,
    Fidelity,
    compare,
    load_reference,
    reference_draws,
    same_trend,
    sample_photos,
    trend_marks,
)

REFERENCE = load_reference(Path(__file__).parent / "data" / "corruption_reference.json")
SETS = {"photos32": "cifar", "photos224": "imagenet", "cifar10_test": "cifar"}

# Draws per image on the 12 photos at 32 px: deterministic corruptions need one; those
# whose few random choices (texture, angle, affine, drop pattern) swing the change get
# enough that ours sits within about 3% of its limit (the reference took 40).
DRAWS_32 = {
    "defocus_blur": 1, "zoom_blur": 1, "brightness": 1, "contrast": 1, "pixelate": 1,
    "jpeg_compression": 1, "gaussian_blur": 1, "saturate": 1,
    "frost": 40, "spatter": 24, "motion_blur": 16, "fog": 16, "elastic_transform": 16,
    "snow": 8, "impulse_noise": 8,
}  # fmt: skip


def _check(row: Fidelity) -> None:
    ratios = ", ".join(f"{r:.3f}" for r in row.ratios)
    assert row.within, f"{row.corruption}: ours / official = {ratios}, not all in {BOUNDS}"
    assert row.trend_ok, (
        f"{row.corruption}: trend {trend_marks(row.ours)} vs official "
        f"{trend_marks(row.official)} ({row.ours} vs {row.official})"
    )


def test_reference_covers_every_corruption_severity_and_set():
    assert "hendrycks/robustness" in REFERENCE["about"]
    for name, param_set in SETS.items():
        ref = REFERENCE["sets"][name]
        assert ref["param_set"] == param_set
        assert list(ref["mean_change"]) == list(CORRUPTIONS)
        assert all(reference_draws(ref, c) >= 1 for c in CORRUPTIONS)
        for values in ref["mean_change"].values():
            assert len(values) == 5 and all(0 < v < 255 for v in values)


def test_fidelity_check_flags_a_corruption_off_by_more_than_ten_percent():
    images = sample_photos(32)
    ref = REFERENCE["sets"]["photos32"]
    (exact,) = compare(images, ref, ["contrast"], draws=1)
    assert exact.within and exact.trend_ok
    for scale in (0.88, 1.12):  # a corruption 12% too strong or too weak must fail
        stronger = dict(ref, mean_change={"contrast": [v * scale for v in exact.official]})
        (row,) = compare(images, stronger, ["contrast"], draws=1)
        assert not row.within
    assert same_trend([1, 2, 3], [1, 2, 3]) and not same_trend([3, 2, 1], [1, 2, 3])
    assert same_trend([1, 1.01, 3], [1, 1.0, 3])  # flat official steps are not checked
    assert trend_marks([1, 2, 2.01, 1]) == "+=-"


@pytest.fixture(scope="module")
def photos32() -> torch.Tensor:
    return sample_photos(32)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_cifar_parameters_match_the_official_generator(name, photos32):
    """CIFAR-10-C parameters on 12 photos reduced to 32 px."""
    ref = REFERENCE["sets"]["photos32"]
    (row,) = compare(photos32, ref, [name], draws=DRAWS_32.get(name, 2))
    _check(row)


# On 224 px images the random choices average over more pixels: fewer draws suffice.
DRAWS_224 = {"frost": 8, "spatter": 4}


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_imagenet_parameters_match_the_official_generator(name):
    """ImageNet-C parameters on the 12 photo crops at 224 px."""
    ref = REFERENCE["sets"]["photos224"]
    (row,) = compare(sample_photos(224), ref, [name], draws=DRAWS_224.get(name, 1))
    _check(row)


@pytest.mark.realdata
def test_cifar_parameters_match_the_official_generator_on_cifar10(cifar10_root):
    """CIFAR-10-C parameters on every 20th CIFAR-10 test image (one draw each)."""
    from djepa_bench.eval_protocols.corruptions.fidelity import cifar10_test

    rows = compare(cifar10_test(cifar10_root), REFERENCE["sets"]["cifar10_test"], draws=1)
    for row in rows:
        _check(row)
