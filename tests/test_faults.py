"""Fault injection: full disks, read-only folders, cut files, concurrent writers, bad inputs.

Each test pins one cause of issue 21 (wrong or lost results, or a traceback instead of
one line) and fails on the code before its fix. Faults are injected by patching the OS
calls (portable: no mount, no root; root ignores file permissions anyway):
- `full_disk(folder, free)`: `os.write` to files under `folder` writes what still fits in
  `free` bytes, then fails with ENOSPC, as a full disk does;
- `read_only(folder)`: opening for writing, creating, renaming or removing anything under
  `folder` fails with EROFS, as on a read-only mount;
- `no_permission(folder)`: listing `folder` fails with EACCES.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from djepa_bench.data import load_dataset
from djepa_bench.errors import UserError
from djepa_bench.io import atomic_write_text, load_yaml
from djepa_bench.records import RunIdentity, append_records, make_record, read_records

PIXELS = ["eval", "--model", "pixels", "--set", "eval.knn.k=[1]", "--protocol", "knn"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private cache folder per test."""
    monkeypatch.setenv("DJEPA_CACHE_DIR", str(tmp_path / "cache"))


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _under(path, folder: Path) -> bool:
    try:
        return Path(os.fspath(path)).resolve().is_relative_to(folder)
    except (TypeError, ValueError):
        return False


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(folder, free): writes under `folder` get `free` more bytes, then ENOSPC."""

    def arm(folder: Path, free: int = 0) -> None:
        folder = folder.resolve()
        real_write = os.write
        left = [free]

        def write(fd, data):
            if not _fd_path(fd).startswith(str(folder)):
                return real_write(fd, data)
            if left[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done = real_write(fd, bytes(data[: left[0]]))
            left[0] -= done
            return done

        monkeypatch.setattr(os, "write", write)

    return arm


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): anything that would change `folder` fails with EROFS."""

    def arm(folder: Path) -> None:
        folder = folder.resolve()

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        def guard(real, path_arg=0, writes=lambda *a, **k: True):
            def call(*args, **kwargs):
                if _under(args[path_arg], folder) and writes(*args, **kwargs):
                    refuse(args[path_arg])
                return real(*args, **kwargs)

            return call

        def open_writes(file, mode="r", *a, **k):
            return any(c in mode for c in "wax+")

        def os_open_writes(path, flags, *a, **k):
            return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

        monkeypatch.setattr(builtins, "open", guard(builtins.open, writes=open_writes))
        monkeypatch.setattr(io, "open", guard(io.open, writes=open_writes))
        monkeypatch.setattr(os, "open", guard(os.open, writes=os_open_writes))
        for name in ("mkdir", "unlink", "remove", "rmdir"):
            monkeypatch.setattr(os, name, guard(getattr(os, name)))
        for name in ("replace", "rename"):
            monkeypatch.setattr(os, name, guard(guard(getattr(os, name)), path_arg=1))

    return arm


@pytest.fixture
def no_permission(monkeypatch):
    """no_permission(folder): listing `folder` fails with EACCES (as chmod 000 would)."""

    def arm(folder: Path) -> None:
        folder = folder.resolve()
        real = os.listdir, os.scandir

        def deny(real_call):
            def call(path="."):
                if Path(os.fspath(path)).resolve() == folder:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_call(path)

            return call

        monkeypatch.setattr(os, "listdir", deny(real[0]))
        monkeypatch.setattr(os, "scandir", deny(real[1]))

    return arm


def _records(n: int, start: int = 0) -> list[dict]:
    ident = RunIdentity("r", "djepa", 0, "abc")
    return [
        make_record(ident, dataset="d", split="test", protocol="knn", metric="top1",
                    value=float(i), params={"k": i})
        for i in range(start, start + n)
    ]  # fmt: skip


def _one_line(err: str) -> str:
    """The error line of a failed command's stderr: one line, last, with no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


# --- 3. result appends are all or nothing, start on a fresh line, set a cut tail aside ------


def test_append_on_a_full_disk_leaves_the_file_as_it_was(tmp_path, full_disk):
    path = tmp_path / "results" / "knn.jsonl"
    append_records(path, _records(2))
    before = path.read_bytes()
    full_disk(tmp_path, free=30)  # part of the next batch fits, then the disk is full
    with pytest.raises(UserError, match=r"knn\.jsonl: No space left on device"):
        append_records(path, _records(3, start=2))
    assert path.read_bytes() == before
    assert [r["value"] for r in read_records(path)] == [0.0, 1.0]


def test_append_after_a_cut_last_line_sets_it_aside_instead_of_gluing(tmp_path, capsys):
    path = tmp_path / "knn.jsonl"
    append_records(path, _records(1))
    cut = json.dumps(_records(1, start=7)[0])[:25].encode()
    with open(path, "ab") as fh:
        fh.write(cut)  # what a killed or out-of-space write leaves
    append_records(path, _records(1, start=1))
    assert [r["value"] for r in read_records(path)] == [0.0, 1.0]
    assert path.with_name("knn.jsonl.corrupt").read_bytes() == cut + b"\n"
    assert "last line was cut" in capsys.readouterr().err


def test_append_after_a_whole_record_without_newline_keeps_it(tmp_path):
    path = tmp_path / "knn.jsonl"
    path.write_text(json.dumps(_records(1)[0]))  # e.g. written by hand or another tool
    append_records(path, _records(1, start=1))
    assert [r["value"] for r in read_records(path)] == [0.0, 1.0]
    assert not path.with_name("knn.jsonl.corrupt").exists()


def test_reading_skips_a_cut_last_line_with_a_warning(tmp_path, capsys):
    path = tmp_path / "knn.jsonl"
    append_records(path, _records(2))
    with open(path, "ab") as fh:
        fh.write(b'{"run": "r", "proto')
    assert [r["value"] for r in read_records(path)] == [0.0, 1.0]
    assert "knn.jsonl:3 is a cut last line" in capsys.readouterr().err
    with open(path, "ab") as fh:
        fh.write(b"\n" + json.dumps(_records(1)[0]).encode() + b"\n")
    with pytest.raises(UserError, match=r"knn\.jsonl:3 is not a JSON record"):
        read_records(path)  # a broken line inside the file is still an error


def test_a_reader_waits_for_an_append_in_progress(tmp_path):
    """Concurrent writer and reader: the reader never sees half an append."""
    import fcntl

    path = tmp_path / "knn.jsonl"
    append_records(path, _records(1))
    line = json.dumps(_records(1, start=1)[0]).encode() + b"\n"
    got: list = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer holding the lock, half-way through
        os.write(fd, line[:20])
        reader = threading.Thread(target=lambda: got.append(read_records(path)))
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive()  # blocked on the lock, not reading a half line
        os.write(fd, line[20:])
    finally:
        os.close(fd)
    reader.join(10)
    assert [r["value"] for r in got[0]] == [0.0, 1.0]


def _append_many(path: str, worker: int) -> None:
    for i in range(40):
        append_records(path, _records(3, start=1000 * worker + 3 * i))


def test_concurrent_appends_from_processes_lose_nothing(tmp_path):
    import multiprocessing

    path = tmp_path / "knn.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    values = sorted(r["value"] for r in read_records(path))
    assert values == sorted(float(1000 * w + i) for w in range(4) for i in range(120))


# --- 7. OS errors are one line naming the path and the cause --------------------------------


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("old")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UserError, match=r"cannot write .*report\.md: No space left on device"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_appending_into_a_read_only_folder_is_one_line(tmp_path, read_only):
    read_only(tmp_path)
    with pytest.raises(UserError, match=r"knn\.jsonl: Read-only file system"):
        append_records(tmp_path / "knn.jsonl", _records(1))


def test_config_that_is_a_folder_is_one_line(run_cli, tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        load_yaml(tmp_path)
    res = run_cli("train", "--config", tmp_path, "--out", tmp_path / "run")
    assert res.code == 2 and str(tmp_path) in _one_line(res.err)


def test_data_folder_without_permission_is_one_line(run_cli, tmp_path, no_permission):
    _solid_folder(tmp_path / "imgs", {"a": 2, "b": 2}, {"a": 1, "b": 1})
    no_permission(tmp_path / "imgs" / "train" / "b")
    res = run_cli(*PIXELS, "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--out", tmp_path / "o")
    assert res.code == 2
    line = _one_line(res.err)
    assert "train/b" in line and "Permission denied" in line


def test_feature_cache_on_a_read_only_folder_is_one_line(run_cli, tmp_path, read_only):
    read_only(tmp_path / "cache")
    res = run_cli(*PIXELS, "--dataset", "synthetic", "--out", tmp_path / "o")
    assert res.code == 2
    line = _one_line(res.err)
    assert "Read-only file system" in line and "--no-cache" in line and "features" in line


def test_an_os_error_escaping_a_command_is_one_line(run_cli, monkeypatch):
    class Unreadable(dict):
        def items(self):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/file")

    monkeypatch.setattr("djepa_bench.data.DATASETS", Unreadable())
    res = run_cli("list", "datasets")
    assert res.code == 2 and _one_line(res.err).startswith("error: /some/file: Permission denied")


# --- 5. outputs and references are checked before the work; late failures keep results -----


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if eval gets as far as extracting features or corrupting images."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr("djepa_bench.feature_cache.FeatureSource._load_or_extract", forbidden)
    monkeypatch.setattr("djepa_bench.eval_protocols.robustness._corrupted_features", forbidden)


def test_eval_out_that_is_a_file_fails_before_the_work(run_cli, tmp_path, no_work):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    res = run_cli(*PIXELS, "--dataset", "synthetic", "--out", out)
    assert res.code == 2 and "is a file" in _one_line(res.err)
    assert out.read_text() == "mine"


def test_eval_out_read_only_fails_before_the_work(run_cli, tmp_path, read_only, no_work):
    out = tmp_path / "results"
    out.mkdir()
    read_only(out)
    res = run_cli(*PIXELS, "--dataset", "synthetic", "--out", out)
    assert res.code == 2
    line = _one_line(res.err)
    assert str(out) in line and "Read-only file system" in line


@pytest.mark.parametrize("baseline", ["missing", "other-classifier"])
def test_robustness_baseline_is_checked_before_any_corruption(run_cli, tmp_path, no_work, baseline):
    base = tmp_path / "base"
    if baseline == "other-classifier":
        ident = RunIdentity("base", "ijepa", 0, "abc")
        params = {"corruption": "fog", "severity": 1, "classifier": "knn", "param_set": "cifar",
                  "source": "generated", "test_images": 200}  # fmt: skip
        record = make_record(ident, dataset="synthetic", split="test", protocol="robustness",
                             metric="top1", value=50.0, params=params)  # fmt: skip
        append_records(base / "results" / "robustness.jsonl", [record])
    res = run_cli("eval", "--model", "pixels", "--dataset", "synthetic", "--protocol",
                  "robustness", "--corruptions", "fog", "--severities", "1", "--baseline",
                  base, "--set", "eval.robustness.classifiers=linear",
                  "--out", tmp_path / "o")  # fmt: skip
    assert res.code == 2 and f"baseline {base}" in _one_line(res.err)


def test_records_of_a_late_write_failure_are_kept(run_cli, tmp_path, monkeypatch, full_disk):
    import tempfile

    fallback = tmp_path / "fallback"
    fallback.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fallback))
    out = tmp_path / "o"
    out.mkdir()
    full_disk(out, free=10)  # the disk fills up while the protocol runs
    res = run_cli(*PIXELS, "--dataset", "synthetic", "--out", out)
    assert res.code == 2
    line = _one_line(res.err)
    assert "No space left on device" in line
    (kept,) = fallback.glob("*.jsonl")
    assert str(kept) in line
    records = read_records(kept)
    assert {r["metric"] for r in records} == {"top1", "top5"} and records[0]["protocol"] == "knn"
    assert not (out / "knn.jsonl").exists() or (out / "knn.jsonl").read_bytes() == b""


# --- 2. class-mismatched image folders ----------------------------------------------------

COLOURS = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}


def _solid_folder(root: Path, train: dict, test: dict, size: int = 8) -> None:
    """An image folder whose classes are solid colours (trivially separable)."""
    for split, counts in (("train", train), ("test", test)):
        for cls, n in counts.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.full((size, size, 3), COLOURS[cls], dtype=np.uint8)
                pixels[0, 0] = i  # distinct files
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.parametrize("size", [8, 100], ids=["in-memory", "on-disk"])
def test_test_split_uses_the_train_class_index(tmp_path, size):
    root = tmp_path / "imgs"
    _solid_folder(root, {"a": 2, "b": 2, "c": 2}, {"b": 2, "c": 1}, size=size)
    test = load_dataset(f"imagefolder:{root}", "test", cache_dir=tmp_path / "c")
    assert test.classes == ["a", "b", "c"]
    assert test.labels.tolist() == [1, 1, 2]


def test_knn_on_a_test_split_missing_a_class_is_right(run_cli, tmp_path):
    root = tmp_path / "imgs"
    _solid_folder(root, {"a": 3, "b": 3, "c": 3}, {"b": 2, "c": 2})
    res = run_cli(*PIXELS, "--dataset", f"imagefolder:{root}", "--out", tmp_path / "o")
    assert res.code == 0, res.err
    (top1,) = [r for r in read_records(tmp_path / "o" / "knn.jsonl") if r["metric"] == "top1"]
    assert top1["value"] == 100.0


def test_a_test_class_unseen_in_train_is_an_error(tmp_path):
    root = tmp_path / "imgs"
    _solid_folder(root, {"a": 2, "b": 2}, {"a": 1, "c": 1})
    with pytest.raises(UserError, match=r"test has class folders that train lacks \(c\)"):
        load_dataset(f"imagefolder:{root}", "test", cache_dir=tmp_path / "cache")


# --- 9. a corrupt image read by a DataLoader worker -----------------------------------------


def test_corrupt_image_in_a_worker_is_one_line_naming_the_file(run_cli, tmp_path):
    root = tmp_path / "big"
    _solid_folder(root, {"a": 2, "b": 2}, {"a": 2, "b": 2}, size=100)
    victim = root / "test" / "b" / "1.png"
    victim.write_bytes(victim.read_bytes()[:60])
    # evaluation reads on-disk images with 2 DataLoader workers
    res = run_cli(*PIXELS, "--dataset", f"imagefolder:{root}", "--out", tmp_path / "o")
    assert res.code == 2
    line = _one_line(res.err)
    assert f"cannot read image {victim}: " in line and "DataLoader" not in line


# --- 8. checkpoints that pass the format check but are malformed -----------------------------


def _edited_copy(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    ckpt = torch.load(dest / "checkpoint.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dest / "checkpoint.pt")
    return dest


@pytest.mark.parametrize("key", ["target_encoder", "config"])
def test_eval_of_a_checkpoint_missing_a_key_is_one_line(run_cli, tmp_path, tiny_runs, key):
    run = _edited_copy(tiny_runs["djepa"], tmp_path / "run", lambda c: c.pop(key))
    res = run_cli("eval", "--ckpt", run, "--set", "eval.knn.k=[1]")
    assert res.code == 2
    assert f"has no {key}" in _one_line(res.err)


def test_resume_of_a_checkpoint_without_optimizer_is_one_line(run_cli, tmp_path, tiny_runs):
    run = _edited_copy(tiny_runs["ijepa"], tmp_path / "run", lambda c: c.pop("optimizer"))
    res = run_cli("train", "--resume", "--out", run)
    assert res.code == 2
    assert "has no optimizer" in _one_line(res.err)


def _bigger_model(ckpt: dict) -> None:
    assert ckpt["config"]["model"]["embed_dim"] == 32  # quick_config's width
    ckpt["config"]["model"]["embed_dim"] = 64


def test_eval_of_weights_not_matching_their_config_is_one_line(run_cli, tmp_path, tiny_runs):
    run = _edited_copy(tiny_runs["djepa"], tmp_path / "run", _bigger_model)
    res = run_cli("eval", "--ckpt", run, "--set", "eval.knn.k=[1]")
    assert res.code == 2
    line = _one_line(res.err)
    assert "target_encoder does not fit the model its config describes" in line


def test_resume_of_weights_not_matching_their_config_is_one_line(run_cli, tmp_path, tiny_runs):
    run = _edited_copy(tiny_runs["ijepa"], tmp_path / "run", _bigger_model)
    saved = (run / "config.yaml").read_text()
    assert "embed_dim: 32" in saved
    (run / "config.yaml").write_text(saved.replace("embed_dim: 32", "embed_dim: 64"))
    res = run_cli("train", "--resume", "--out", run)
    assert res.code == 2
    assert "does not fit the model its config describes" in _one_line(res.err)
