"""Fidelity of the 19 corruptions: our mean absolute change / the official generator's.

For every image set in tests/data/corruption_reference.json (crops of scikit-learn's two
sample photos at 32 px with the CIFAR-10-C parameters and at 224 px with the ImageNet-C
parameters; every 20th CIFAR-10 test image where the data is), prints per corruption the
ratio ours / official of the mean absolute change at severities 1-5, both trends
('+' rises, '-' falls, '=' within 3%) and whether every ratio is within 0.9-1.1. Ours is
measured with as many draws per image as the reference used (or --draws).

    .venv/bin/python benchmarks/corruption_fidelity.py [--sets photos32,photos224,cifar10_test]
        [--data-root ../shared/data] [--draws N | --max-draws N] [--device cpu] [--threads 2]

On a CPU the 224 px set with the reference's draws takes a while; --max-draws 4 is a
quicker, noisier look.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.corruptions import REGISTRY
from djepa_bench.eval_protocols.corruptions.fidelity import (
    BOUNDS,
    compare,
    image_set,
    load_reference,
    reference_draws,
    trend_marks,
)

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "corruption_reference.json"


def _draws(ref: dict, name: str, args: argparse.Namespace) -> int:
    draws = args.draws or reference_draws(ref, name)
    return min(draws, args.max_draws) if args.max_draws else draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="photos32,photos224,cifar10_test")
    parser.add_argument("--data-root", default="../shared/data", help="folder with CIFAR-10")
    parser.add_argument("--corruptions", default="", help="comma-separated; default all 19")
    parser.add_argument("--draws", type=int, default=0, help="draws per image (0: as the ref)")
    parser.add_argument(
        "--max-draws", type=int, default=0, help="at most this many draws per image (0: no cap)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = load_reference(REFERENCE)
    names = [n for n in args.corruptions.split(",") if n] or None
    failures = 0
    for set_name in [s for s in args.sets.split(",") if s]:
        ref = reference["sets"][set_name]
        try:
            images = image_set(set_name, args.data_root)
        except UserError as err:
            print(f"\n{set_name}: skipped ({err})")
            continue
        draws = args.draws or "as the reference's"
        draws = f"{draws} (at most {args.max_draws})" if args.max_draws else draws
        print(
            f"\n{set_name}: {images.shape[0]} images {images.shape[-1]} px, "
            f"{ref['param_set']} parameters, draws per image: {draws} "
            f"(reference: {ref['draws_per_image']}); ratio ours / official mean change"
        )
        header = "".join(f"{f's{s}':>6s}" for s in range(1, 6))
        print(f"{'corruption':18s} {header}   trend ours/official")
        start = time.perf_counter()
        rows = (
            compare(images, ref, [name], _draws(ref, name, args), args.device)[0]
            for name in names or list(ref["mean_change"])
        )
        for row in rows:
            note = "" if row.within and row.trend_ok else "   <-- outside 0.9-1.1 or trend"
            sub = REGISTRY[row.corruption].substitute
            note += f"   ({sub})" if sub else ""
            failures += not (row.within and row.trend_ok)
            ratios = "".join(f"{r:6.3f}" for r in row.ratios)
            marks = f"{trend_marks(row.ours)}/{trend_marks(row.official)}"
            print(f"{row.corruption:18s} {ratios}   {marks}{note}", flush=True)
        print(f"({time.perf_counter() - start:.0f} s on this machine)")
    verdict = "all within" if failures == 0 else f"{failures} corruption(s) outside"
    print(f"\n{verdict} {BOUNDS[0]}-{BOUNDS[1]} with the official trend")


if __name__ == "__main__":
    main()
