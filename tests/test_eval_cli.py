"""`djepa-bench eval` end to end: records appended, cache reused, one-line errors."""

from __future__ import annotations

import json

import pytest
from test_encoders import write_tiny_run

from djepa_bench.records import read_records


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private cache folder per test."""
    monkeypatch.setenv("DJEPA_CACHE_DIR", str(tmp_path / "cache"))


FAST = ["--set", "eval.linear.epochs=5", "--set", "eval.lowshot.trials=2",
        "--set", "eval.lowshot.shots=[1,2]"]  # fmt: skip


def test_pixels_on_digits_writes_records_for_three_protocols(run_cli, tmp_path):
    out = tmp_path / "results"
    res = run_cli("eval", "--model", "pixels", "--dataset", "digits", "--protocol",
                  "knn,linear,lowshot", "--out", out, *FAST)  # fmt: skip
    assert res.code == 0, res.err
    knn = read_records(out / "knn.jsonl")
    assert len(knn) == 8 and {r["params"]["k"] for r in knn} == {10, 20, 100, 200}
    top1_k20 = next(r for r in knn if r["metric"] == "top1" and r["params"]["k"] == 20)
    assert top1_k20["value"] > 90 and top1_k20["params"]["temperature"] == 0.07
    assert top1_k20["run"] == "pixels" and top1_k20["dataset"] == "digits"
    linear = read_records(out / "linear.jsonl")
    assert [r["metric"] for r in linear] == ["top1", "top5"]
    assert {"lr", "wd", "optimizer", "epochs", "val_top1", "grid_edge"} <= set(linear[0]["params"])
    assert len(read_records(out / "lowshot.jsonl")) == 2 * 2 * 2
    assert "protocol" in res.out and "knn" in res.out and "linear" in res.out
    assert "extracted" in res.err


def test_second_eval_reuses_cached_features_and_appends(run_cli, tmp_path):
    out = tmp_path / "r"
    args = ["eval", "--model", "pixels", "--dataset", "digits", "--out", out,
            "--set", "eval.knn.k=[10,20]"]  # fmt: skip
    first = run_cli(*args)
    second = run_cli(*args)
    assert first.code == second.code == 0
    assert "reused cache" not in first.err and second.err.count("reused cache") == 2
    records = read_records(out / "knn.jsonl")
    assert len(records) == 8  # 2 evals x 2 k x top1/top5, appended
    assert records[0]["value"] == records[4]["value"]
    third = run_cli(*args, "--no-cache")
    assert third.code == 0 and "reused cache" not in third.err and "cache off" in third.err


def test_run_directory_records_land_in_its_results(run_cli, tmp_path):
    run, _, _ = write_tiny_run(tmp_path / "runs" / "djepa-s3")
    res = run_cli("eval", "--ckpt", run, "--set", "eval.knn.k=[5]", "--encoder", "context")
    assert res.code == 0, res.err
    (record,) = [r for r in read_records(run / "results" / "knn.jsonl") if r["metric"] == "top1"]
    assert record["run"] == "djepa-s3" and record["method"] == "djepa" and record["seed"] == 3
    assert len(record["checkpoint_sha256"]) == 64 and record["dataset"] == "digits"
    assert "encoder=context" in res.err


def test_list_protocols_names_the_core_three(run_cli):
    res = run_cli("list", "protocols")
    assert res.code == 0
    names = [line.split()[0] for line in res.out.splitlines() if line.strip()]
    assert {"knn", "linear", "lowshot"} <= set(names)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "pixels", "--dataset", "digits"], "--out"),
        (["--model", "pixels", "--out", "x", "--protocol", "knnn"], "unknown protocol 'knnn'"),
        (["--out", "x", "--dataset", "digits"], "give --ckpt RUN_OR_FILE or --model"),
        (["--model", "pixels", "--out", "x", "--set", "eval.knn.kk=3"], "unknown config key"),
        (["--ckpt", "/no/such/run"], "not found"),
        (["--model", "pixels", "--out", "x", "--pretrained"], "timm"),
        (
            ["--model", "pixels", "--out", "x", "--dataset", "digits", "--pool", "max"],
            "'eval.pool' must be one of",
        ),
    ],
)
def test_bad_input_is_one_line_error(run_cli, tmp_path, args, message):
    res = run_cli("eval", *args)
    assert res.code == 2
    assert message in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_every_option_has_help(run_cli):
    res = run_cli("eval", "--help")
    assert res.code == 0
    for option in ("--ckpt", "--model", "--protocol", "--dataset", "--data-root", "--set",
                   "--out", "--no-cache", "--encoder", "--pool", "--device"):  # fmt: skip
        assert option in res.out


def test_records_are_json_lines_with_every_field(run_cli, tmp_path):
    out = tmp_path / "o"
    assert run_cli("eval", "--model", "pixels", "--dataset", "digits", "--out", out).code == 0
    line = (out / "knn.jsonl").read_text().splitlines()[0]
    record = json.loads(line)
    for field in ("run", "method", "seed", "checkpoint_sha256", "dataset", "split", "protocol",
                  "metric", "value", "params", "time_s", "created", "version"):  # fmt: skip
        assert field in record
