"""Feature extraction: order, shape, per-rank shards on gloo, the on-disk feature cache."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from djepa_bench.data import iterate_batches, load_dataset
from djepa_bench.features import extract_features, extract_to_shards, iter_features


def _flat(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def _synthetic():
    return load_dataset("synthetic", "test")


def test_features_match_flattened_normalised_images_in_order():
    split = _synthetic()
    feats = extract_features(_flat, split, batch_size=37)
    reference = torch.cat([x.flatten(1) for x, _ in iterate_batches(split, 1000)])
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert feats.shape == (len(split), 3 * 16 * 16)
    torch.testing.assert_close(feats, reference)


def test_iter_features_yields_consecutive_starts_and_applies_transform():
    split = _synthetic()
    seen = []

    def shift(images, start):
        seen.append(start)
        return images + 1.0

    parts = list(iter_features(_flat, split, batch_size=64, batch_transform=shift))
    assert [s for s, _ in parts] == list(range(0, len(split), 64)) == seen
    plain = extract_features(_flat, split, batch_size=64)
    torch.testing.assert_close(torch.cat([f for _, f in parts]), plain + 1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    from djepa_bench.shards import EntryWriter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        split = _synthetic().subset(torch.arange(101))  # not divisible by the world size
        with EntryWriter(Path(folder), len(split), 16, "float32") as writer:
            mine = [span.index for span in writer.my_shards]
            extract_to_shards(_flat, split, writer, batch_size=6)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(mine))
    finally:
        dist.destroy_process_group()


def test_ranks_write_their_own_shards_whose_union_is_the_one_process_extraction(tmp_path):
    from djepa_bench.shards import EntryWriter, open_entry

    entry = tmp_path / "ranks"
    # fork: the children skip re-importing torch, which keeps this test to a few seconds.
    mp.start_processes(
        _worker, args=(3, _free_port(), str(entry)), nprocs=3, join=True, start_method="fork"
    )
    single = tmp_path / "single"
    split = _synthetic().subset(torch.arange(101))
    with EntryWriter(single, len(split), 16, "float32") as writer:
        extract_to_shards(_flat, split, writer, batch_size=6)
    a, b = open_entry(entry), open_entry(single)
    assert a.shape == b.shape == (101, 3 * 16 * 16) and len(a.spans) == 7
    assert np.array_equal(a[:], b[:])
    for info_a, info_b in zip(a.manifest["shards"], b.manifest["shards"], strict=True):
        assert info_a["sha256"] == info_b["sha256"]
        assert (entry / info_a["file"]).read_bytes() == (single / info_b["file"]).read_bytes()
    # Each rank wrote a contiguous run of 2-3 shards and nothing else.
    owned = [json.loads((entry / f"rank{r}.json").read_text()) for r in range(3)]
    assert owned == [[0, 1, 2], [3, 4], [5, 6]]
    assert [s["rank"] for s in a.manifest["shards"]] == [0, 0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(a.tensor(), extract_features(_flat, split, batch_size=16))


# --- the on-disk feature cache -----------------------------------------------------------


def _source(tmp_path, use_cache=True, model_id="model:test", logs=None, dtype="float16"):
    from djepa_bench.encoders import Encoder
    from djepa_bench.feature_cache import FeatureSource

    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return images.flatten(1)[:, :8] * 2

    encoder = Encoder(model_id, "-", "mean", encode, None, None, None)
    split = _synthetic()
    source = FeatureSource(
        encoder, {"test": split}, cache_dir=tmp_path, use_cache=use_cache, batch_size=64,
        log=(logs.append if logs is not None else None), feature_dtype=dtype, shard_rows=96,
    )  # fmt: skip
    return source, calls


def test_second_source_reuses_the_cache_and_logs_it(tmp_path):
    logs = []
    first, calls = _source(tmp_path, logs=logs)
    a = first.get("test")
    assert calls and first.misses == 1
    path = first.path("test")
    assert (path / "manifest.json").is_file() and not list(path.parent.glob(".*"))  # no temp
    reference = extract_features(lambda x: x.flatten(1)[:, :8] * 2, _synthetic())
    assert torch.equal(a, reference.half().float())  # stored as float16 by default
    second, calls2 = _source(tmp_path, logs=logs)
    b = second.get("test")
    assert calls2 == [] and second.hits == 1
    torch.testing.assert_close(a, b)
    assert any("reused cache" in line for line in logs)
    assert second.get("test") is b  # memoised in memory too


def test_no_cache_bypasses_disk_and_keys_separate_settings(tmp_path):
    source, calls = _source(tmp_path, use_cache=False)
    uncached = source.get("test")
    scratch = list(source._scratch)
    assert calls and not any(tmp_path.rglob("*.npy")) and all(p.exists() for p in scratch)
    source.close()
    assert scratch and not any(p.exists() for p in scratch)  # scratch shards removed
    cached, _ = _source(tmp_path, dtype="float32")
    other, _ = _source(tmp_path, model_id="model:other")
    assert cached.path("test") != other.path("test")
    assert cached.key("test") != cached.key("test", transform="noise-1")
    noisy = cached.get("test", "noise-1", lambda x, start: x + 1.0)
    clean = cached.get("test")
    assert torch.equal(noisy, clean + 2.0) and torch.equal(clean.half().float(), uncached)
    assert len(list(tmp_path.rglob("manifest.json"))) == 2


def test_feature_dtype_names_the_entry_not_the_key(tmp_path):
    half, _ = _source(tmp_path)
    full, _ = _source(tmp_path, dtype="float32")
    assert half.key("test") == full.key("test") and half.path("test") != full.path("test")
    assert half.array("test").dtype == np.float16 and full.array("test").dtype == np.float32
    assert torch.equal(half.get("test"), full.get("test").half().float())


def test_float16_overflow_is_a_user_error_and_float32_keeps_it(tmp_path):
    import pytest

    from djepa_bench.encoders import Encoder
    from djepa_bench.errors import UserError
    from djepa_bench.feature_cache import FeatureSource

    encoder = Encoder("model:big", "-", "mean", lambda x: x.flatten(1)[:, :4] * 1e6, None, None,
                      None)  # fmt: skip
    split = {"test": _synthetic()}
    with pytest.raises(UserError, match="eval.feature_dtype=float32"):
        FeatureSource(encoder, split, cache_dir=tmp_path).get("test")
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # nothing left
    feats = FeatureSource(encoder, split, cache_dir=tmp_path, feature_dtype="float32").get("test")
    assert feats.abs().max() > 1e5


def test_tokens_are_stored_as_shards_of_token_grids(tmp_path):
    import pytest

    from djepa_bench.encoders import Encoder
    from djepa_bench.errors import UserError
    from djepa_bench.feature_cache import FeatureSource

    def tokens(x):  # (B, 3, 16, 16) -> 16 "patches" of 48 values
        return x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(-1, 16, 48)

    encoder = Encoder("model:tok", "-", "mean", lambda x: tokens(x).mean(1), None, None, None,
                      tokens=tokens)  # fmt: skip
    split = _synthetic()
    source = FeatureSource(encoder, {"test": split}, cache_dir=tmp_path, shard_rows=50)
    grid = source.tokens("test")
    assert grid.shape == (len(split), 16, 48) and grid.dtype == np.float16
    expected = torch.cat([tokens(x) for x, _ in iterate_batches(split, 1000)]).half().numpy()
    assert np.array_equal(grid[3:120], expected[3:120])
    assert source.path("test", kind="tokens") != source.path("test")
    plain = Encoder("model:p", "-", "mean", lambda x: x.flatten(1), None, None, None)
    with pytest.raises(UserError, match="no patch tokens"):
        FeatureSource(plain, {"test": split}, cache_dir=tmp_path).tokens("test")


def test_transform_needs_both_name_and_function(tmp_path):
    import pytest

    source, _ = _source(tmp_path)
    with pytest.raises(ValueError):
        source.get("test", transform="noise-1")
    with pytest.raises(ValueError):
        source.get("test", batch_transform=lambda x, s: x)


def test_subsets_of_equal_size_get_different_cache_keys(tmp_path):
    from djepa_bench.encoders import Encoder
    from djepa_bench.feature_cache import FeatureSource

    encoder = Encoder("model:test", "-", "mean", lambda x: x.flatten(1), None, None, None)
    split = _synthetic()
    a, b = split.subset(torch.arange(0, 50)), split.subset(torch.arange(50, 100))
    keys = [FeatureSource(encoder, {"test": s}, cache_dir=tmp_path).key("test") for s in (a, b)]
    assert keys[0] != keys[1]


_SLOW_EXTRACTION = """
import sys, time
from djepa_bench.data import load_dataset
from djepa_bench.encoders import Encoder
from djepa_bench.feature_cache import FeatureSource

def encode(x):
    print("batch", flush=True)
    time.sleep(0.3)
    return x.flatten(1)[:, :8]

encoder = Encoder("model:slow", "-", "mean", encode, None, None, None)
source = FeatureSource(encoder, {"test": load_dataset("synthetic", "test")},
                       cache_dir=sys.argv[1], batch_size=16, shard_rows=32)
source.get("test")
"""


def _interrupted_extraction(cache, sig):
    import signal
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXTRACTION, str(cache)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    for _ in range(3):  # two shards written, the third under way
        assert proc.stdout.readline() == "batch\n", proc.stderr.read()
    proc.send_signal(getattr(signal, sig))
    proc.communicate(timeout=60)
    return proc.returncode


def test_sigterm_during_extraction_leaves_no_temporary_files(tmp_path):
    code = _interrupted_extraction(tmp_path, "SIGTERM")
    assert code == 143
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no temp shards, no entry


def test_a_killed_extractions_leftovers_are_swept_by_the_next_one(tmp_path):
    from djepa_bench.encoders import Encoder
    from djepa_bench.feature_cache import FeatureSource

    assert _interrupted_extraction(tmp_path, "SIGKILL") == -9
    stale = [p for p in tmp_path.rglob(".*") if p.is_dir()]
    assert len(stale) == 1 and ".tmp-" in stale[0].name  # what SIGKILL cannot clean up
    encoder = Encoder("model:slow", "-", "mean", lambda x: x.flatten(1)[:, :8], None, None, None)
    source = FeatureSource(encoder, {"test": _synthetic()}, cache_dir=tmp_path, shard_rows=32)
    source.get("test")
    assert not stale[0].exists() and (source.path("test") / "manifest.json").is_file()
    assert [p for p in tmp_path.rglob(".*")] == []
