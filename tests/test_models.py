"""Encoder and predictor: shapes, subset encoding with padding, query-group isolation."""

from __future__ import annotations

import pytest
import torch

from djepa_bench.config import ModelConfig, build_config
from djepa_bench.errors import UserError
from djepa_bench.models import ENCODER_SIZES, build_encoder, build_predictor

SMALL = ModelConfig(
    size="nano", embed_dim=32, depth=2, num_heads=2, patch_size=4,
    predictor_dim=32, predictor_depth=2, predictor_heads=2,
)  # fmt: skip


def make(method="djepa", seed=0):
    torch.manual_seed(seed)
    encoder = build_encoder(SMALL, 16, 3)
    predictor = build_predictor(SMALL, encoder, method)
    return encoder.eval(), predictor.eval()


def test_encoder_sizes_and_attributes():
    assert ENCODER_SIZES["tiny"] == (192, 12, 3)
    encoder = build_encoder(ModelConfig(size="nano", patch_size=4), 32, 3)
    assert (encoder.embed_dim, encoder.num_patches, encoder.patch_size) == (128, 64, 4)
    assert encoder.img_size == 32 and len(encoder.blocks) == 6
    assert not any("cls" in name for name, _ in encoder.named_parameters())
    out = encoder(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 64, 128)


def test_encoder_subset_with_padding_matches_unpadded_encoding():
    encoder, _ = make()
    x = torch.randn(2, 3, 16, 16)
    idx_a = torch.tensor([[0, 3, 5, 9, 12]])
    idx_b = torch.tensor([[1, 2, 7]])
    alone_a = encoder(x[:1], idx_a)
    alone_b = encoder(x[1:], idx_b)
    padded_idx = torch.tensor([[0, 3, 5, 9, 12], [1, 2, 7, 0, 0]])
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    both = encoder(x, padded_idx, valid)
    torch.testing.assert_close(both[0], alone_a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1, :3], alone_b[0], atol=1e-5, rtol=1e-5)
    # Without the padding mask, the padded tokens would change the real ones.
    unmasked = encoder(x, padded_idx)
    assert not torch.allclose(unmasked[1, :3], alone_b[0], atol=1e-4)


def test_intermediate_tokens_last_equals_forward():
    encoder, _ = make()
    x = torch.randn(2, 3, 16, 16)
    layers = encoder.intermediate_tokens(x, 2)
    assert len(layers) == 2 and layers[0].shape == (2, 16, 32)
    torch.testing.assert_close(layers[-1], encoder(x))


def test_predictor_shapes_and_ijepa_has_no_diffusion_parts():
    encoder, predictor = make("djepa")
    _, plain = make("ijepa")
    z = torch.randn(2, 6, 32)
    ctx = torch.arange(6).repeat(2, 1)
    targets = torch.tensor([[[8, 9], [12, 13]], [[10, 11], [14, 15]]])
    noisy = torch.randn(2, 2, 2, 32)
    out = predictor(z, ctx, None, targets, targets, noisy, torch.tensor([[5, 50], [7, 70]]))
    assert out.masked.shape == (2, 2, 2, 32) and out.denoised.shape == (2, 2, 2, 32)
    assert not any(n.startswith(("time_embed", "modulation", "noisy_proj")) for n, _ in
                   plain.named_parameters())  # fmt: skip
    with pytest.raises(ValueError):
        plain(z, ctx, None, targets, targets, noisy, torch.tensor([[5, 50], [7, 70]]))


def test_shared_weights_identical_for_both_methods_from_one_seed():
    _, djepa = make("djepa", seed=3)
    _, ijepa = make("ijepa", seed=3)
    dj = djepa.state_dict()
    for name, value in ijepa.state_dict().items():
        assert torch.equal(value, dj[name]), name


def test_query_groups_are_isolated_and_mask_queries_ignore_noisy_groups():
    _, predictor = make("djepa")
    for layer in predictor.modulation:  # make the conditioning non-trivial
        torch.nn.init.normal_(layer[1].weight, std=0.2)
    z = torch.randn(1, 6, 32)
    ctx = torch.arange(6)[None]
    targets = torch.tensor([[[8, 9], [12, 13]]])
    level = torch.tensor([[100, 400]])
    noisy = torch.randn(1, 2, 2, 32)
    base = predictor(z, ctx, None, targets, targets, noisy, level)
    only_masked = predictor(z, ctx, None, targets)
    torch.testing.assert_close(base.masked, only_masked.masked, atol=1e-5, rtol=1e-5)
    changed = noisy.clone()
    changed[:, 1] += 1.0  # perturb the second noisy group only
    other = predictor(z, ctx, None, targets, targets, changed, level)
    torch.testing.assert_close(other.denoised[:, 0], base.denoised[:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other.denoised[:, 1], base.denoised[:, 1])
    torch.testing.assert_close(other.masked, base.masked, atol=1e-5, rtol=1e-5)


def test_predictor_ignores_padded_context():
    _, predictor = make("ijepa")
    z = torch.randn(1, 6, 32)
    targets = torch.tensor([[[8, 9]]])
    ref = predictor(z[:, :4], torch.arange(4)[None], None, targets).masked
    padded = predictor(
        z, torch.arange(6)[None], torch.tensor([[True] * 4 + [False] * 2]), targets
    ).masked
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)


def test_adaln_zero_starts_unconditioned_then_depends_on_noise_level():
    _, predictor = make("djepa")
    z = torch.randn(1, 6, 32)
    ctx = torch.arange(6)[None]
    targets = torch.tensor([[[8, 9]]])
    noisy = torch.randn(1, 1, 2, 32)
    low = predictor.denoise(z, ctx, targets, noisy, torch.tensor([3]))
    high = predictor.denoise(z, ctx, targets, noisy, torch.tensor([900]))
    torch.testing.assert_close(low, high)  # zero-initialised modulation: t has no effect yet
    for layer in predictor.modulation:
        torch.nn.init.normal_(layer[1].weight, std=0.2)
    low = predictor.denoise(z, ctx, targets, noisy, torch.tensor([3]))
    high = predictor.denoise(z, ctx, targets, noisy, torch.tensor([900]))
    assert not torch.allclose(low, high, atol=1e-4)


def test_group_modulation_matches_per_token_adaln_and_spares_leading_tokens():
    from djepa_bench.models.predictor import ModulatedBlock

    torch.manual_seed(0)
    block = ModulatedBlock(16, 2, 4.0, qkv_bias=True).eval()
    x = torch.randn(2, 3 + 2 * 4, 16)  # 3 plain tokens, then 2 groups of 4
    modulation = torch.randn(2, 2, 6 * 16) * 0.3
    per_token = torch.cat(
        [torch.zeros(2, 3, 6 * 16), modulation.repeat_interleave(4, dim=1)], dim=1
    )
    shift1, scale1, gate1, shift2, scale2, gate2 = per_token.chunk(6, dim=-1)
    h = block.attn(block.norm1(x) * (1 + scale1) + shift1)
    ref = x + h * (1 + gate1)
    ref = ref + block.mlp(block.norm2(ref) * (1 + scale2) + shift2) * (1 + gate2)
    out = block(x, modulation=modulation, start=3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 3:], block(x)[:, 3:], atol=1e-3)


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="'model.size' must be one of nano, micro, tiny"):
        build_config(overrides=["model.size=huge"])
    with pytest.raises(UserError, match="patch_size"):  # depends on the data's image size
        build_encoder(ModelConfig(size="nano", patch_size=5), 32, 3)
    with pytest.raises(UserError, match="'train.method' must be one of ijepa, djepa"):
        build_config(overrides=["train.method=mae"])
