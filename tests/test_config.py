"""Config: defaults, YAML files, `--set` overrides and their one-line errors."""

from __future__ import annotations

import pytest

from djepa_bench.config import Config, apply_overrides, build_config, config_from_dict, to_dict
from djepa_bench.errors import UserError


def test_defaults_round_trip_through_dict():
    cfg = Config()
    assert config_from_dict(to_dict(cfg)) == cfg


def test_overrides_set_nested_typed_values():
    cfg = build_config(
        overrides=[
            "optim.lr=3e-4",
            "eval.knn.k=[10,20]",
            "mask.target_scale=[0.1,0.2]",
            "train.compile=true",
            "data.root=/tmp/x",
            "eval.knn.k=5",
        ]
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.eval.knn.k == [5]  # a scalar for a list field becomes a one-item list
    assert cfg.mask.target_scale == (0.1, 0.2)
    assert cfg.train.compile is True
    assert cfg.data.root == "/tmp/x"


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\n  batch_size: 64\ntrain:\n  epochs: 3\n")
    cfg = build_config(config_file=path, overrides=["train.epochs=5"])
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.train.epochs) == (0.01, 64, 5)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lrr=1", "did you mean optim.lr"),
        ("optm.lr=1", "unknown config key 'optm.lr'"),
        ("optim.batch_size=abc", "'optim.batch_size' expects an integer"),
        ("train.compile=maybe", "expects true or false"),
        ("mask.target_scale=[1,2,3]", "expects 2 values"),
        ("optim", "must look like key.sub=value"),
        ("eval.knn=3", "is a section"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, fragment):
    with pytest.raises(UserError) as info:
        apply_overrides({}, [override]) if "=" not in override else build_config(
            overrides=[override]
        )
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_yaml_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_config(config_file=path)
    with pytest.raises(UserError, match="not found"):
        build_config(config_file=tmp_path / "missing.yaml")
    path.write_text("optim:\n  nope: 1\n")
    with pytest.raises(UserError, match="unknown config key 'optim.nope'"):
        build_config(config_file=path)
