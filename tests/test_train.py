"""The trainer: objectives, schedules, optimiser groups, run directory, checkpoints, resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from djepa_bench.checkpoint import load_checkpoint, load_encoder, load_predictor
from djepa_bench.config import DiffusionConfig, build_config
from djepa_bench.errors import UserError
from djepa_bench.io import safe_torch_load
from djepa_bench.masks import MultiBlockMasker
from djepa_bench.models import build_encoder, build_predictor, build_schedule
from djepa_bench.train.api import TrainingDiverged, TrainingStopped, quick_config, train_run
from djepa_bench.train.objectives import (
    JepaModel,
    build_projector,
    compute_losses,
    pool_context,
    variance_covariance,
)
from djepa_bench.train.optim import param_groups
from djepa_bench.train.schedules import Schedules
from djepa_bench.train.step import TrainStep


def test_djepa_with_lambda_zero_gives_the_ijepa_loss_on_the_same_batch_and_masks():
    cfg = quick_config(method="djepa", diffusion__lambda_diff=0.0)
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model, 16, 3)
    target = build_encoder(cfg.model, 16, 3)
    target.load_state_dict(encoder.state_dict())
    ijepa = JepaModel(encoder, build_predictor(cfg.model, encoder, "ijepa"))
    djepa_predictor = build_predictor(cfg.model, encoder, "djepa")
    missing = djepa_predictor.load_state_dict(ijepa.predictor.state_dict(), strict=False)
    assert missing.missing_keys and all(
        k.startswith(("noisy_proj", "time_embed", "modulation")) for k in missing.missing_keys
    )
    djepa = JepaModel(encoder, djepa_predictor)
    images = torch.randn(8, 3, 16, 16)
    masks = MultiBlockMasker(4, cfg.mask)(8, torch.Generator().manual_seed(1))
    schedule = build_schedule(cfg.diffusion)
    cfg_i = quick_config(method="ijepa")
    loss_i = compute_losses(ijepa, target, None, images, masks, cfg_i, torch.Generator())
    loss_d = compute_losses(djepa, target, schedule, images, masks, cfg, torch.Generator())
    torch.testing.assert_close(loss_d.loss, loss_i.loss, atol=1e-6, rtol=1e-6)
    assert loss_d.loss_diff > 0  # the diffusion branch ran, it only carries zero weight
    cfg_on = quick_config(method="djepa", diffusion__lambda_diff=1.0)
    loss_on = compute_losses(djepa, target, schedule, images, masks, cfg_on, torch.Generator())
    assert loss_on.loss > loss_i.loss + 1e-3


def test_variance_covariance_terms_penalise_collapse_and_correlation():
    gen = torch.Generator().manual_seed(0)
    spread = 1.5 * torch.randn(4096, 8, generator=gen)
    variance, covariance = variance_covariance(spread)
    assert variance == 0 and covariance < 0.05  # std 1.5 > 1, independent dimensions
    variance, _ = variance_covariance(torch.ones(64, 8))
    assert variance == pytest.approx(0.99, abs=1e-3)  # collapsed: std ~0 everywhere
    column = torch.randn(4096, 1, generator=gen)
    _, covariance = variance_covariance(column.repeat(1, 8))
    assert covariance == pytest.approx(7.0, rel=0.1)  # 8*7 off-diagonal entries of ~1, / 8


def test_pooled_context_ignores_padding():
    z = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert pool_context(z, torch.tensor([[True, True, False]])).item() == 2.0
    assert pool_context(z, None).item() == pytest.approx(104.0 / 3)


@pytest.mark.parametrize("method", ["ijepa", "djepa"])
def test_regularizer_adds_its_weighted_terms_and_trains_the_context_encoder(method):
    torch.manual_seed(0)
    cfg_off = quick_config(method=method)
    cfg_on = quick_config(method=method, regularizer__variance=2.0, regularizer__covariance=0.5)
    encoder = build_encoder(cfg_on.model, 16, 3)
    target = build_encoder(cfg_on.model, 16, 3)
    model = JepaModel(encoder, build_predictor(cfg_on.model, encoder, method))
    schedule = build_schedule(cfg_on.diffusion) if method == "djepa" else None
    images = torch.randn(8, 3, 16, 16)
    masks = MultiBlockMasker(4, cfg_on.mask)(8, torch.Generator().manual_seed(1))
    off = compute_losses(model, target, schedule, images, masks, cfg_off, torch.Generator())
    on = compute_losses(model, target, schedule, images, masks, cfg_on, torch.Generator())
    assert off.loss_reg == 0 and on.loss_reg > 0
    torch.testing.assert_close(on.loss_jepa, off.loss_jepa)
    context = pool_context(
        encoder(images, masks.context_idx, masks.context_valid), masks.context_valid
    )
    variance, covariance = variance_covariance(context)
    torch.testing.assert_close(on.loss_reg, 2.0 * variance + 0.5 * covariance)
    torch.testing.assert_close(on.loss, off.loss + on.loss_reg)
    model.zero_grad()
    (on.loss - off.loss).backward()  # only the regulariser's gradient is left
    assert encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_projector_carries_the_terms_and_is_trained(tmp_path):
    torch.manual_seed(0)
    cfg = quick_config(
        train__monitor=False,
        regularizer__variance=1.0,
        regularizer__covariance=0.5,
        regularizer__projector_dim=24,
    )
    encoder = build_encoder(cfg.model, 16, 3)
    target = build_encoder(cfg.model, 16, 3)
    projector = build_projector(encoder.embed_dim, 24)
    model = JepaModel(encoder, build_predictor(cfg.model, encoder, "djepa"), projector)
    images = torch.randn(8, 3, 16, 16)
    masks = MultiBlockMasker(4, cfg.mask)(8, torch.Generator().manual_seed(1))
    parts = compute_losses(
        model, target, build_schedule(cfg.diffusion), images, masks, cfg, torch.Generator()
    )
    pooled = pool_context(
        encoder(images, masks.context_idx, masks.context_valid), masks.context_valid
    )
    projected = projector(pooled)
    assert projected.shape == (8, 24)
    variance, covariance = variance_covariance(projected)
    torch.testing.assert_close(parts.loss_reg, 1.0 * variance + 0.5 * covariance)
    assert not torch.allclose(variance, variance_covariance(pooled)[0])
    parts.loss.backward()
    assert projector[0].weight.grad.abs().sum() > 0
    assert encoder.patch_embed.proj.weight.grad.abs().sum() > 0

    run = train_run(cfg, tmp_path / "run")
    ckpt = safe_torch_load(run / "checkpoint.pt")
    assert ckpt["projector"]["0.weight"].shape == (24, encoder.embed_dim)
    off = quick_config(
        train__monitor=False, regularizer__projector_dim=24
    )  # weights 0: no projector is built
    assert "projector" not in safe_torch_load(train_run(off, tmp_path / "off") / "checkpoint.pt")


def test_negative_regularizer_weight_is_a_one_line_error(tmp_path):
    # Refused when the config is built, before a run directory exists.
    with pytest.raises(UserError, match="'regularizer.variance' must be >= 0"):
        quick_config(regularizer__variance=-1.0)
    with pytest.raises(UserError, match="'regularizer.projector_dim' must be >= 0"):
        quick_config(regularizer__projector_dim=-8)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_schedules_warmup_cosine_and_ramps():
    optim = quick_config().optim
    optim.lr, optim.min_lr, optim.warmup_epochs = 1e-3, 1e-6, 1.0
    sched = Schedules(optim, total_steps=100, steps_per_epoch=10)
    assert sched(0).lr == pytest.approx(1e-4) and sched(9).lr == pytest.approx(1e-3)
    assert sched(99).lr < 2e-5 and sched(50).lr < sched(20).lr
    assert sched(0).wd == pytest.approx(0.04) and sched(100).wd == pytest.approx(0.4)
    assert sched(0).ema == pytest.approx(0.996) and sched(100).ema == pytest.approx(1.0)


def test_no_weight_decay_on_biases_and_1d_parameters():
    cfg = quick_config()
    encoder = build_encoder(cfg.model, 16, 3)
    model = JepaModel(encoder, build_predictor(cfg.model, encoder, "djepa"))
    decay, no_decay = param_groups(model)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == total


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "djepa"
    train_run(quick_config(method="djepa", train__epochs=2), run)
    return run


def test_run_directory_and_checkpoint_format(finished_run):
    run = finished_run
    for name in ("config.yaml", "meta.json", "log.jsonl", "checkpoint.pt", "checkpoint-ep002.pt"):
        assert (run / name).is_file(), name
    ckpt = safe_torch_load(run / "checkpoint.pt")  # weights_only=True
    assert ckpt["format"] == "djepa-bench" and ckpt["format_version"] == 1
    assert ckpt["method"] == "djepa" and ckpt["step"] == 30 and ckpt["epoch"] == 2
    assert ckpt["data"]["dataset"] == "synthetic" and ckpt["data"]["num_classes"] == 10
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["environment"]["torch"]
    rows = read_log(run)
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in ("loss", "loss_jepa", "loss_diff", "loss_reg", "lr", "wd", "ema", "grad_norm"):
        assert key in steps[0]
    assert "images_per_s" in steps[0] and steps[-1]["loss_reg"] == 0  # off by default
    assert steps[-1]["step"] == 30 and steps[-1]["loss_diff"] > 0
    for key in ("knn_top1", "rankme", "feature_std_mean", "feature_std_min"):
        assert key in epochs[-1]
    assert epochs[-1]["knn_top1"] > 20  # synthetic classes are learnable; chance is 10%


def test_checkpoint_loaders_rebuild_models(finished_run):
    ckpt = load_checkpoint(finished_run)
    encoder = load_encoder(ckpt, "target")
    assert not encoder.training
    x = torch.randn(2, 3, 16, 16)
    assert encoder(x).shape == (2, 16, 32)
    torch.testing.assert_close(
        encoder.state_dict()["norm.weight"], ckpt["target_encoder"]["norm.weight"]
    )
    predictor, schedule = load_predictor(ckpt)
    assert predictor.diffusion and schedule.timesteps == 100


def test_existing_run_needs_resume_and_resume_of_finished_run_is_a_no_op(finished_run):
    with pytest.raises(UserError, match="--resume"):
        train_run(quick_config(method="djepa", train__epochs=2), finished_run)
    before = (finished_run / "checkpoint.pt").stat().st_mtime_ns
    train_run(quick_config(method="djepa", train__epochs=2), finished_run, resume=True)
    assert (finished_run / "checkpoint.pt").stat().st_mtime_ns == before
    with pytest.raises(UserError, match="optim.lr differs"):
        train_run(
            quick_config(method="djepa", train__epochs=2, optim__lr=0.5), finished_run, resume=True
        )


def weights(run):
    ckpt = safe_torch_load(run / "checkpoint.pt")
    return {
        f"{part}.{k}": v
        for part in ("context_encoder", "target_encoder", "predictor", "projector")
        for k, v in ckpt.get(part, {}).items()
    }


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "regularizer__variance": 1.0,
            "regularizer__covariance": 0.1,
            "regularizer__projector_dim": 16,
        },
    ],
    ids=["plain", "projector"],
)
def test_sigterm_writes_checkpoint_and_resume_matches_uninterrupted_run(
    tmp_path, monkeypatch, extra
):
    cfg = quick_config(method="djepa", train__epochs=2, train__monitor=False, **extra)
    full = train_run(cfg, tmp_path / "full")
    original_step = TrainStep.__call__

    def step_and_signal(self, images, step, **kwargs):
        out = original_step(self, images, step, **kwargs)
        if step == 6:  # mid-epoch, between checkpoints
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(TrainStep, "__call__", step_and_signal)
    with pytest.raises(TrainingStopped) as stopped:
        train_run(cfg, tmp_path / "cut")
    assert stopped.value.exit_code == 143
    assert safe_torch_load(tmp_path / "cut" / "checkpoint.pt")["step"] == 7
    monkeypatch.setattr(TrainStep, "__call__", original_step)
    train_run(cfg, tmp_path / "cut", resume=True)
    a, b = weights(full), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_log(tmp_path / "cut") if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no duplicated rows after resume


def test_nan_loss_stops_with_one_line_error_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = quick_config(method="ijepa", train__epochs=2, train__monitor=False)
    import djepa_bench.train.step as step_module

    original = step_module.compute_losses

    def poisoned(*args, **kwargs):
        parts = original(*args, **kwargs)
        if poisoned.calls == 20:
            parts.loss = parts.loss * float("nan")
        poisoned.calls += 1
        return parts

    poisoned.calls = 0
    monkeypatch.setattr(step_module, "compute_losses", poisoned)
    with pytest.raises(TrainingDiverged) as err:
        train_run(cfg, tmp_path / "nan")
    message = str(err.value)
    assert "\n" not in message and "nan" in message and "step 21" in message
    ckpt = safe_torch_load(tmp_path / "nan" / "checkpoint.pt")
    assert ckpt["step"] == 15  # the epoch-1 checkpoint, untouched
    assert all(torch.isfinite(v).all() for v in ckpt["context_encoder"].values())


def test_cli_train_tiny_run_and_errors(run_cli, tmp_path):
    out = tmp_path / "cli"
    args = [
        "train", "--preset", "demo", "--method", "ijepa", "--out", out, "--epochs", "1",
        "--set", "data.dataset=synthetic", "--set", "model.embed_dim=32",
        "--set", "model.depth=1", "--set", "model.patch_size=4", "--set", "model.predictor_dim=32",
        "--set", "model.predictor_depth=1", "--set", "train.monitor=false", "--device", "cpu",
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.code == 0, result.err
    assert "run directory" in result.out
    assert safe_torch_load(out / "checkpoint.pt")["method"] == "ijepa"
    again = run_cli(*args)
    assert again.code == 2 and "--resume" in again.err and "Traceback" not in again.err
    resumed = run_cli("train", "--out", out, "--resume", "--device", "cpu")
    assert resumed.code == 0 and "run directory" in resumed.out  # finished: nothing to do
    longer = run_cli("train", "--out", out, "--resume", "--epochs", "3")
    assert longer.code == 2 and "train.epochs differs" in longer.err
    bad = run_cli("train", "--preset", "demo", "--set", "optim.lrr=1", "--out", tmp_path / "x")
    assert bad.code == 2 and "optim.lr" in bad.err
    bad_method = run_cli("train", "--preset", "demo", "--method", "mae", "--out", tmp_path / "y")
    assert bad_method.code == 2 and "ijepa or djepa" in bad_method.err
    empty = tmp_path / "empty"
    nothing = run_cli("train", "--out", empty, "--resume")
    assert nothing.code == 2 and "nothing to resume" in nothing.err and not empty.exists()


def test_every_preset_resolves():
    from djepa_bench.presets import preset_description, preset_names

    names = preset_names()
    for name in ("demo", "cifar10-cpu", "cifar10-vit-tiny", "stl10-vit-small", "imagenet-vit-base"):
        assert name in names
        assert preset_description(name)
        cfg = build_config(name)
        assert cfg.diffusion == DiffusionConfig() or cfg.diffusion.timesteps > 1
