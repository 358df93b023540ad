"""Low-shot: seeded nested draws, C by cross-validation, one record per trial and classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from djepa_bench.config import LowShotConfig
from djepa_bench.encoders import load_subject
from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.base import build_context
from djepa_bench.eval_protocols.lowshot import draw_percent, draw_shots, fit_logreg
from djepa_bench.eval_protocols.lowshot import run as run_lowshot

LABELS = torch.arange(5).repeat_interleave(30)  # 5 classes x 30 images


def test_shots_are_per_class_seeded_and_nested():
    two = draw_shots(LABELS, 2, seed=7)
    five = draw_shots(LABELS, 5, seed=7)
    assert np.bincount(LABELS[two].numpy()).tolist() == [2] * 5
    assert np.bincount(LABELS[five].numpy()).tolist() == [5] * 5
    assert set(two) <= set(five)  # the 2-shot set of a trial is inside its 5-shot set
    assert np.array_equal(five, draw_shots(LABELS, 5, seed=7))
    assert not np.array_equal(five, draw_shots(LABELS, 5, seed=8))
    assert len(draw_shots(LABELS, 100, seed=0)) == 150  # small classes give all they have


def test_percent_draws_round_per_class_with_at_least_one():
    ten = draw_percent(LABELS, 10, seed=0)
    assert np.bincount(LABELS[ten].numpy()).tolist() == [3] * 5
    assert np.bincount(LABELS[draw_percent(LABELS, 0.1, seed=0)].numpy()).tolist() == [1] * 5
    with pytest.raises(UserError, match="percent"):
        draw_percent(LABELS, 150, seed=0)


def test_c_by_cross_validation_only_with_enough_shots():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 6)
    x = rng.standard_normal((18, 4)) + y[:, None]
    cfg = LowShotConfig(cs=[0.01, 1.0], cv_min_shots=5, default_c=0.5)
    _, c, cv = fit_logreg(x, y, cfg, seed=0)
    assert cv and c in (0.01, 1.0)
    few = np.concatenate([np.flatnonzero(y == k)[:2] for k in range(3)])
    model, c, cv = fit_logreg(x[few], y[few], cfg, seed=0)
    assert not cv and c == 0.5 and model[-1].C == 0.5


def test_protocol_records_every_trial_for_both_classifiers(tmp_path):
    subject = load_subject(
        model="pixels",
        overrides=[
            "data.dataset=digits", f"eval.cache_dir={tmp_path}", "eval.lowshot.shots=[1,5]",
            "eval.lowshot.percents=[10]", "eval.lowshot.trials=2", "eval.lowshot.cs=[0.1,1.0]",
        ],
    )  # fmt: skip
    records = run_lowshot(build_context(subject))
    assert len(records) == 3 * 2 * 2  # sizes x trials x classifiers
    assert {r["protocol"] for r in records} == {"lowshot"} and {r["metric"] for r in records} == {
        "top1"
    }
    by = {(r["params"].get("shots"), r["params"].get("percent"), r["params"]["trial"],
           r["params"]["classifier"]): r for r in records}  # fmt: skip
    assert (1, None, 0, "logreg") in by and (None, 10.0, 1, "knn") in by
    assert by[(1, None, 0, "knn")]["params"]["k"] == 10  # capped at the 10 labelled images
    assert by[(5, None, 0, "logreg")]["params"]["cv"] is True
    assert by[(1, None, 0, "logreg")]["params"]["num_labelled"] == 10
    # Different trials draw different images, so accuracies differ; more shots help.
    one = [by[(1, None, t, "logreg")]["value"] for t in (0, 1)]
    five = [by[(5, None, t, "logreg")]["value"] for t in (0, 1)]
    assert one[0] != one[1] and np.mean(five) > np.mean(one) > 10.0
    assert all(r["dataset"] == "digits" and r["run"] == "pixels" for r in records)


def test_empty_sizes_are_a_user_error(tmp_path):
    # Refused when the config is built, before any feature is extracted.
    with pytest.raises(UserError, match="needs shots or percents"):
        load_subject(
            model="pixels",
            overrides=[
                "data.dataset=digits",
                f"eval.cache_dir={tmp_path}",
                "eval.lowshot.shots=[]",
            ],
        )


def test_logreg_standardises_with_the_labelled_subset_of_each_trial(tmp_path, monkeypatch):
    """Every logistic regression (final and CV folds) sees features centred and scaled on the
    images it trains on, never with the statistics of the whole (unlabelled) train set."""
    from sklearn.linear_model import LogisticRegression

    seen = []
    fit = LogisticRegression.fit

    def spy(self, x, y, *args, **kwargs):
        seen.append(np.asarray(x))
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    subject = load_subject(
        model="pixels",
        overrides=[
            "data.dataset=digits", f"eval.cache_dir={tmp_path}", "eval.lowshot.shots=[1,5]",
            "eval.lowshot.trials=2", "eval.lowshot.cs=[0.1,1.0]", "eval.lowshot.knn=false",
        ],
    )  # fmt: skip
    records = run_lowshot(build_context(subject))
    assert len(records) == 4 and len(seen) > 4  # CV fits as well as the final ones
    for x in seen:
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        std = x.std(0)
        assert np.all((np.abs(std - 1.0) < 1e-4) | (std < 1e-6))  # constant dims: centred only
    assert all(r["params"]["standardised_on"] == "labelled" for r in records)
