"""Real data: CIFAR-10 from the shared JPEG archive and Debian's Fashion-MNIST idx files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from djepa_bench.data import load_dataset
from djepa_bench.data.sources import CIFAR10_CLASSES, DEBIAN_FASHION_MNIST

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def cifar(cifar10_root):
    return {split: load_dataset("cifar10", split, root=cifar10_root) for split in ("train", "test")}


def test_cifar10_sizes_classes_and_balance(cifar):
    assert cifar["train"].images.shape == (50_000, 3, 32, 32)
    assert cifar["test"].images.shape == (10_000, 3, 32, 32)
    assert cifar["train"].classes == CIFAR10_CLASSES
    assert cifar["train"].labels.bincount().tolist() == [5000] * 10
    assert cifar["test"].labels.bincount().tolist() == [1000] * 10


def test_cifar10_test_channel_means(cifar):
    means = cifar["test"].images.float().mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor([126.0, 123.7, 114.8]), atol=3)


def test_cached_tensor_equals_the_torchvision_imagefolder_path(cifar):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    test = cifar["test"]
    folder = ImageFolder(Path(test.source) / "test")
    assert folder.classes == test.classes
    assert len(folder) == len(test)
    for i in range(0, len(folder), 7):  # every 7th image: ~1,400 decodes
        image, label = folder[i]
        assert label == test.labels[i]
        assert torch.equal(pil_to_tensor(image), test.images[i]), f"image {i} differs"


def test_fashion_mnist_from_debian_idx_files():
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST})")
    train = load_dataset("fashion-mnist", "train", root="/nonexistent")
    test = load_dataset("fashion-mnist", "test", root="/nonexistent")
    assert train.images.shape == (60_000, 1, 28, 28)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
