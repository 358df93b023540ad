"""Fine-tuning protocol: layer-wise lr decay groups, end-to-end training on digits, frozen copy."""

from __future__ import annotations

import pytest
import torch
from timm.optim import param_groups_layer_decay

from djepa_bench.encoders import load_subject
from djepa_bench.eval_protocols.base import build_context
from djepa_bench.eval_protocols.finetune import FinetuneNet, fine_tune
from djepa_bench.eval_protocols.registry import get_protocol, protocols

TINY = ["data.dataset=digits", "model.patch_size=4", "model.depth=2", "model.embed_dim=32",
        "model.num_heads=2"]  # fmt: skip


def _scales(model, decay=0.5):
    groups = param_groups_layer_decay(
        model, weight_decay=0.05, layer_decay=decay, no_weight_decay_list=model.no_weight_decay()
    )
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("spec", ["random:nano", "timm:vit_tiny_patch16_224,depth=2"])
def test_layer_decay_goes_down_from_the_head_to_the_patch_embedding(spec):
    from djepa_bench.encoders import make_encoder

    subject = load_subject(model=spec, overrides=TINY)
    features = make_encoder(subject, 16, 1).encode.requires_grad_(True)
    model = FinetuneNet(features, features(torch.zeros(1, 1, 16, 16)).shape[1], 10)
    scales = _scales(model)
    prefix = "features.backbone."
    # head 1, last block (and final norm) 0.5, first block 0.25, embeddings 0.125
    assert scales["head.weight"] == (1.0, 0.05) and scales["head.bias"] == (1.0, 0.0)
    assert scales[f"{prefix}blocks.1.mlp.fc1.weight"][0] == 0.5
    assert scales[f"{prefix}norm.weight"] == (0.5, 0.0)
    assert scales[f"{prefix}blocks.0.attn.qkv.weight"] == (0.25, 0.05)
    assert scales[f"{prefix}patch_embed.proj.weight"] == (0.125, 0.05)
    if spec.startswith("timm"):
        assert scales[f"{prefix}cls_token"] == (0.125, 0.0)  # no decay on tokens/positions
        assert scales[f"{prefix}pos_embed"] == (0.125, 0.0)


def test_fine_tuning_trains_a_copy_end_to_end_on_digits(tmp_path, monkeypatch):
    from djepa_bench.eval_protocols import finetune

    subject = load_subject(
        model="random:nano",
        overrides=TINY
        + [
            f"eval.cache_dir={tmp_path}",
            "eval.finetune.epochs=5",
            "eval.finetune.batch_size=32",
            "eval.finetune.lr=0.01",
        ],  # fmt: skip
    )
    logs: list[str] = []
    ctx = build_context(subject, log=logs.append)
    frozen = {k: v.clone() for k, v in ctx.encoder.module.state_dict().items()}
    trained = {}

    def keep(ctx, cfg):
        trained["model"], figures = fine_tune(ctx, cfg)
        return trained["model"], figures

    monkeypatch.setattr(finetune, "fine_tune", keep)
    records = get_protocol("finetune").run(ctx)
    assert [r["metric"] for r in records] == ["top1", "top5"]
    top1 = records[0]
    assert top1["protocol"] == "finetune" and top1["params"]["layer_decay"] == 0.75
    assert top1["params"]["train_images"] == len(ctx.splits["train"])
    assert top1["value"] > 30  # 10 classes, chance 10
    assert sum("finetune: epoch" in line for line in logs) == 5  # one line per epoch

    tuned = trained["model"].features.backbone.state_dict()
    assert not torch.equal(tuned["blocks.0.attn.qkv.weight"], frozen["blocks.0.attn.qkv.weight"])
    assert not torch.equal(tuned["patch_embed.proj.weight"], frozen["patch_embed.proj.weight"])
    for name, value in ctx.encoder.module.state_dict().items():  # the shared encoder is untouched
        assert torch.equal(value, frozen[name]), name


def test_finetune_is_listed_but_not_part_of_all(run_cli):
    assert protocols()["finetune"].in_all is False and protocols()["attentive"].in_all
    res = run_cli("list", "protocols")
    names = [line.split()[0] for line in res.out.splitlines() if line.strip()]
    assert {"attentive", "finetune"} <= set(names)
    from djepa_bench.commands.eval_cmd import _protocol_names

    assert "finetune" not in _protocol_names("all") and "attentive" in _protocol_names("all")
    assert _protocol_names("all,finetune")[-1] == "finetune"
