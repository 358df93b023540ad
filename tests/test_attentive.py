"""Attentive probe (V-JEPA) on cached patch tokens: architecture, token cache, grid selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from djepa_bench.encoders import load_subject
from djepa_bench.eval_protocols.attentive import AttentiveClassifier, encoder_heads
from djepa_bench.eval_protocols.base import build_context
from djepa_bench.eval_protocols.registry import get_protocol

TINY = ["data.dataset=digits", "model.patch_size=4", "model.depth=1", "model.embed_dim=32",
        "model.num_heads=2"]  # fmt: skip


def test_classifier_is_vjepa_shaped_and_pools_a_set_of_tokens():
    torch.manual_seed(0)
    probe = AttentiveClassifier(dim=32, num_heads=4, num_classes=7, depth=2).eval()
    names = {n for n, _ in probe.named_parameters()}
    expected = {
        "query", "cross.norm1.weight", "cross.xattn.q.weight", "cross.xattn.kv.weight",
        "cross.xattn.proj.weight", "cross.norm2.weight", "cross.mlp.fc1.weight",
        "cross.mlp.fc2.weight", "blocks.0.attn.qkv.weight", "linear.weight",
    }  # fmt: skip
    assert expected <= names
    assert probe.cross.xattn.kv.weight.shape == (64, 32) and probe.query.shape == (1, 1, 32)
    tokens = torch.randn(5, 9, 32)
    out = probe(tokens)
    assert out.shape == (5, 7)
    # Attention pooling without positions does not depend on the order of the tokens...
    torch.testing.assert_close(probe(tokens[:, torch.randperm(9)]), out, atol=1e-5, rtol=1e-5)
    # ...but does depend on which tokens there are (it is not a fixed function of the mean).
    assert not torch.allclose(probe(tokens[:, :5]), out, atol=1e-3)
    # The cheap order of computation is V-JEPA's attention (scores, softmax, values) exactly.
    xattn = probe.cross.xattn
    with torch.no_grad():
        xattn.kv.bias.normal_()
    for queries in (torch.randn(5, 2, 32), torch.randn(1, 2, 32)):  # per image, or shared
        torch.testing.assert_close(
            xattn(queries, tokens), xattn.reference_forward(queries, tokens), atol=1e-5, rtol=1e-4
        )
    grads = []
    for forward in (xattn.forward, xattn.reference_forward):
        xattn.zero_grad()
        forward(queries, tokens).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in xattn.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)
    assert encoder_heads(None, 128) == 2 and encoder_heads(None, 100) == 1


@pytest.fixture
def digits_ctx(tmp_path):
    def make(*extra):
        subject = load_subject(
            model="random:nano", overrides=TINY + [f"eval.cache_dir={tmp_path}", *extra]
        )
        logs: list[str] = []
        return build_context(subject, log=logs.append), logs

    return make


def test_attentive_probe_learns_digits_and_selects_on_validation(digits_ctx, tmp_path):
    ctx, logs = digits_ctx(
        "eval.attentive.epochs=20", "eval.attentive.lrs=[0.01,0.000001]",
        "eval.attentive.weight_decays=[0.001]",
    )  # fmt: skip
    records = get_protocol("attentive").run(ctx)
    top1 = next(r for r in records if r["metric"] == "top1")
    assert top1["protocol"] == "attentive" and top1["split"] == "test"
    assert top1["value"] > 30  # 10 classes; the 1e-6 probe stays near chance
    assert top1["params"]["lr"] == 0.01 and top1["params"]["grid_size"] == 2
    assert top1["params"]["tokens"] == 16 and top1["params"]["num_heads"] == 2
    assert top1["params"]["pool"] == "mean" and top1["params"]["val_top1"] > 30

    # Patch tokens are cached like the features: float16 shard entries, memory-mapped.
    entries = sorted(
        p.parent for p in tmp_path.rglob("manifest.json") if "-tokens-" in p.parent.name
    )
    assert len(entries) == 2 and not [p for p in tmp_path.rglob(".*") if "tmp" in p.name]
    train = ctx.tokens("train")
    assert train[:3].dtype == np.float16
    assert train.shape == (len(ctx.splits["train"]), 16, 32)
    with torch.no_grad():
        first = ctx.encoder.tokens(next(iter(_batches(ctx)))[:3])
    np.testing.assert_allclose(train[:3], first.numpy(), atol=2e-3, rtol=2e-3)
    again, logs2 = digits_ctx()
    assert again.tokens("train").shape == train.shape
    assert any("reused cache" in line for line in logs2)


def _batches(ctx):
    from djepa_bench.data import iterate_batches

    for images, _ in iterate_batches(ctx.splits["train"], 8):
        yield images


def test_pixels_have_no_tokens(tmp_path):
    subject = load_subject(model="pixels", overrides=["data.dataset=digits"])
    ctx = build_context(subject)
    from djepa_bench.eval_protocols.base import ProtocolSkipped

    with pytest.raises(ProtocolSkipped, match="no patch tokens"):
        get_protocol("attentive").run(ctx)
