"""`djepa-bench prepare-data`: decode a dataset once into the tensor cache and summarise it."""

from __future__ import annotations

from pathlib import Path

import typer


def prepare_data(
    dataset: str = typer.Argument(..., help="Dataset name (see `djepa-bench list datasets`)."),
    data_root: Path | None = typer.Option(
        None,
        "--data-root",
        help="Folder holding the dataset files (default: $DJEPA_DATA_ROOT or "
        "~/.cache/djepa-bench/data).",
    ),
    download: bool = typer.Option(
        False, "--download", help="Download the dataset with torchvision if it is missing."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where decoded tensors are cached (default: $DJEPA_CACHE_DIR, ~/.cache/djepa-bench).",
    ),
) -> None:
    """Load (and cache) both splits of a dataset, then print sizes, classes and pixel means."""
    from djepa_bench.data import load_dataset

    for split in ("train", "test"):
        data = load_dataset(dataset, split, data_root, download, cache_dir)
        counts = data.labels.bincount(minlength=data.num_classes).tolist()
        line = (
            f"{data.name} {split}: {len(data)} images, {data.num_classes} classes "
            f"(per class {min(counts)}-{max(counts)}), {data.channels}x{data.image_size}px"
        )
        if data.in_memory:
            means = data.images.float().mean(dim=(0, 2, 3)).tolist()
            line += ", channel means (0-255) " + ", ".join(f"{m:.1f}" for m in means)
        else:
            line += ", read from disk per batch"
        typer.echo(line + f"  [{data.source}]")


def register(app: typer.Typer) -> None:
    app.command("prepare-data")(prepare_data)
