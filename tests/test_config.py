"""Config: defaults, YAML files, `--set` overrides and their one-line errors."""

from __future__ import annotations

import dataclasses
import json
import types
import typing

import pytest

from djepa_bench.config import Config, apply_overrides, build_config, config_from_dict, to_dict
from djepa_bench.config_types import Ascending, Length, Range, field_types, is_section
from djepa_bench.errors import UserError
from djepa_bench.presets import eval_preset_overrides


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
            "mask.context_batching=fixed",
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


# --- typed fields: choices and ranges are checked when the config is built ----------------


def _leaf_fields(cls=Config, prefix=""):
    for name, tp in field_types(cls).items():
        if is_section(tp):
            yield from _leaf_fields(typing.get_args(tp)[0] if typing.get_args(tp) else tp,
                                    f"{prefix}{name}.")  # fmt: skip
        else:
            yield f"{prefix}{name}", tp


def _constraints(tp):
    """(bare type, constraints) of an annotation, looking through Optional and list items."""
    extras = []
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp, *more = typing.get_args(tp)
            extras += more
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp, extras


def _outside(rng: Range):
    if rng.ge is not None:
        return rng.ge - 1
    if rng.gt is not None:
        return rng.gt
    if rng.le is not None:
        return rng.le + 1
    return rng.lt


LITERALS = [(k, tp) for k, tp in _leaf_fields() if typing.get_origin(_constraints(tp)[0]) is
            typing.Literal]  # fmt: skip
RANGES = [(k, r) for k, tp in _leaf_fields() for r in _constraints(tp)[1] if isinstance(r, Range)]


def test_every_enumerated_field_is_a_literal():
    names = {k for k, _ in LITERALS}
    expected = {
        "model.size", "mask.context_batching", "diffusion.schedule", "diffusion.loss",
        "optim.jepa_loss", "train.method", "train.precision", "eval.encoder", "eval.pool",
        "eval.knn.weighting", "eval.knn.backend", "eval.linear.optimizer",
        "eval.robustness.params",
    }  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize(("key", "tp"), LITERALS, ids=[k for k, _ in LITERALS])
def test_a_value_outside_a_literal_is_a_one_line_error_naming_the_choices(key, tp):
    choices = typing.get_args(_constraints(tp)[0])
    with pytest.raises(UserError) as info:
        build_config(overrides=[f"{key}=bogus_value"])
    message = str(info.value)
    assert f"'{key}'" in message and "\n" not in message
    assert all(str(choice) in message for choice in choices)


@pytest.mark.parametrize(("key", "rng"), RANGES, ids=[k for k, _ in RANGES])
def test_a_number_outside_its_range_is_a_one_line_error_naming_the_range(key, rng):
    section, name = key.rsplit(".", 1)
    node = Config()
    for part in section.split("."):
        node = getattr(node, part)
    current = getattr(node, name)
    value = _outside(rng)
    if isinstance(current, list):
        value = [value]
    elif isinstance(current, tuple):
        value = [value, value]
    with pytest.raises(UserError) as info:
        build_config(overrides=[f"{key}={value}"])
    message = str(info.value)
    assert f"'{key}'" in message and rng.describe() in message and "\n" not in message


def test_lists_and_pairs_check_their_length_and_order():
    assert any(isinstance(c, Length) for c in _constraints(field_types(
        type(Config().eval.knn))["k"])[1])  # fmt: skip
    with pytest.raises(UserError, match="at least 1 value"):
        build_config(overrides=["eval.knn.k=[]"])
    with pytest.raises(UserError, match="low <= high"):
        build_config(overrides=["data.crop_scale=[0.9,0.2]"])
    assert any(isinstance(c, Ascending) for c in _constraints(field_types(
        type(Config().mask))["target_scale"])[1])  # fmt: skip


def test_fields_that_depend_on_each_other_are_checked_together():
    with pytest.raises(UserError, match="min_lr"):
        build_config(overrides=["optim.lr=1e-4", "optim.min_lr=1e-3"])
    with pytest.raises(UserError, match="predictor_heads"):
        build_config(overrides=["model.predictor_dim=100", "model.predictor_heads=3"])
    with pytest.raises(UserError, match="ema_start"):
        build_config(overrides=["optim.ema_start=1.0", "optim.ema_end=0.99"])


def test_every_preset_builds_a_valid_config():
    from djepa_bench.presets import preset_names

    for name in preset_names():
        assert dataclasses.is_dataclass(build_config(name))


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("optim.jepa_loss=l1", "smooth_l1, mse"),
        ("eval.knn.weighting=foo", "dino, uniform"),
        ("optim.batch_size=0", ">= 1"),
        ("eval.knn.k=[0]", ">= 1"),
        ("eval.knn.temperature=0", "> 0"),
    ],
)
def test_train_and_eval_reject_bad_values_before_reading_any_data(
    run_cli, tmp_path, override, allowed
):
    # The data root does not exist: an error about data would mean data was read first.
    missing = tmp_path / "no-data-here"
    trained = run_cli("train", "--preset", "cifar10-cpu", "--data-root", missing,
                      "--out", tmp_path / "run", "--set", override)  # fmt: skip
    evaluated = run_cli("eval", "--model", "pixels", "--dataset", "cifar10", "--data-root",
                        missing, "--out", tmp_path / "ev", "--set", override)  # fmt: skip
    for result in (trained, evaluated):
        assert result.code == 2
        assert result.err.count("\n") == 1 and result.err.startswith("error: config key")
        assert allowed in result.err
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()


# --- named evaluation presets ------------------------------------------------------------


def test_paper_preset_pins_the_documented_defaults():
    cfg = build_config(overrides=eval_preset_overrides("paper"))
    assert cfg.eval == dataclasses.replace(Config().eval, preset="paper")
    assert cfg.eval.robustness.corruptions == "all"
    assert cfg.eval.robustness.severities == [1, 2, 3, 4, 5]
    assert cfg.eval.lowshot.trials == 5


def test_quick_preset_and_overrides_are_recorded_honestly():
    quick = build_config(overrides=eval_preset_overrides("quick"))
    assert quick.eval.preset == "quick" and quick.eval.robustness.severities == [1, 3, 5]
    runtime = build_config(overrides=eval_preset_overrides("quick", ["eval.batch_size=64"]))
    assert runtime.eval.preset == "quick"  # where/how fast, not what is measured
    changed = build_config(overrides=eval_preset_overrides("quick", ["eval.lowshot.trials=9"]))
    assert changed.eval.preset == "quick+overrides" and changed.eval.lowshot.trials == 9
    with pytest.raises(UserError, match="did you mean quick"):
        eval_preset_overrides("quik")


def test_every_record_names_its_evaluation_preset(run_cli, tmp_path):
    result = run_cli("eval", "--model", "pixels", "--dataset", "digits", "--out", tmp_path,
                     "-P", "knn", "--eval-preset", "quick")  # fmt: skip
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (tmp_path / "knn.jsonl").read_text().splitlines()]
    assert records and {r["eval_preset"] for r in records} == {"quick"}
