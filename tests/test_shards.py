"""Shard entries: the read contract (slices, fancy rows, blocks) vs numpy, checksums, commit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from djepa_bench.shards import EntryWriter, open_entry, rank_shards, shard_plan


def _entry(tmp_path, data: np.ndarray, shard_rows: int, dtype="float32", name="e"):
    final = tmp_path / name
    with EntryWriter(final, len(data), shard_rows, dtype, source={"what": "test"}) as writer:
        for span in writer.my_shards:
            with writer.shard(span) as put:
                for start in range(span.start, span.stop, 3):  # uneven blocks
                    put(data[start : min(span.stop, start + 3)])
    return open_entry(final)


@pytest.fixture
def data():
    return np.random.default_rng(0).standard_normal((53, 6)).astype(np.float32)


def test_slices_and_rows_read_like_the_numpy_array(tmp_path, data):
    x = _entry(tmp_path, data, shard_rows=10)
    assert x.shape == data.shape and len(x) == 53 and x.ndim == 2 and len(x.spans) == 6
    for a, b in [(0, 53), (7, 31), (10, 20), (49, 53), (5, 5), (-8, None), (None, 12)]:
        np.testing.assert_array_equal(x[a:b], data[a:b])
    np.testing.assert_array_equal(x[::7], data[::7])
    np.testing.assert_array_equal(x[12], data[12])
    np.testing.assert_array_equal(x[-1], data[-1])
    idx = np.array([50, 3, 3, 29, 0, 41])
    np.testing.assert_array_equal(x[idx], data[idx])
    np.testing.assert_array_equal(x[torch.tensor(idx)], data[idx])
    np.testing.assert_array_equal(x[list(idx)], data[idx])
    mask = data[:, 0] > 0
    np.testing.assert_array_equal(x[mask], data[mask])
    np.testing.assert_array_equal(x[4:30, 2:5], data[4:30, 2:5])
    np.testing.assert_array_equal(np.asarray(x), data)
    blocks = list(x.blocks(rows=8))
    assert [s for s, _ in blocks] == list(range(0, 53, 8))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), data)
    assert torch.equal(x.tensor(), torch.from_numpy(data))
    with pytest.raises(IndexError):
        x[53]
    with pytest.raises(IndexError):
        x[np.array([0, 60])]


def test_float16_entries_hold_the_rounded_values(tmp_path, data):
    x = _entry(tmp_path, data, shard_rows=16, dtype="float16")
    assert x.dtype == np.float16 and x[0:53].dtype == np.float16
    np.testing.assert_array_equal(x[:], data.astype(np.float16))
    assert x.tensor().dtype == torch.float32


def test_manifest_describes_shards_and_checksums_catch_corruption(tmp_path, data):
    x = _entry(tmp_path, data, shard_rows=20)
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["count"] == 53 and manifest["row_shape"] == [6]
    assert manifest["dtype"] == "float32" and manifest["source"] == {"what": "test"}
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [(0, 20), (20, 40), (40, 53)]
    x.verify()
    shard = tmp_path / "e" / manifest["shards"][1]["file"]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        open_entry(tmp_path / "e").verify()
    shard.write_bytes(bytes(raw[:-40]))
    with pytest.raises(ValueError, match="cut short"):
        open_entry(tmp_path / "e")


def test_a_failed_write_leaves_nothing_and_keeps_the_old_entry(tmp_path, data):
    _entry(tmp_path, data, shard_rows=20)
    writer = EntryWriter(tmp_path / "e", 53, 20, "float32")
    with pytest.raises(RuntimeError), writer, writer.shard(writer.my_shards[0]) as put:
        put(data[:5])
        raise RuntimeError("encoder failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    np.testing.assert_array_equal(open_entry(tmp_path / "e")[:], data)
    again = _entry(tmp_path, data[::-1].copy(), shard_rows=20)  # replacing a complete entry
    np.testing.assert_array_equal(again[:], data[::-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_shard_plan_is_independent_of_ranks_and_ranks_split_it_evenly():
    plan = shard_plan(101, 16)
    assert [(s.start, s.stop) for s in plan][-2:] == [(80, 96), (96, 101)] and len(plan) == 7
    for world in (1, 2, 3, 8):
        parts = [rank_shards(plan, r, world) for r in range(world)]
        assert [s for part in parts for s in part] == plan
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_linear_probe_from_shards_equals_the_in_memory_probe(tmp_path):
    # What `eval --protocol linear` does since the features live in shards: the probe streams
    # from the entry; the same float32 rows in memory give the same head and selection.
    from djepa_bench.config import LinearConfig
    from djepa_bench.linear_probe import fit_linear_probe

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 240)
    feats = (rng.standard_normal((240, 8)) + 2.0 * np.eye(4, 8)[labels]).astype(np.float32)
    entry = _entry(tmp_path, feats, shard_rows=50)
    cfg = LinearConfig(lrs=[0.01, 0.1], weight_decays=[0.0, 1e-3], epochs=5, chunk_rows=8)
    streamed = fit_linear_probe(entry, torch.from_numpy(labels), cfg, num_classes=4)
    in_memory = fit_linear_probe(torch.from_numpy(feats), torch.from_numpy(labels), cfg, 4)
    assert streamed.hparams["lr"] == in_memory.hparams["lr"]
    assert streamed.hparams["wd"] == in_memory.hparams["wd"]
    torch.testing.assert_close(streamed.weight, in_memory.weight, rtol=1e-5, atol=1e-6)
    queries = torch.from_numpy(feats[:40])
    assert streamed.score(queries, torch.from_numpy(labels[:40])) > 50.0
