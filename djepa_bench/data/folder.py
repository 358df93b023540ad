"""Image folders (`<root>/<split>/<class>/*.jpg`): listing, checked decoding and tensor caching."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from djepa_bench.data.cache import cache_key, load_cached, save_cached, tensor_cache_path
from djepa_bench.errors import UserError
from djepa_bench.io import os_errors

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
SMALL_IMAGE_MAX = 96  # images up to this size are decoded once into a uint8 tensor


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of one split (hidden folders left out)."""
    with os_errors(split_dir, "list"):
        return sorted(
            d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
        )


def list_image_folder(
    split_dir: Path, classes: list[str] | None = None
) -> tuple[list[str], list[str], list[int]]:
    """Return (classes, files, labels) of a class-per-folder tree; errors on empty classes.

    `classes` fixes the class index (the train split's classes, so that a test split
    numbers its labels the same way even when it lacks some of them); a class folder not
    among them is an error. Without it the split's own folders define the index.
    """
    if not split_dir.is_dir():
        raise UserError(f"image folder not found: {split_dir}")
    present = class_folders(split_dir)
    if not present:
        raise UserError(f"no class folders in {split_dir}; expected {split_dir}/<class>/<image>")
    if classes is None:
        classes = present
    unknown = [c for c in present if c not in classes]
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise UserError(
            f"{split_dir} has class folders that train lacks ({shown}); a classifier trained "
            "on train cannot label them: add them to train or remove them"
        )
    index = {cls: label for label, cls in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for cls in present:
        with os_errors(split_dir / cls, "list"):
            found = sorted(
                str(p) for p in (split_dir / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        if not found:
            raise UserError(
                f"class folder {split_dir / cls} holds no images; remove it or add some"
            )
        files.extend(found)
        labels.extend([index[cls]] * len(found))
    return list(classes), files, labels


def read_image(path: str, channels: int = 3) -> Image.Image:
    """Open and fully decode one image, with a one-line error naming an unreadable file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {_reason(err)}") from None


def _reason(err: Exception) -> str:
    """The cause of a failed image read in a few words (an OSError's strerror, else its text)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def image_to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W)."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def probe_size(path: str) -> tuple[int, int]:
    """(width, height) of an image without decoding all of it."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path}: {_reason(err)}") from None


def decode_files(files: list[str], size: int, channels: int = 3, threads: int = 4) -> torch.Tensor:
    """Decode images into one uint8 tensor (N, C, size, size); all must have that size."""

    def one(path: str) -> torch.Tensor:
        img = read_image(path, channels)
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return image_to_uint8_tensor(img)

    out = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, tensor in enumerate(pool.map(one, files, chunksize=256)):
            out[i] = tensor
    return out


def folder_fingerprint(files: list[str]) -> str:
    """Cache key of a file list: paths, sizes and modification times."""
    total = 0
    latest = 0.0
    for f in files:
        with os_errors(f, "read"):
            st = Path(f).stat()
        total += st.st_size
        latest = max(latest, st.st_mtime)
    return cache_key(len(files), files[0], files[-1], total, latest)


def load_folder_tensor(
    split_dir: Path,
    name: str,
    split: str,
    cache_dir: Path,
    channels: int = 3,
    classes: list[str] | None = None,
) -> tuple[torch.Tensor | None, list[str], list[str], torch.Tensor, int]:
    """Return (images or None, files, classes, labels, size) for an image folder split.

    `classes` fixes the class index (see `list_image_folder`). Small images are decoded
    once and cached under `cache_dir`; large ones return None and are read by a
    DataLoader later.
    """
    classes, files, labels = list_image_folder(split_dir, classes)
    width, height = probe_size(files[0])
    size = max(width, height)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    if size > SMALL_IMAGE_MAX:
        return None, files, classes, label_tensor, size
    key = cache_key(folder_fingerprint(files), size, channels)
    path = tensor_cache_path(cache_dir, name, split, key)
    cached = load_cached(path)
    if cached is not None and cached["images"].shape[0] == len(files):
        return cached["images"], files, classes, label_tensor, size
    images = decode_files(files, size, channels)
    save_cached(path, images, label_tensor, classes)
    return images, files, classes, label_tensor, size
