"""What training shows: one plain line per epoch without a terminal, and the TensorBoard mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from djepa_bench.errors import UserError
from djepa_bench.train.api import quick_config, train_run
from djepa_bench.train.reporting import epoch_line, format_duration


def test_training_log_without_a_terminal_has_one_plain_line_per_epoch(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "djepa_bench", "train", "--preset", "demo", "--method", "djepa",
        "--epochs", "2", "--out", str(out), "--device", "cpu",
        "--set", "data.dataset=synthetic", "--set", "model.embed_dim=32",
        "--set", "model.depth=1", "--set", "model.patch_size=4", "--set", "model.predictor_dim=32",
        "--set", "model.predictor_depth=1", "--set", "train.monitor_size=200",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", TERM="xterm-256color")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert lines == epoch_lines  # nothing else: no bar, no escape codes
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    monitor = [r for r in rows if r["kind"] == "epoch"]
    last = epoch_lines[-1]
    for text in ("step 30/30", "loss ", "jepa ", "diff ", "reg ", "img/s", "ETA 0s"):
        assert text in last, text
    assert f"kNN@20 {monitor[-1]['knn_top1']:.1f}%" in last
    assert f"RankMe {monitor[-1]['rankme']:.1f}" in last
    assert "\x1b" not in result.stderr and "━" not in result.stderr


def test_epoch_line_reports_means_rate_monitor_and_eta():
    line = epoch_line(3, 10, 300, 1000, [0.5, 0.25, 0.125, 0.0], 1234.4, None, 125)
    assert line == (
        "epoch 3/10  step 300/1000  loss 0.5000 (jepa 0.2500, diff 0.1250, reg 0.0000)  "
        "1234 img/s  ETA 2m05s"
    )
    with_monitor = epoch_line(1, 1, 5, 5, [1, 1, 0, 0], 10, {"knn_top1": 41.26, "rankme": 7.04}, 0)
    assert "kNN@20 41.3%  RankMe 7.0  ETA 0s" in with_monitor
    assert format_duration(3725) == "1h02m" and format_duration(59.6) == "1m00s"


def test_tensorboard_without_the_package_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    cfg = quick_config(train__tensorboard=True, train__monitor=False)
    with pytest.raises(UserError, match=r"needs the tensorboard package: pip install") as err:
        train_run(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_tensorboard_mirrors_log_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = quick_config(train__tensorboard=True, train__epochs=2, train__monitor_size=100)
    run = train_run(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for kind, key in (("step", "loss"), ("step", "lr"), ("epoch", "knn_top1")):
        assert f"{kind}/{key}" in tags
        logged = [(r["step"], r[key]) for r in rows if r["kind"] == kind]
        mirrored = [(e.step, e.value) for e in events.Scalars(f"{kind}/{key}")]
        assert [s for s, _ in mirrored] == [s for s, _ in logged]
        assert [v for _, v in mirrored] == pytest.approx([v for _, v in logged], rel=1e-6)
