"""One `eval` call on several models or runs: shared data, one results folder each, stage lines."""

from __future__ import annotations

import pytest
from test_encoders import write_tiny_run

from djepa_bench.records import read_records

TINY_VIT = ["--set", "model.depth=1", "--set", "model.embed_dim=32", "--set", "model.num_heads=2"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DJEPA_CACHE_DIR", str(tmp_path / "cache"))


def test_several_models_share_the_decoded_data_and_get_a_folder_each(run_cli, tmp_path):
    out = tmp_path / "floors"
    res = run_cli("eval", "--model", "pixels", "--model", "random:nano", "--dataset", "digits",
                  "--out", out, "--set", "eval.knn.k=[10]", *TINY_VIT)  # fmt: skip
    assert res.code == 0, res.err
    pixels, random = (
        read_records(out / "pixels" / "knn.jsonl"),
        read_records(out / "random-nano" / "knn.jsonl"),
    )
    assert {r["run"] for r in pixels} == {"pixels"} and {r["run"] for r in random} == {
        "random:nano"
    }
    assert res.err.count("data digits: loaded") == 1  # decoded once for both
    assert "eval [1/2] pixels" in res.err and "eval [2/2] random:nano" in res.err
    # Without a terminal: one plain line per stage, no progress bars.
    assert res.err.count("features digits/train: extracting 1437 images") == 2
    assert res.err.count("knn: running") == 2 and "\r" not in res.err
    header = res.out.splitlines()[0].split()
    assert header[:2] == ["run", "protocol"] and "random:nano" in res.out


def test_the_log_names_a_run_by_its_method_not_the_checkpoint_format(run_cli, tmp_path):
    run, _, _ = write_tiny_run(tmp_path / "ijepa-s0", method="ijepa", seed=0)
    res = run_cli("eval", "--ckpt", run, "--set", "eval.knn.k=[5]")
    assert res.code == 0, res.err
    assert "eval ijepa-s0 (ijepa run, encoder=target, pool=mean)" in res.err  # was "(djepa, "


def test_ckpt_repeated_or_globbed_keeps_each_runs_results(run_cli, tmp_path):
    runs = [write_tiny_run(tmp_path / "runs" / f"djepa-s{seed}", seed=seed)[0] for seed in (1, 2)]
    res = run_cli("eval", "--ckpt", str(tmp_path / "runs" / "djepa-s*"), "--set",
                  "eval.knn.k=[5]")  # fmt: skip
    assert res.code == 0, res.err
    for seed, run in zip((1, 2), runs, strict=True):
        records = read_records(run / "results" / "knn.jsonl")
        assert {(r["run"], r["seed"]) for r in records} == {(run.name, seed)}
    res = run_cli("eval", "--ckpt", runs[0], "--ckpt", runs[1], "--out", tmp_path / "o",
                  "--set", "eval.knn.k=[5]")  # fmt: skip
    assert res.code == 0, res.err
    assert {p.parent.name for p in (tmp_path / "o").glob("*/knn.jsonl")} == {
        "djepa-s1", "djepa-s2",
    }  # fmt: skip
    res = run_cli("eval", "--ckpt", str(tmp_path / "nothing-*"))
    assert res.code == 2 and "matches nothing" in res.err


def test_help_says_how_several_models_are_stored(run_cli, monkeypatch):
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 500)
    res = run_cli("eval", "--help")
    text = " ".join(res.out.split())
    assert "With several models or runs, each gets a sub-folder named after it." in text
    assert "avgpool+cls" in text and "quote a glob" in text
