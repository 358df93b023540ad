"""Linear probe: independent batched heads, validation-only selection, accuracy vs sklearn,
streaming from a memmap, data-parallel under torch.distributed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from djepa_bench.config import LinearConfig
from djepa_bench.data import iterate_batches, load_dataset
from djepa_bench.errors import UserError
from djepa_bench.linear_probe import (
    LinearProbe,
    fit_linear_probe,
    grid_edges,
    standardiser,
    stratified_split,
    train_linear_heads,
)
from djepa_bench.row_stream import moments, shuffled_batches

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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
    from djepa_bench.config import build_config

    with pytest.raises(UserError, match="'eval.linear.optimizer' must be one of"):
        build_config(overrides=["eval.linear.optimizer=lamb"])
    with pytest.raises(UserError, match="eval.linear.lrs"):
        build_config(overrides=["eval.linear.lrs=[]"])
    with pytest.raises(UserError, match="empty"):
        fit_linear_probe(x, y, LinearConfig(lrs=[], epochs=1), num_classes=4)


@pytest.mark.realdata
def test_within_half_a_point_of_tuned_sklearn_on_cifar10_pooled_pixels(cifar10_root):
    """Real features: CIFAR-10 pixels (--model pixels) average-pooled to 8x8x3 (192-d), 10k
    train images; scikit-learn's C tuned on the same 10% validation split, then refit (the
    full-size comparison is benchmarks/linear_vs_sklearn.py)."""
    bench = _benchmark("linear_vs_sklearn")
    xtr, ytr, xte, yte = bench.pixel_features(str(cifar10_root), train_rows=10000, pool=4)
    probe = fit_linear_probe(xtr, ytr, LinearConfig(), num_classes=10)
    ours = probe.score(xte, yte)
    cs = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    reference, best_c, _ = bench.sklearn_tuned(xtr, ytr, xte, yte, cs)
    assert best_c not in (cs[0], cs[-1]), best_c  # the reference's own grid is wide enough
    assert ours == pytest.approx(reference, abs=0.5), (ours, reference, probe.hparams)


def _benchmark(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _memmap(tmp_path, x, dtype=np.float32):
    path = tmp_path / "feats.bin"
    x.numpy().astype(dtype).tofile(path)
    return np.memmap(path, dtype, "r", shape=tuple(x.shape))


def test_moments_stream_in_float64_over_the_given_rows(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(3000, 5, generator=gen, dtype=torch.float64)  # mean >> std
    rows = np.arange(0, 3000, 3)
    mean, std = moments(_memmap(tmp_path, x), rows, chunk_rows=128)
    ref = x.numpy().astype(np.float32).astype(np.float64)[rows]
    np.testing.assert_allclose(mean.numpy(), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), ref.std(0), rtol=1e-3)


def test_shuffled_batches_visit_each_row_once_and_mix_a_class_sorted_file(tmp_path):
    labels = torch.arange(20).repeat_interleave(500)  # sorted by class, as a folder walk
    x = labels.float().unsqueeze(1).repeat(1, 3)
    rows = np.arange(0, 10000, 2)  # every other row, as a fit split
    batches = list(
        shuffled_batches(
            _memmap(tmp_path, x), rows, 256, np.random.default_rng(0), chunk_rows=16,
            buffer_rows=1024,
        )
    )  # fmt: skip
    assert len(batches) == len(rows) // 256
    seen = np.concatenate([i.numpy() for _, i in batches])
    assert len(set(seen.tolist())) == len(seen) and set(seen.tolist()) <= set(rows.tolist())
    for feats, idx in batches:  # the rows are the ones indexed, and classes are mixed
        torch.testing.assert_close(feats[:, 0], labels[idx].float())
        assert len(torch.unique(labels[idx])) >= 15
    again = shuffled_batches(
        x, rows, 256, np.random.default_rng(0), chunk_rows=16, buffer_rows=1024
    )
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))


def test_probe_from_a_memmap_equals_the_probe_from_a_tensor(tmp_path):
    x, y = _separable(n=3000, dim=12, classes=5)
    order = torch.argsort(y, stable=True)  # sorted by class
    x, y = x[order], y[order]
    cfg = LinearConfig(
        epochs=4, lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-2], chunk_rows=32, buffer_rows=500
    )
    in_memory = fit_linear_probe(x, y, cfg, num_classes=5)
    streamed = fit_linear_probe(_memmap(tmp_path, x), y.numpy(), cfg, num_classes=5)
    torch.testing.assert_close(streamed.mean, in_memory.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed.weight, in_memory.weight, atol=1e-4, rtol=1e-4)
    assert streamed.hparams == in_memory.hparams
    assert streamed.score(_memmap(tmp_path, x), y) == in_memory.score(x, y) >= 95.0


def test_sgd_weight_decay_is_the_l2_penalty_of_logistic_regression():
    """At convergence an SGD head with wd equals scikit-learn's optimum at C = 1 / (wd * N)."""
    from sklearn.linear_model import LogisticRegression

    x, y = _separable(n=400, dim=6, classes=3)
    x = (x - x.mean(0)) / x.std(0)
    wd = 0.05
    w, b = train_linear_heads(
        x, y, 3, torch.tensor([0.05]), torch.tensor([wd]), epochs=300, batch_size=40, seed=0
    )
    sk = LogisticRegression(C=1 / (wd * len(x)), tol=1e-10, max_iter=10000).fit(x.numpy(), y)
    logits = x @ w[0] + b[0]
    torch.testing.assert_close(
        logits - logits.mean(1, keepdim=True),
        torch.from_numpy(sk.decision_function(x.numpy())).float(), atol=2e-2, rtol=0,
    )  # fmt: skip


def test_a_choice_on_the_grid_edge_is_logged_and_recorded():
    assert grid_edges(0.1, 0.0, [0.01, 0.1], [0.0, 1e-3]) == "lr_max"
    assert grid_edges(0.01, 1e-3, [0.01, 0.1], [0.0, 1e-3]) == "lr_min,wd_max"
    assert grid_edges(0.05, 0.0, [0.01, 0.05, 0.1], [0.0, 1e-3]) is None  # wd 0 is no edge
    assert grid_edges(0.05, 1e-4, [0.01, 0.05, 0.1], [1e-4, 1e-3]) == "wd_min"
    x, y = _separable(n=300)
    lines = []
    cfg = LinearConfig(epochs=2, lrs=[1e-2], weight_decays=[3.0, 10.0])  # the edge either way
    probe = fit_linear_probe(x, y, cfg, num_classes=4, log=lines.append)
    assert probe.hparams["grid_edge"] in ("wd_min", "wd_max")
    assert any("grid's edge" in line and probe.hparams["grid_edge"] in line for line in lines)
    inside = LinearConfig(epochs=2, lrs=[1e-2], weight_decays=[0.0])
    assert fit_linear_probe(x, y, inside, num_classes=4).hparams["grid_edge"] is None


def test_features_that_are_not_a_2d_array_are_a_user_error():
    with pytest.raises(UserError, match="2-D"):
        fit_linear_probe([1.0, 2.0], torch.tensor([0, 1]), LinearConfig(epochs=1))
    with pytest.raises(UserError, match="labels"):
        fit_linear_probe(torch.zeros(10, 2), torch.zeros(9), LinearConfig(epochs=1))


DDP_SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
from djepa_bench.config import LinearConfig
from djepa_bench.linear_probe import fit_linear_probe
dist.init_process_group("gloo")
path, rows, dim, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
feats = np.memmap(path, np.float32, "r", shape=(rows, dim))
labels = torch.from_numpy(np.load(path + ".labels.npy"))
cfg = LinearConfig(epochs=3, lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-2], chunk_rows=32,
                   buffer_rows=400, batch_size=64)
probe = fit_linear_probe(feats, labels, cfg, num_classes=4)
torch.save(probe.state_dict(), f"{out}.{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def test_two_gloo_processes_train_the_same_probe_as_one(tmp_path):
    """torchrun, 2 CPU ranks: each takes half of every mini-batch, gradients all-reduced."""
    x, y = _separable(n=1200, dim=8)
    feats = _memmap(tmp_path, x)
    np.save(str(feats.filename) + ".labels.npy", y.numpy())
    script = tmp_path / "probe_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(feats.filename), "1200", "8", str(tmp_path / "probe"),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [LinearProbe.from_state_dict(torch.load(tmp_path / f"probe.{r}.pt")) for r in (0, 1)]
    torch.testing.assert_close(ranks[0].weight, ranks[1].weight, atol=0, rtol=0)
    cfg = LinearConfig(
        epochs=3, lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-2], chunk_rows=32, buffer_rows=400,
        batch_size=64,
    )  # fmt: skip
    alone = fit_linear_probe(feats, y, cfg, num_classes=4)
    torch.testing.assert_close(ranks[0].weight, alone.weight, atol=1e-4, rtol=1e-4)
    assert ranks[0].hparams["grid"] == alone.hparams["grid"]


def test_scale_benchmark_streams_within_0_2_points_of_in_memory_at_a_tiny_size(tmp_path):
    """benchmarks/linear_scale.py at a tiny size: memmap-streamed vs in-memory probe, trained
    long enough (L2, 20 epochs) that the mini-batch order no longer decides the accuracy."""
    args = "--rows 20000 --dim 32 --classes 20 --test 10000 --subset 10000 --chunk-rows 16"
    args += " --buffer-rows 2048 --epochs 3 --subset-epochs 20 --lrs 0.1 --wds 1e-3"
    args += f" --spread 0.5 --dir {tmp_path}"
    result = _benchmark("linear_scale").main([*args.split(), "--in-process"])
    assert result["full"]["top1"] > 60 and result["full"]["peak_rss_gb"] < 6
    assert result["subset"]["memory"] > 60
    assert abs(result["subset"]["difference"]) <= 0.2
