"""The dataset registry: named datasets, their statistics, and how each split is loaded."""

from __future__ import annotations

import difflib
import gzip
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from djepa_bench.data.cache import cache_key, default_cache_dir, default_data_root
from djepa_bench.data.folder import class_folders, load_folder_tensor
from djepa_bench.data.split import ImageSplit
from djepa_bench.errors import UserError
from djepa_bench.io import describe_os_error, os_errors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


@dataclass(frozen=True)
class DatasetSpec:
    """What a named dataset is: classes, native size, channels and normalisation."""

    name: str
    description: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_download: bool
    loader: Callable[[DatasetSpec, str, Path, bool, Path], ImageSplit]


def _split(
    spec: DatasetSpec,
    split: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    source: str,
) -> ImageSplit:
    return ImageSplit(
        name=spec.name,
        split=split,
        classes=classes,
        labels=labels.long(),
        mean=spec.mean,
        std=spec.std,
        image_size=int(images.shape[-1]),
        channels=int(images.shape[1]),
        images=images,
        source=source,
    )


# --- embedded and synthetic data -------------------------------------------------------


def _load_digits(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    """scikit-learn's 8x8 digits, upsampled to 16x16, fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=spec.image_size, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=0.2, stratify=digits.target, random_state=0
    )
    chosen = torch.from_numpy(np.sort(train_idx if split == "train" else test_idx))
    classes = [str(i) for i in range(10)]
    return _split(spec, split, images[chosen], labels[chosen], classes, "sklearn.load_digits")


def synthetic_images(
    n: int, num_classes: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural images whose class is learnable: oriented colour gratings plus noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    angle = labels.float() * (torch.pi / num_classes)
    freq = 1.5 + (labels % 3).float()
    phase = torch.rand(n, generator=gen) * 2 * torch.pi
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    wave = torch.sin(torch.pi * freq[:, None, None] * proj + phase[:, None, None])
    # A distinct base colour per class (points on a colour wheel) plus the grating.
    turn = labels.float()[:, None] / num_classes + torch.tensor([0.0, 1 / 3, 2 / 3])
    colour = 0.5 + 0.25 * torch.cos(2 * torch.pi * turn)
    images = colour[:, :, None, None] + 0.25 * wave[:, None]
    images = images + 0.08 * torch.randn(images.shape, generator=gen)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def _load_synthetic(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    n, seed = (1000, 0) if split == "train" else (200, 1)
    images, labels = synthetic_images(n, spec.num_classes, spec.image_size, seed)
    classes = [f"class{i}" for i in range(spec.num_classes)]
    return _split(spec, split, images, labels, classes, "synthetic")


# --- torchvision datasets ---------------------------------------------------------------


def _missing(spec: DatasetSpec, root: Path, looked_for: str) -> UserError:
    return UserError(
        f"{spec.name}: no data found under {root} (looked for {looked_for}); "
        f"pass --download to fetch it, or --data-root DIR where it already is"
    )


def _torchvision(spec: DatasetSpec, split: str, root: Path, download: bool, build, looked_for):
    try:
        return build(str(root), download)
    except RuntimeError as err:
        if "not found" in str(err).lower() or "download" in str(err).lower():
            raise _missing(spec, root, looked_for) from None
        raise
    except FileNotFoundError:
        if download:
            raise
        raise _missing(spec, root, looked_for) from None
    except OSError as err:
        if download and err.filename is None:  # a network error, not one of a local file
            raise UserError(f"{spec.name}: download failed ({err}); check the network") from None
        raise UserError(describe_os_error(err, doing="read")) from None


def _cifar_jpeg_dir(root: Path, cache: Path) -> Path | None:
    """Find the JPEG layout cifar10/{train,test}/<class>, extracting the archive once."""
    for candidate in (root / "cifar10", root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    archive = root / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        return None
    stat = archive.stat()
    target = cache / "extracted" / f"cifar10-jpeg-{cache_key(archive.resolve(), stat.st_size)}"
    done = target / ".complete"
    if not done.exists():
        with os_errors(target, f"extract {archive} into"):
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            done.touch()
    return target / "cifar10"


def _load_cifar10(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    """torchvision's CIFAR-10 files, or the JPEG folder layout (or its .tar.gz) under root."""
    if not download and not (root / "cifar-10-batches-py").is_dir():
        jpeg_dir = _cifar_jpeg_dir(root, cache)
        if jpeg_dir is not None:
            images, _, classes, labels, _ = load_folder_tensor(
                jpeg_dir / split, "cifar10", split, cache, classes=CIFAR10_CLASSES
            )
            return _split(spec, split, images, labels, classes, str(jpeg_dir))
    from torchvision.datasets import CIFAR10

    ds = _torchvision(
        spec,
        split,
        root,
        download,
        lambda r, d: CIFAR10(r, train=split == "train", download=d),
        f"{root}/cifar-10-batches-py, {root}/cifar10/<split>/<class>/*.jpg "
        f"or {root}/cifar10-jpeg.tar.gz",
    )
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return _split(spec, split, images, torch.tensor(ds.targets), list(ds.classes), str(root))


def _load_cifar100(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    from torchvision.datasets import CIFAR100

    ds = _torchvision(
        spec,
        split,
        root,
        download,
        lambda r, d: CIFAR100(r, train=split == "train", download=d),
        f"{root}/cifar-100-python",
    )
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return _split(spec, split, images, torch.tensor(ds.targets), list(ds.classes), str(root))


def _load_stl10(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    from torchvision.datasets import STL10

    ds = _torchvision(
        spec,
        split,
        root,
        download,
        lambda r, d: STL10(r, split="train" if split == "train" else "test", download=d),
        f"{root}/stl10_binary",
    )
    images = torch.from_numpy(ds.data).contiguous()
    return _split(spec, split, images, torch.from_numpy(ds.labels), list(ds.classes), str(root))


def _load_svhn(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    from torchvision.datasets import SVHN

    ds = _torchvision(
        spec,
        split,
        root,
        download,
        lambda r, d: SVHN(r, split="train" if split == "train" else "test", download=d),
        f"{root}/{'train' if split == 'train' else 'test'}_32x32.mat",
    )
    images = torch.from_numpy(ds.data).contiguous()
    classes = [str(i) for i in range(10)]
    return _split(spec, split, images, torch.from_numpy(ds.labels), classes, str(root))


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx(.gz) file of the original MNIST/Fashion-MNIST release."""
    opener = gzip.open if path.suffix == ".gz" else open
    with os_errors(path, "read"), opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _find_idx_files(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for d in dirs:
        for suffix in (".gz", ""):
            images = d / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = d / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def _load_fashion_mnist(spec: DatasetSpec, split: str, root: Path, download: bool, cache: Path):
    """Original idx files (Debian's dataset-fashion-mnist or root), else torchvision."""
    dirs = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    found = None if download else _find_idx_files(split, dirs)
    if found is not None:
        images = torch.from_numpy(_read_idx(found[0]).copy())[:, None]
        labels = torch.from_numpy(_read_idx(found[1]).astype(np.int64))
        return _split(spec, split, images, labels, FASHION_CLASSES, str(found[0].parent))
    from torchvision.datasets import FashionMNIST

    ds = _torchvision(
        spec,
        split,
        root,
        download,
        lambda r, d: FashionMNIST(r, train=split == "train", download=d),
        f"{root}/FashionMNIST/raw or {DEBIAN_FASHION_MNIST} "
        "(apt-get install dataset-fashion-mnist)",
    )
    return _split(
        spec, split, ds.data[:, None].contiguous(), ds.targets, FASHION_CLASSES, str(root)
    )


# --- the registry -----------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("digits", "scikit-learn 8x8 digits to 16x16 (embedded, offline default)",
                    10, 16, 1, (0.3,), (0.38,), False, _load_digits),
        DatasetSpec("synthetic", "procedural colour gratings, 10 learnable classes (for tests)",
                    10, 16, 3, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), False, _load_synthetic),
        DatasetSpec("cifar10", "CIFAR-10, 32x32, 50k/10k (torchvision files or the JPEG folders)",
                    10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True,
                    _load_cifar10),
        DatasetSpec("cifar100", "CIFAR-100, 32x32, 50k/10k (torchvision)",
                    100, 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True,
                    _load_cifar100),
        DatasetSpec("stl10", "STL-10 labelled split, 96x96, 5k/8k (torchvision)",
                    10, 96, 3, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), True,
                    _load_stl10),
        DatasetSpec("svhn", "SVHN digits, 32x32, 73k/26k (torchvision)",
                    10, 32, 3, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), True,
                    _load_svhn),
        DatasetSpec("fashion-mnist", "Fashion-MNIST, 28x28 grey, 60k/10k (idx or torchvision)",
                    10, 28, 1, (0.2860,), (0.3530,), True, _load_fashion_mnist),
    ]
}  # fmt: skip

IMAGEFOLDER_PREFIX = "imagefolder:"


def dataset_names() -> list[str]:
    """All registered names, plus the `imagefolder:<path>` form."""
    return [*DATASETS, IMAGEFOLDER_PREFIX + "<path>"]


def get_spec(name: str) -> DatasetSpec:
    """The registered spec for `name`, or a one-line error with the closest names."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, list(DATASETS), n=3)
    hint = (
        f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(dataset_names())}"
    )
    raise UserError(f"unknown dataset '{name}'; {hint}")


def _load_imagefolder(path: Path, split: str, cache: Path) -> ImageSplit:
    if not path.is_dir():
        raise UserError(f"image folder not found: {path}; expected {path}/train and {path}/test")
    split_dir = path / split
    if split == "test" and not split_dir.is_dir() and (path / "val").is_dir():
        split_dir = path / "val"
    if not split_dir.is_dir():
        raise UserError(f"image folder {path} has no '{split}/' subfolder (nor 'val/' for test)")
    name = IMAGEFOLDER_PREFIX + str(path)
    # One class index for both splits, the training split's: test labels mean the same.
    train_classes = class_folders(path / "train") if (path / "train").is_dir() else None
    images, files, classes, labels, size = load_folder_tensor(
        split_dir, path.name, split, cache, classes=train_classes
    )
    if images is None:
        channels, mean, std = 3, IMAGENET_MEAN, IMAGENET_STD
    else:
        channels = int(images.shape[1])
        mean, std = _stats(images)
    return ImageSplit(
        name=name,
        split=split,
        classes=classes,
        labels=labels,
        mean=mean,
        std=std,
        image_size=size,
        channels=channels,
        images=images,
        files=files,
        source=str(split_dir),
    )


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = images[:: max(1, len(images) // 5000)].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def load_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    cache_dir: str | Path | None = None,
) -> ImageSplit:
    """Load split 'train' or 'test' of a named dataset or `imagefolder:<path>`."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split '{split}'; use train or test")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name.startswith(IMAGEFOLDER_PREFIX):
        path = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        return _load_imagefolder(path, split, cache)
    spec = get_spec(name)
    data_root = Path(root).expanduser() if root else default_data_root()
    return spec.loader(spec, split, data_root, download, cache)
