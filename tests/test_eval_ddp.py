"""`torchrun --nproc_per_node 2` eval (gloo, CPU): each rank writes its own feature shards,
and together they are the one-process extraction, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from djepa_bench.records import read_records
from djepa_bench.shards import open_entry


def _eval(launcher: list[str], cache, out) -> subprocess.CompletedProcess:
    args = [
        "eval", "--model", "random:nano", "--dataset", "synthetic", "--protocol", "knn,linear",
        "--device", "cpu", "--out", str(out), "--set", f"eval.cache_dir={cache}",
        "--set", "eval.shard_rows=128", "--set", "eval.batch_size=50",
        "--set", "eval.knn.k=[5,20]", "--set", "eval.linear.epochs=3",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *launcher, "-m", "djepa_bench", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_torchrun_ranks_write_the_one_process_shards_bit_for_bit(tmp_path):
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = _eval(torchrun, tmp_path / "cache-ddp", tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = _eval([], tmp_path / "cache-one", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]

    entries = sorted(p.parent for p in (tmp_path / "cache-one").rglob("manifest.json"))
    assert len(entries) == 2  # train and test
    for entry in entries:
        twin = tmp_path / "cache-ddp" / entry.relative_to(tmp_path / "cache-one")
        single, ranks = open_entry(entry), open_entry(twin)
        assert ranks.manifest["world_size"] == 2 and single.manifest["world_size"] == 1
        for a, b in zip(single.manifest["shards"], ranks.manifest["shards"], strict=True):
            assert (entry / a["file"]).read_bytes() == (twin / b["file"]).read_bytes()
            assert a["sha256"] == b["sha256"]
        # Each rank wrote one contiguous half of the shards and nothing else.
        owners = [s["rank"] for s in ranks.manifest["shards"]]
        half = -(-len(owners) // 2)
        assert owners == [0] * half + [1] * (len(owners) - half)
        ranks.verify()
    # train: 1000 images in 8 shards of 128 rows; test: 200 images in 2.
    counts = sorted(json.loads((e / "manifest.json").read_text())["count"] for e in entries)
    assert counts == [200, 1000]
    for protocol, count in (("knn", 4), ("linear", 2)):  # linear: rank 0 alone, all rows
        values = [
            [r["value"] for r in read_records(tmp_path / d / f"{protocol}.jsonl")]
            for d in ("one", "ddp")
        ]
        assert values[0] == values[1] and len(values[0]) == count, protocol
    assert not [p for p in (tmp_path / "cache-ddp").rglob(".*")]  # no temporary folders
