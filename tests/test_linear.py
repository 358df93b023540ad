"""Linear probe: independent batched heads, validation-only selection, accuracy vs sklearn."""

from __future__ import annotations

import pytest
import torch

from djepa_bench.config import LinearConfig
from djepa_bench.data import iterate_batches, load_dataset
from djepa_bench.errors import UserError
from djepa_bench.linear_probe import (
    LinearProbe,
    fit_linear_probe,
    standardiser,
    stratified_split,
    train_linear_heads,
)


def _separable(n=600, dim=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = 6.0 * torch.randn(classes, dim, generator=gen)
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


def _pixels(name):
    split = load_dataset(name, "train"), load_dataset(name, "test")
    feats = [torch.cat([x.flatten(1) for x, _ in iterate_batches(s, 4096)]) for s in split]
    return feats[0], split[0].labels, feats[1], split[1].labels


def test_separable_features_reach_full_accuracy():
    x, y = _separable(n=1000)
    x, y, xt, yt = x[:600], y[:600], x[600:], y[600:]
    cfg = LinearConfig(epochs=20, lrs=[1e-3, 1e-2], weight_decays=[0.0, 1e-2, 1e-1, 0.3])
    probe = fit_linear_probe(x, y, cfg, num_classes=4)
    assert probe.score(xt, yt) >= 99.5
    assert probe.hparams["lr"] in cfg.lrs and probe.hparams["wd"] in cfg.weight_decays
    assert len(probe.hparams["grid"]) == 8


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_batched_heads_equal_heads_trained_alone(optimizer):
    x, y = _separable(n=300, dim=8, classes=3)
    x = (x - x.mean(0)) / x.std(0)
    lrs, wds = torch.tensor([1e-3, 3e-2, 1e-1]), torch.tensor([0.0, 0.1, 0.01])
    common = dict(epochs=3, batch_size=64, optimizer=optimizer, seed=5)
    w, b = train_linear_heads(x, y, 3, lrs, wds, **common)
    assert w.shape == (3, 8, 3) and b.shape == (3, 3)
    for h in range(3):
        w1, b1 = train_linear_heads(x, y, 3, lrs[h : h + 1], wds[h : h + 1], **common)
        torch.testing.assert_close(w[h], w1[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b[h], b1[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(w[0], w[1])


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = torch.arange(10).repeat_interleave(50)
    fit, val = stratified_split(labels, 0.1, seed=3)
    assert len(set(fit.tolist()) & set(val.tolist())) == 0
    assert len(fit) + len(val) == 500
    assert torch.bincount(labels[val], minlength=10).tolist() == [5] * 10
    again, _ = stratified_split(labels, 0.1, seed=3)
    other, _ = stratified_split(labels, 0.1, seed=4)
    assert torch.equal(fit, again) and not torch.equal(fit, other)


def test_selection_never_sees_test_data():
    x, y = _separable()
    cfg = LinearConfig(epochs=5, lrs=[1e-3, 1e-2], weight_decays=[0.0, 0.1])
    probe = fit_linear_probe(x, y, cfg, num_classes=4)
    # The probe is a pure function of the training data: nothing about test enters fit.
    again = fit_linear_probe(x.clone(), y.clone(), cfg, num_classes=4)
    torch.testing.assert_close(probe.weight, again.weight)
    assert 0 <= probe.hparams["val_top1"] <= 100


def test_probe_standardises_with_train_statistics_and_round_trips(tmp_path):
    x, y = _separable()
    probe = fit_linear_probe(x * 50 + 7, y, LinearConfig(epochs=5), num_classes=4)
    mean, std = standardiser(x * 50 + 7)
    torch.testing.assert_close(probe.mean, mean)
    torch.testing.assert_close(probe.std, std)
    torch.save(probe.state_dict(), tmp_path / "probe.pt")
    back = LinearProbe.from_state_dict(torch.load(tmp_path / "probe.pt", weights_only=True))
    torch.testing.assert_close(back.logits(x[:10]), probe.logits(x[:10]))
    assert back.hparams == probe.hparams


def test_within_one_point_of_sklearn_logistic_regression_on_digits_pixels():
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = _pixels("digits")
    probe = fit_linear_probe(xtr, ytr, LinearConfig(), num_classes=10)
    ours = probe.score(xte, yte)
    mean, std = standardiser(xtr)
    sk = LogisticRegression(max_iter=3000).fit(((xtr - mean) / std).numpy(), ytr.numpy())
    reference = 100.0 * sk.score(((xte - mean) / std).numpy(), yte.numpy())
    assert ours == pytest.approx(reference, abs=1.0), (ours, reference)


def test_bad_settings_are_user_errors():
    x, y = _separable(n=50)
    with pytest.raises(UserError, match="optimizer"):
        fit_linear_probe(x, y, LinearConfig(optimizer="lamb", epochs=1), num_classes=4)
    with pytest.raises(UserError, match="empty"):
        fit_linear_probe(x, y, LinearConfig(lrs=[], epochs=1), num_classes=4)


@pytest.mark.realdata
def test_within_one_point_of_sklearn_on_cifar10_pooled_pixels(cifar10_root):
    """Real features: CIFAR-10 pixels average-pooled to 8x8x3 (192-d), 10k train images."""
    from sklearn.linear_model import LogisticRegression

    feats = []
    for name in ("train", "test"):
        split = load_dataset("cifar10", name, cifar10_root)
        gen = torch.Generator().manual_seed(0)  # the archive is sorted by class
        split = split.subset(torch.randperm(len(split), generator=gen)[:10000])
        pooled = [
            torch.nn.functional.avg_pool2d(x, 4).flatten(1) for x, _ in iterate_batches(split, 2048)
        ]
        feats += [torch.cat(pooled), split.labels]
    xtr, ytr, xte, yte = feats
    ours = fit_linear_probe(xtr, ytr, LinearConfig(), num_classes=10).score(xte, yte)
    mean, std = standardiser(xtr)
    sk = LogisticRegression(max_iter=3000).fit(((xtr - mean) / std).numpy(), ytr.numpy())
    reference = 100.0 * sk.score(((xte - mean) / std).numpy(), yte.numpy())
    assert ours == pytest.approx(reference, abs=1.0), (ours, reference)
