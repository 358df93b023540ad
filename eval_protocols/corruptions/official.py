"""Readers of the published pre-corrupted test sets: CIFAR-10-C / CIFAR-100-C and ImageNet-C.

CIFAR-10-C and CIFAR-100-C ship one `<corruption>.npy` per corruption, uint8
(5 * N, 32, 32, 3) with severities 1..5 stacked in blocks of N (10,000 for the real
sets), and `labels.npy` with the labels of every row (or of one block). ImageNet-C ships
folders `<corruption>/<severity>/<class>/*.JPEG`, optionally grouped one level deeper by
family (`noise/gaussian_noise/1/...`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from djepa_bench.data import ImageSplit
from djepa_bench.data.folder import SMALL_IMAGE_MAX, decode_files, list_image_folder, probe_size
from djepa_bench.errors import UserError


def layout(root: str | Path) -> str:
    """'cifar' when `root` holds <corruption>.npy files, 'imagenet' when it holds folders."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"official corruption data not found: {root} is not a folder")
    if (root / "labels.npy").is_file():
        return "cifar"
    if any(p.is_dir() for p in root.iterdir()):
        return "imagenet"
    raise UserError(
        f"{root} holds neither CIFAR-10-C files (<corruption>.npy + labels.npy) nor "
        "ImageNet-C folders (<corruption>/<severity>/<class>/)"
    )


def available(root: str | Path) -> list[str]:
    """Corruption names present under `root` (either layout), sorted."""
    root = Path(root)
    if layout(root) == "cifar":
        return sorted(p.stem for p in root.glob("*.npy") if p.stem != "labels")
    names = set()
    for child in root.iterdir():
        if not child.is_dir():
            continue
        if any((child / str(s)).is_dir() for s in range(1, 6)):
            names.add(child.name)
        else:  # grouped by family one level deeper
            names.update(
                g.name
                for g in child.iterdir()
                if g.is_dir() and any((g / str(s)).is_dir() for s in range(1, 6))
            )
    return sorted(names)


def _cifar_arrays(root: Path, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    path = root / f"{corruption}.npy"
    if not path.is_file():
        raise UserError(f"{path} not found; the folder has: {', '.join(available(root)) or 'none'}")
    try:
        images = np.load(path, mmap_mode="r")
        labels = np.load(root / "labels.npy", mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} or its labels.npy: {err}") from None
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise UserError(
            f"{path} should be uint8 (5*N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[0] % 5:
        raise UserError(f"{path} has {images.shape[0]} images, not 5 equal severity blocks")
    block = images.shape[0] // 5
    if labels.shape[0] == images.shape[0]:
        labels = labels[(severity - 1) * block : severity * block]
    elif labels.shape[0] != block:
        raise UserError(
            f"labels.npy has {labels.shape[0]} labels for {images.shape[0]} images in {path}"
        )
    return images[(severity - 1) * block : severity * block], np.asarray(labels)


def _imagenet_dir(root: Path, corruption: str, severity: int) -> Path:
    direct = root / corruption / str(severity)
    if direct.is_dir():
        return direct
    for group in (p for p in root.iterdir() if p.is_dir()):
        nested = group / corruption / str(severity)
        if nested.is_dir():
            return nested
    raise UserError(
        f"no folder {corruption}/{severity} under {root}; found corruptions: "
        f"{', '.join(available(root)) or 'none'}"
    )


def official_split(
    root: str | Path, corruption: str, severity: int, like: ImageSplit
) -> ImageSplit:
    """One (corruption, severity) of an official set as an ImageSplit shaped like the clean
    test split `like` (its classes, normalisation and channels)."""
    root = Path(root)
    if not 1 <= int(severity) <= 5:
        raise UserError(f"severity must be 1..5, got {severity}")
    extra = {"corruption": corruption, "severity": int(severity), "official": str(root)}
    if layout(root) == "cifar":
        array, labels = _cifar_arrays(root, corruption, int(severity))
        images = torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).contiguous()
        if images.shape[1] != like.channels:
            raise UserError(
                f"{root}/{corruption}.npy has {images.shape[1]} channels, the dataset "
                f"{like.name} has {like.channels}"
            )
        labels_t = torch.from_numpy(labels.astype(np.int64))
        if int(labels_t.max()) >= like.num_classes:
            raise UserError(
                f"{root}/labels.npy has class {int(labels_t.max())}, but {like.name} has "
                f"{like.num_classes} classes; point --data at the matching dataset"
            )
        return ImageSplit(
            name=like.name, split=f"{corruption}-{severity}", classes=like.classes,
            labels=labels_t, mean=like.mean, std=like.std, image_size=int(images.shape[-1]),
            channels=like.channels, images=images, source=str(root / f"{corruption}.npy"),
            extra=extra,
        )  # fmt: skip
    folder = _imagenet_dir(root, corruption, int(severity))
    classes, files, labels = list_image_folder(folder)
    index = {name: i for i, name in enumerate(like.classes)}
    missing = [c for c in classes if c not in index]
    if missing:
        raise UserError(
            f"class folder '{missing[0]}' in {folder} is not a class of {like.name}; "
            "the official set must use the clean dataset's class names"
        )
    labels_t = torch.tensor([index[classes[i]] for i in labels], dtype=torch.long)
    width, height = probe_size(files[0])
    size = max(width, height)
    images = decode_files(files, size, like.channels) if size <= SMALL_IMAGE_MAX else None
    return ImageSplit(
        name=like.name, split=f"{corruption}-{severity}", classes=like.classes,
        labels=labels_t, mean=like.mean, std=like.std, image_size=size,
        channels=like.channels, images=images, files=None if images is not None else files,
        source=str(folder), extra=extra,
    )  # fmt: skip
