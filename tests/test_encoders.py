"""Encoder loading: run checkpoints, official I-JEPA layout, timm, pixels and random ViTs."""

from __future__ import annotations

import pytest
import torch

from djepa_bench.config import build_config, to_dict
from djepa_bench.encoders import ijepa_official_vit, load_subject, make_encoder
from djepa_bench.errors import UserError

TINY = ["model.size=nano", "model.depth=2", "model.embed_dim=32", "model.num_heads=2"]


def write_tiny_run(run_dir, method="djepa", seed=3):
    """A run directory holding a tiny djepa-bench checkpoint (CONTRACT.md layout)."""
    from djepa_bench.models import build_encoder

    cfg = build_config(overrides=TINY + ["data.dataset=digits", f"train.seed={seed}"])
    torch.manual_seed(seed)
    target = build_encoder(cfg.model, 16, 1)
    context = build_encoder(cfg.model, 16, 1)
    ckpt = {
        "format": "djepa-bench", "format_version": 1, "method": method, "seed": seed,
        "epoch": 1, "step": 10, "config": to_dict(cfg),
        "data": {"dataset": "digits", "image_size": 16, "channels": 1, "num_classes": 10,
                 "mean": [0.5], "std": [0.5]},
        "context_encoder": context.state_dict(), "target_encoder": target.state_dict(),
        "predictor": {},
    }  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, run_dir / "checkpoint.pt")
    return run_dir, target, context


def test_run_directory_loads_target_and_context_encoders(tmp_path):
    run, target, context = write_tiny_run(tmp_path / "my-run")
    subject = load_subject(ckpt=run)
    assert subject.kind == "djepa" and subject.identity.run == "my-run"
    assert subject.identity.method == "djepa" and subject.identity.seed == 3
    assert len(subject.identity.checkpoint_sha256) == 64
    assert subject.run_dir == run and subject.config.data.dataset == "digits"
    x = torch.randn(2, 1, 16, 16)
    enc_t = make_encoder(subject, 16, 1, "target", "mean")
    enc_c = make_encoder(subject, 16, 1, "context", "mean")
    torch.testing.assert_close(enc_t.encode(x), target(x).mean(1))
    torch.testing.assert_close(enc_c.encode(x), context(x).mean(1))
    assert enc_t.cache_id() != enc_c.cache_id()
    last4 = make_encoder(subject, 16, 1, "target", "last4")
    # depth 2 has fewer than 4 blocks: intermediate_tokens returns what there is
    assert last4.encode(x).shape[1] % 32 == 0 and last4.encode(x).shape[1] >= 64


def test_overrides_apply_on_top_of_the_checkpoint_config(tmp_path):
    run, _, _ = write_tiny_run(tmp_path / "r")
    subject = load_subject(ckpt=run, overrides=["eval.knn.k=[5]", "data.dataset=synthetic"])
    assert subject.config.eval.knn.k == [5] and subject.config.data.dataset == "synthetic"
    assert subject.config.model.embed_dim == 32  # the run's own model section survives


def test_channel_mismatch_and_bad_choices_are_user_errors(tmp_path):
    run, _, _ = write_tiny_run(tmp_path / "r")
    subject = load_subject(ckpt=run)
    with pytest.raises(UserError, match="channel"):
        make_encoder(subject, 16, 3)
    # Bad choices fail when the subject's config is built, before any encoder or data.
    with pytest.raises(UserError, match="'eval.pool' must be one of"):
        load_subject(ckpt=run, overrides=["eval.pool=max"])
    with pytest.raises(UserError, match="'eval.encoder' must be one of"):
        load_subject(ckpt=run, overrides=["eval.encoder=online"])


def test_not_a_checkpoint_and_missing_paths_are_user_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="weights-only"):
        load_subject(ckpt=junk)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="neither"):
        load_subject(ckpt=tmp_path / "other.pt")
    with pytest.raises(UserError, match="not found"):
        load_subject(ckpt=tmp_path / "nope")
    with pytest.raises(UserError, match="exactly one"):
        load_subject()
    with pytest.raises(UserError, match="unknown --model"):
        load_subject(model="resnet")
    with pytest.raises(UserError, match="size"):
        load_subject(model="random:huge")


def _official_ijepa_checkpoint(path, dim=192, depth=2, heads=3, patch=4, img=16, chans=3):
    """A file in the official I-JEPA layout: state dicts keyed 'module.*' (DDP), no class token."""
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    def vit(seed):
        torch.manual_seed(seed)
        model = VisionTransformer(
            img_size=img, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
            num_heads=heads, class_token=False, global_pool="avg", fc_norm=False, num_classes=0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        )  # fmt: skip
        with torch.no_grad():
            model.pos_embed.normal_()  # the official pos_embed is a fixed table in the dict
        return model

    context, target = vit(0), vit(1)
    prefixed = lambda m: {f"module.{k}": v for k, v in m.state_dict().items()}  # noqa: E731
    torch.save(
        {
            "encoder": prefixed(context), "target_encoder": prefixed(target),
            "predictor": {"module.predictor_embed.weight": torch.zeros(4, dim)},
            "opt": {}, "epoch": 300, "loss": 0.1, "batch_size": 2048, "world_size": 16,
            "lr": 0.001,
        },
        path,
    )  # fmt: skip
    return context, target


def test_official_ijepa_layout_maps_onto_a_timm_vit(tmp_path):
    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    context, target = _official_ijepa_checkpoint(path)
    keys = torch.load(path, weights_only=True)["target_encoder"]
    assert {"module.pos_embed", "module.patch_embed.proj.weight", "module.norm.weight"} <= set(
        keys
    ) and "module.blocks.1.attn.qkv.weight" in keys
    subject = load_subject(ckpt=path)
    assert subject.kind == "ijepa-official" and subject.identity.method == "ijepa-official"
    assert subject.identity.run == "IN1K-vit"
    x = torch.randn(2, 3, 16, 16)
    enc = make_encoder(subject, 16, 3, "target", "mean")
    assert enc.image_size == 16 and enc.in_chans == 3
    torch.testing.assert_close(enc.encode(x), target.forward_features(x).mean(1))
    ctx = make_encoder(subject, 16, 3, "context", "mean")
    torch.testing.assert_close(ctx.encode(x), context.forward_features(x).mean(1))
    # last4 of a 2-block encoder: both blocks' token means, concatenated
    assert make_encoder(subject, 16, 3, "target", "last4").encode(x).shape == (2, 2 * 192)


def test_official_vit_reads_width_depth_and_patch_from_weights():
    from timm.models.vision_transformer import VisionTransformer

    src = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, global_pool="avg",
        fc_norm=False, class_token=False, num_classes=0,
    )  # fmt: skip
    model = ijepa_official_vit({f"module.{k}": v for k, v in src.state_dict().items()})
    assert model.patch_embed.img_size == (32, 32) and len(model.blocks) == 3
    assert model.embed_dim == 64
    with pytest.raises(UserError, match="lacks"):
        ijepa_official_vit({"module.blocks.0.norm1.weight": torch.ones(4)})


def test_pixels_encoder_is_the_normalised_image():
    subject = load_subject(model="pixels")
    enc = make_encoder(subject, 16, 3)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(enc.encode(x), x.flatten(1))
    assert subject.identity.run == "pixels" and subject.run_dir is None
    with pytest.raises(UserError, match="pool"):
        make_encoder(subject, 16, 3, pool="last4")


def test_random_vit_is_seeded_and_follows_patch_size():
    x = torch.randn(2, 3, 16, 16)
    over = ["model.patch_size=4", "model.depth=2"]

    def features(seed):
        subject = load_subject(model="random:nano", overrides=over + [f"train.seed={seed}"])
        return make_encoder(subject, 16, 3).encode(x), subject

    a, subject = features(0)
    b, _ = features(0)
    c, _ = features(1)
    assert a.shape == (2, 128) and torch.equal(a, b) and not torch.allclose(a, c)
    assert (
        "seed0" in subject.identity.checkpoint_sha256 and "p4" in subject.identity.checkpoint_sha256
    )
    assert make_encoder(subject, 16, 3).module.patch_size == 4
    with pytest.raises(UserError, match="multiple"):
        make_encoder(load_subject(model="random:nano", overrides=["model.patch_size=5"]), 16, 3)


def test_timm_model_by_name_without_download():
    spec = "timm:vit_tiny_patch16_224,patch_size=4,depth=1"
    subject = load_subject(model=spec)
    enc = make_encoder(subject, 16, 3)
    assert enc.encode(torch.randn(2, 3, 16, 16)).shape == (2, 192)
    assert enc.module.patch_embed.patch_size == (4, 4) and len(enc.module.blocks) == 1
    again = make_encoder(load_subject(model=spec), 16, 3)
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(enc.encode(x), again.encode(x))  # seeded initialisation
    with pytest.raises(UserError, match="timm has no model"):
        make_encoder(load_subject(model="timm:no_such_model_xyz"), 16, 3)
    with pytest.raises(UserError, match="key=value"):
        load_subject(model="timm:vit_tiny_patch16_224,depth")


def test_official_ijepa_sees_imagenet_normalised_images_and_averages_tokens(tmp_path):
    from djepa_bench.encoders import IMAGENET_NORM

    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    _, target = _official_ijepa_checkpoint(path)
    subject = load_subject(ckpt=path)
    data_norm = ((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))  # e.g. synthetic's statistics
    enc = make_encoder(subject, 16, 3, "target", "mean", data_norm=data_norm)
    assert enc.input_norm == IMAGENET_NORM and "norm=" in enc.cache_id()
    x = torch.randn(2, 3, 16, 16)  # dataset-normalised
    mean = torch.tensor(IMAGENET_NORM[0]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORM[1]).view(1, 3, 1, 1)
    expected = target.forward_features(((x * 0.2 + 0.5) - mean) / std).mean(1)
    torch.testing.assert_close(enc.encode(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="class token"):
        make_encoder(subject, 16, 3, pool="cls")


def test_the_pools_the_encoders_build_are_the_pools_the_config_allows():
    import typing

    from djepa_bench.config import EvalConfig
    from djepa_bench.encoders import POOLS

    hints = typing.get_type_hints(EvalConfig, include_extras=True)
    assert set(typing.get_args(hints["pool"])) == set(POOLS)
