"""Feature extraction: order, shape, batch independence, distributed gather on gloo."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from djepa_bench.data import iterate_batches, load_dataset
from djepa_bench.features import extract_features, iter_features


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


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        split = _synthetic().subset(torch.arange(101))  # not divisible by the world size
        feats = extract_features(_flat, split, batch_size=16, distributed=True)
        if rank == 0:
            torch.save(feats, out_path)
    finally:
        dist.destroy_process_group()


def test_distributed_extraction_gathers_all_shards_in_order(tmp_path):
    out = tmp_path / "feats.pt"
    # fork: the children skip re-importing torch, which keeps this test to a few seconds.
    mp.start_processes(
        _worker, args=(3, _free_port(), str(out)), nprocs=3, join=True, start_method="fork"
    )
    gathered = torch.load(out, weights_only=True)
    single = extract_features(_flat, _synthetic().subset(torch.arange(101)), batch_size=16)
    torch.testing.assert_close(gathered, single)


# --- the on-disk feature cache -----------------------------------------------------------


def _source(tmp_path, use_cache=True, model_id="model:test", logs=None):
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
        log=(logs.append if logs is not None else None),
    )  # fmt: skip
    return source, calls


def test_second_source_reuses_the_cache_and_logs_it(tmp_path):
    logs = []
    first, calls = _source(tmp_path, logs=logs)
    a = first.get("test")
    assert calls and first.misses == 1
    path = first.path("test")
    assert path.is_file() and not list(path.parent.glob(".*"))  # no temp file left behind
    second, calls2 = _source(tmp_path, logs=logs)
    b = second.get("test")
    assert calls2 == [] and second.hits == 1
    torch.testing.assert_close(a, b)
    assert any("reused cache" in line for line in logs)
    assert second.get("test") is b  # memoised in memory too


def test_no_cache_bypasses_disk_and_keys_separate_settings(tmp_path):
    source, calls = _source(tmp_path, use_cache=False)
    source.get("test")
    assert calls and not any(tmp_path.rglob("*.npy"))
    cached, _ = _source(tmp_path)
    other, _ = _source(tmp_path, model_id="model:other")
    assert cached.path("test") != other.path("test")
    assert cached.key("test") != cached.key("test", transform="noise-1")
    noisy = cached.get("test", "noise-1", lambda x, start: x + 1.0)
    clean = cached.get("test")
    torch.testing.assert_close(noisy, clean + 2.0)
    assert len(list(tmp_path.rglob("*.npy"))) == 2


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
