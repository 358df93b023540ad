"""The demo path end to end on a tiny configuration: train, every protocol, floors, report."""

from __future__ import annotations

import json

TINY_TRAIN = [
    "--set", "model.size=micro", "--set", "model.embed_dim=32", "--set", "model.depth=1",
    "--set", "model.num_heads=2",
    "--set", "model.predictor_dim=32", "--set", "model.predictor_depth=1",
    "--set", "model.predictor_heads=2", "--set", "model.patch_size=4",
    "--set", "diffusion.timesteps=50", "--set", "train.monitor=false",
]  # fmt: skip
TINY_EVAL = [
    "--eval-set", "eval.linear.epochs=10", "--eval-set", "eval.lowshot.shots=[1,5]",
    "--eval-set", "eval.lowshot.trials=2", "--eval-set", "eval.robustness.severities=[1,5]",
    "--eval-set", "eval.robustness.corruptions=gaussian_noise,defocus_blur,brightness",
    "--eval-set", "eval.denoising.num_images=32", "--eval-set", "eval.denoising.num_levels=2",
    "--eval-set", "eval.denoising.sampling_images=8", "--eval-set", "eval.denoising.steps=[1,2]",
    "--eval-set", "eval.denoising.samples=2",
]  # fmt: skip


def test_demo_trains_evaluates_every_protocol_and_reports(run_cli, tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--seeds", "1", "--epochs", "1", *TINY_TRAIN, *TINY_EVAL]
    result = run_cli(*args)
    assert result.code == 0, result.err
    for method in ("ijepa", "djepa"):
        run = out / "runs" / f"{method}-s0"
        assert (run / "checkpoint.pt").is_file()
        protocols = {p.stem for p in (run / "results").glob("*.jsonl")}
        expected = {
            "knn", "linear", "lowshot", "robustness", "representation", "denoising", "attentive",
        }  # fmt: skip
        assert protocols == expected, method
    for floor in ("pixels", "random"):
        assert (out / "floors" / floor / "knn.jsonl").is_file()
        assert not (out / "floors" / floor / "denoising.jsonl").exists()  # no predictor
    report = (out / "report" / "report.md").read_text()
    assert "I-JEPA" in report and "D-JEPA" in report and "raw pixels" in report
    # The random floor is built and named after the runs' ViT size, not a fixed one.
    assert "random init (micro)" in report and "random init (nano)" not in report
    assert (out / "report" / "figures" / "denoising.png").is_file()
    assert "demo finished" in result.out

    # A second run reuses what is done instead of training or evaluating again.
    records_before = (out / "runs" / "djepa-s0" / "results" / "knn.jsonl").read_text()
    again = run_cli(*args)
    assert again.code == 0, again.err
    assert again.err.count("already trained") == 2
    assert (out / "runs" / "djepa-s0" / "results" / "knn.jsonl").read_text() == records_before
    knn = [json.loads(line) for line in records_before.splitlines()]
    assert {r["params"]["k"] for r in knn} == {10, 20, 100, 200}
    # --eval-set wins over the demo's quick evaluation set (severities 1,3,5).
    robustness = (out / "runs" / "djepa-s0" / "results" / "robustness.jsonl").read_text()
    severities = {json.loads(line)["params"].get("severity") for line in robustness.splitlines()}
    assert severities - {None} == {0, 1, 5}  # None: the summary records


def test_demo_rejects_a_file_as_out(run_cli, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    result = run_cli("demo", "--out", target)
    assert result.code == 2 and "is not a folder" in result.err
    assert target.read_text() == "keep me"
