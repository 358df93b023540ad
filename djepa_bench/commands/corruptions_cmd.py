"""`djepa-bench corruptions-grid`: a labelled picture of every corruption at chosen severities."""

from __future__ import annotations

from pathlib import Path

import typer

from djepa_bench.errors import UserError


def _indices(text: str, n: int) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--index expects image numbers like 0,5,9, got '{text}'") from None
    if not values:
        raise UserError("--index is empty; give e.g. 0 or 0,5,9")
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        raise UserError(f"--index {bad[0]} is outside the test split (0..{n - 1})")
    return values


def load_images(dataset: str, data_root: Path | None, split: str, indices: str):
    """(uint8 images (K, C, H, W), their indices, class names of each) from an in-memory split."""
    import torch

    from djepa_bench.data import load_dataset

    data = load_dataset(dataset, split, data_root)
    chosen = _indices(indices, len(data))
    if data.in_memory:
        images = data.images[chosen]
    else:
        from djepa_bench.data.folder import image_to_uint8_tensor, read_image

        tensors = [image_to_uint8_tensor(read_image(data.files[i], data.channels)) for i in chosen]
        if len({tuple(t.shape) for t in tensors}) > 1:
            raise UserError("the chosen images differ in size; pick images of one size")
        images = torch.stack(tensors)
    names = [data.classes[int(data.labels[i])] for i in chosen]
    return images, chosen, names


def draw_grid(
    images,
    indices: list[int],
    class_names: list[str],
    corruptions: list[str],
    severities: list[int],
    seed: int,
    param_set: str,
    out: Path,
    title: str,
) -> Path:
    """Rows: corruptions; columns: per image, the clean image then each severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from djepa_bench.eval_protocols.corruptions import corrupt, resolve_param_set
    from djepa_bench.io import atomic_write

    chosen = resolve_param_set(param_set, max(images.shape[-2:]))
    index = torch.tensor(indices)
    columns = [(k, s) for k in range(len(indices)) for s in [0, *severities]]
    rows = len(corruptions)
    cell = 1.1
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(1.6 + cell * len(columns), 0.8 + cell * rows), squeeze=False
    )
    cache = {s: None for s in severities}
    for r, name in enumerate(corruptions):
        for s in severities:
            cache[s] = corrupt(images, name, s, seed=seed, indices=index, param_set=chosen)
        for c, (k, s) in enumerate(columns):
            image = images[k] if s == 0 else cache[s][k]
            ax = axes[r][c]
            array = image.permute(1, 2, 0).numpy()
            if array.shape[2] == 1:
                ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(array, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                label = f"#{indices[k]} {class_names[k]}" if s == 0 else f"severity {s}"
                ax.set_title(label, fontsize=7)
            if c == 0:
                ax.set_ylabel(
                    name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center"
                )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".").lower() or "png"
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=110))
    plt.close(fig)
    return out


def corruptions_grid(
    dataset: str = typer.Option(
        "digits",
        "--dataset",
        "-d",
        help="Dataset whose test images are shown (digits, cifar10, ...).",
    ),
    out: Path = typer.Option(Path("corruptions.png"), "--out", "-o", help="Image file to write."),
    corruptions: str = typer.Option(
        "all",
        "--corruptions",
        "-c",
        help="Names or families, comma-separated: all, common (the 15), extra (the 4 others), "
        "ImageNet-C's families noise, blur, weather (with brightness), digital, or names like "
        "gaussian_noise,fog.",
    ),
    severities: str = typer.Option(
        "1,2,3,4,5", "--severities", help="Severities to show, e.g. 1,3,5."
    ),
    index: str = typer.Option("0", "--index", help="Test images to show, e.g. 0 or 0,7,42."),
    seed: int = typer.Option(0, "--seed", help="Corruption seed."),
    params: str = typer.Option(
        "auto",
        "--params",
        help="Parameter set: auto (CIFAR-10-C up to 64 px, else ImageNet-C), cifar or imagenet.",
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Folder holding the dataset files (e.g. ../shared/data)."
    ),
) -> None:
    """Draw test images under every chosen corruption and severity into one labelled grid."""
    from djepa_bench.eval_protocols.corruptions import (
        resolve_corruptions,
        resolve_param_set,
        resolve_severities,
    )

    names = resolve_corruptions(corruptions)
    levels = resolve_severities(severities)
    images, chosen, class_names = load_images(dataset, data_root, "test", index)
    param_set = resolve_param_set(params, max(images.shape[-2:]))
    title = f"{dataset} test images, {len(names)} corruptions, {param_set} parameters (seed {seed})"
    path = draw_grid(images, chosen, class_names, names, levels, seed, param_set, out, title)
    typer.echo(f"wrote {path} ({len(names)} corruptions x severities {levels})")


def register(app: typer.Typer) -> None:
    app.command("corruptions-grid")(corruptions_grid)
