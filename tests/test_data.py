"""Data layer: embedded digits, synthetic data, image folders, batching and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from djepa_bench.data import get_spec, iterate_batches, load_dataset
from djepa_bench.errors import UserError


def test_digits_shapes_classes_and_split_sizes():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.images.shape == (1437, 1, 16, 16)
    assert test.images.shape == (360, 1, 16, 16)
    assert train.images.dtype == torch.uint8
    assert train.num_classes == 10
    # Stratified: every class in both splits, in proportion.
    assert train.labels.bincount().min() >= 139
    assert test.labels.bincount().min() >= 35
    assert train.images.max() > 200  # scaled to the full 0-255 range


def test_digits_are_deterministic():
    a = load_dataset("digits", "test")
    b = load_dataset("digits", "test")
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)


def test_synthetic_classes_are_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression

    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    model = LogisticRegression(max_iter=300).fit(
        train.images.flatten(1).float().numpy() / 255, train.labels.numpy()
    )
    accuracy = model.score(test.images.flatten(1).float().numpy() / 255, test.labels.numpy())
    assert accuracy > 0.5  # ten classes: chance is 0.1


def test_training_batches_are_seeded_augmented_and_normalised():
    data = load_dataset("synthetic", "train")

    def first_batch(seed):
        gen = torch.Generator().manual_seed(seed)
        return next(iterate_batches(data, 64, train=True, generator=gen, image_size=12))

    x1, y1 = first_batch(0)
    x2, y2 = first_batch(0)
    x3, _ = first_batch(1)
    assert x1.shape == (64, 3, 12, 12) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert abs(x1.mean().item()) < 1.0  # normalised, not 0-255


def test_eval_batches_cover_the_split_in_order():
    data = load_dataset("digits", "test")
    labels = torch.cat([y for _, y in iterate_batches(data, 100)])
    assert torch.equal(labels, data.labels)


def _write_folder(root, sizes=(8, 8), per_class=3, classes=("a", "b"), fmt="PNG"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (*sizes, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{fmt.lower()}", fmt)


def test_imagefolder_small_images_become_a_tensor(tmp_path):
    _write_folder(tmp_path / "imgs")
    data = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "train", cache_dir=tmp_path / "c")
    assert data.in_memory and data.images.shape == (6, 3, 8, 8)
    assert data.classes == ["a", "b"]
    expected = np.asarray(Image.open(tmp_path / "imgs/train/b/2.png"))
    assert np.array_equal(data.images[5].permute(1, 2, 0).numpy(), expected)
    again = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "train", cache_dir=tmp_path / "c")
    assert torch.equal(data.images, again.images)
    assert list((tmp_path / "c" / "tensors").glob("*.pt"))


def test_imagefolder_large_images_are_read_per_batch(tmp_path):
    _write_folder(tmp_path / "big", sizes=(120, 120), per_class=2)
    data = load_dataset(f"imagefolder:{tmp_path / 'big'}", "test", cache_dir=tmp_path / "c")
    assert not data.in_memory and len(data.files) == 4
    batches = list(iterate_batches(data, 3, image_size=64, num_workers=0))
    assert [x.shape[0] for x, _ in batches] == [3, 1]
    assert batches[0][0].shape[1:] == (3, 64, 64)


def test_imagefolder_bad_input_messages(tmp_path):
    with pytest.raises(UserError, match="image folder not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}", "train")
    _write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "train", cache_dir=tmp_path / "c")
    (tmp_path / "imgs" / "train" / "empty").rmdir()
    (tmp_path / "imgs" / "train" / "a" / "9.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"cannot read image .*9\.png"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "train", cache_dir=tmp_path / "c")


def test_truncated_jpeg_names_the_file(tmp_path):
    _write_folder(tmp_path / "imgs", fmt="JPEG")
    victim = tmp_path / "imgs" / "test" / "a" / "1.jpeg"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(UserError, match=r"cannot read image .*1\.jpeg"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "test", cache_dir=tmp_path / "c")


def test_unknown_dataset_and_missing_root():
    with pytest.raises(UserError, match="did you mean cifar10"):
        get_spec("cifar-10")
    with pytest.raises(UserError, match=r"no data found under /nonexistent.*--download"):
        load_dataset("cifar100", "train", root="/nonexistent")


def test_prepare_data_cli_reports_and_fails_cleanly(run_cli, tmp_path):
    ok = run_cli("prepare-data", "digits")
    assert ok.code == 0 and "digits train: 1437 images, 10 classes" in ok.out
    bad = run_cli("prepare-data", "stl10", "--data-root", tmp_path)
    assert bad.code == 2
    assert bad.err.startswith("error: stl10: no data found") and bad.err.count("\n") == 1
    assert "Traceback" not in bad.err
    unknown = run_cli("prepare-data", "imagenet")
    assert unknown.code == 2 and "unknown dataset 'imagenet'" in unknown.err
