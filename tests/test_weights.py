"""--weights FILE through timm: 224-px state dicts at small sizes, the model's own normalisation,
class-token pooling, one-line errors for files that do not fit; never any network."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch

from djepa_bench.data import iterate_batches, load_dataset
from djepa_bench.encoders import load_subject, make_encoder
from djepa_bench.errors import UserError
from djepa_bench.records import read_records

NAME = "vit_tiny_patch16_224"


@pytest.fixture
def offline(monkeypatch):
    """No network: the hub is told to stay offline and any socket connection fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def vit224(tmp_path_factory):
    """A 224-px ViT-Ti state dict (random weights, 1000-class head) saved as a plain file."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / "vit_tiny_224.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_224px_state_dict_runs_at_32px_with_the_models_normalisation(offline, vit224):
    source, path = vit224
    subject = load_subject(model=f"timm:{NAME}", weights=path)
    split = load_dataset("synthetic", "test").subset(torch.arange(6))
    assert split.mean == (0.5, 0.5, 0.5) and split.std == (0.2, 0.2, 0.2)  # not the model's
    enc = make_encoder(subject, 32, 3, pool="mean", data_norm=(split.mean, split.std))
    model = enc.module
    assert enc.image_size == 32 and model.patch_embed.grid_size == (2, 2)
    assert model.pos_embed.shape == (1, 1 + 4, 192)  # resampled from 1 + 14 * 14
    for name, tensor in source.state_dict().items():
        if name.startswith(("blocks", "cls_token", "norm.", "patch_embed")):
            torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    assert enc.input_norm == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's data config

    # The encoder sees dataset-normalised batches; the model must get the raw [0, 1] images
    # normalised with its own mean/std.
    (batch, _), *_ = iterate_batches(split, 6, image_size=32)
    raw = batch * 0.2 + 0.5
    with torch.no_grad():
        expected = model.forward_features((raw - 0.5) / 0.5)[:, 1:].mean(1)
        got = enc.encode(batch)
        dataset_normalised = model.forward_features(batch)[:, 1:].mean(1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, dataset_normalised, atol=1e-2)
    init = make_encoder(load_subject(model=f"timm:{NAME}"), 32, 3)
    assert init.input_norm is None and init.cache_id() != enc.cache_id()


def test_eval_cli_with_weights_at_32px_records_pool_and_normalisation(
    offline, vit224, run_cli, tmp_path
):
    _, path = vit224
    out = tmp_path / "out"
    res = run_cli(
        "eval", "--model", f"timm:{NAME}", "--weights", path, "--dataset", "synthetic",
        "--set", "data.image_size=32", "--pool", "avgpool+cls", "--out", out,
        "--set", "eval.knn.k=[5]", "--set", f"eval.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "model's own normalisation" in res.err
    records = [json.loads(line) for line in (out / "knn.jsonl").read_text().splitlines()]
    assert {r["params"]["pool"] for r in records} == {"avgpool+cls"}
    assert records[0]["method"] == "timm" and "weights=" in records[0]["checkpoint_sha256"]
    assert records[0]["value"] > 20  # 10 classes; the synthetic gratings are easy


def test_class_token_pools(vit224):
    _, path = vit224
    subject = load_subject(model=f"timm:{NAME}", weights=path)
    x = torch.randn(3, 3, 32, 32)
    cls = make_encoder(subject, 32, 3, pool="cls")
    both = make_encoder(subject, 32, 3, pool="avgpool+cls")
    mean = make_encoder(subject, 32, 3, pool="mean")
    with torch.no_grad():
        tokens = cls.module.forward_features(x)
        torch.testing.assert_close(cls.encode(x), tokens[:, 0])
        torch.testing.assert_close(both.encode(x), torch.cat([tokens[:, 0], mean.encode(x)], 1))
        assert mean.tokens(x).shape == (3, 4, 192)  # patch tokens only
    assert len({e.cache_id() for e in (cls, both, mean)}) == 3


def test_class_token_pool_on_a_model_without_one_fails_before_data(run_cli, tmp_path):
    res = run_cli("eval", "--model", "random:nano", "--dataset", "cifar10", "--data-root",
                  tmp_path / "nothing-here", "--pool", "cls", "--out", tmp_path / "o")  # fmt: skip
    assert res.code == 2 and "class token" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="class token"):
        make_encoder(load_subject(model="timm:resnet18"), 32, 3, pool="cls")


def _bad_files(tmp_path):
    small = timm.create_model("vit_small_patch16_224", depth=1)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    resnet = timm.create_model("resnet18")
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    torch.save({"epoch": 3, "weights": {"a": torch.zeros(1)}}, tmp_path / "nested.pth")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    return {
        "small.pth": "cls_token is (1, 1, 384) in the file but (1, 1, 192) in the model",
        "resnet.pth": "missing key(s), e.g. cls_token",
        "list.pth": "holds list, not a state dict",
        "nested.pth": "'epoch' holds a int, not a tensor",
        "pickled.pth": "weights-only load refuses",
        "text.pth": "does not load with torch.load",
        "absent.pth": "not found",
    }


def test_files_that_do_not_fit_give_one_line(offline, run_cli, tmp_path):
    for name, message in _bad_files(tmp_path).items():
        res = run_cli(
            "eval", "--model", f"timm:{NAME}", "--weights", tmp_path / name, "--dataset",
            "synthetic", "--out", tmp_path / "out", "--set", f"eval.cache_dir={tmp_path}",
        )  # fmt: skip
        assert res.code == 2, (name, res.err)
        errors = [line for line in res.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (name, res.err)
        assert "Traceback" not in res.err and res.err.strip().endswith(errors[0]), name
        if name not in ("small.pth", "resnet.pth"):  # the format is checked before any data
            assert len(res.err.strip().splitlines()) == 1, (name, res.err)


def test_weights_in_the_spec_and_option_conflicts(vit224, run_cli, tmp_path):
    _, path = vit224
    by_spec = load_subject(model=f"timm:{NAME},weights={path}")
    by_flag = load_subject(model=f"timm:{NAME}", weights=path)
    assert by_spec.identity.checkpoint_sha256 == by_flag.identity.checkpoint_sha256
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(
        make_encoder(by_spec, 32, 3).encode(x), make_encoder(by_flag, 32, 3).encode(x)
    )
    res = run_cli("eval", "--model", f"timm:{NAME}", "--model", "timm:resnet18", "--weights",
                  path, "--out", tmp_path)  # fmt: skip
    assert res.code == 2 and "weights=FILE" in res.err


@pytest.mark.realdata
def test_cifar10_at_32px_from_a_224px_state_dict(offline, cifar10_root, run_cli, tmp_path):
    # Two blocks keep the 60k images cheap; the file is still a 224-px timm state dict.
    torch.manual_seed(0)
    path = tmp_path / "vit_tiny_224_depth2.pth"
    torch.save(timm.create_model(NAME, depth=2, num_classes=1000).state_dict(), path)
    out = tmp_path / "out"
    res = run_cli(
        "eval", "--model", f"timm:{NAME},depth=2", "--weights", path, "--dataset", "cifar10",
        "--data-root", cifar10_root, "--out", out, "--set", "eval.knn.k=[20]",
        "--set", f"eval.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "model's own normalisation" in res.err and "50000 train / 10000 test" in res.err
    top1 = next(r for r in read_records(out / "knn.jsonl") if r["metric"] == "top1")
    assert top1["dataset"] == "cifar10" and top1["value"] > 15  # chance: 10
