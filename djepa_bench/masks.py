"""I-JEPA multi-block masks, sampled for a whole batch at once as index tensors.

Per image: one context block (scale 0.85-1.0, aspect 1) and M target blocks (scale
0.15-0.2, aspect 0.75-1.5); target patches are removed from the context. As in the
official collator the block *sizes* are drawn once per batch (so all target blocks have
the same token count and stack without padding) while *positions* are drawn per image and
block, anywhere on the grid including the last row and column.

Context sets then differ in length. `context_batching` decides how they are batched:
"pad" keeps every context token, padding to the batch maximum and marking the padding in
`context_valid` (the encoder and predictor mask it out of attention); "truncate" cuts
every context to the batch minimum, as the official I-JEPA collator does; "subsample"
draws a uniformly random subset of the batch-minimum size from each context (equal
lengths without the official bias toward the top rows).

Truncation keeps more here than in the official collator: on an 8x8 grid with the
default masks, about 21 of 64 context tokens at batch 32 and 17 at batch 256, where the
official keeps about 13 and 10-12 (measured on 100 batches each). Two deliberate
differences cause it. Our blocks may cover the last row and column (the official draws
the top-left corner with randint(0, grid - size), which never reaches them, and caps a
block at grid - 1 patches, so its 7x7 context block always sits in the top-left corner);
and we draw a block's scale and aspect ratio from two random numbers where the official
uses one for both. Both make block positions and shapes uniform over the whole grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from djepa_bench.config import MaskConfig
from djepa_bench.errors import UserError

CONTEXT_BATCHING = ("pad", "truncate", "subsample")
_MAX_RESAMPLES = 50


@dataclass
class MaskBatch:
    """Index tensors for one batch: which tokens the context encoder and predictor see."""

    context_idx: torch.Tensor  # (B, L) long, ascending per image (padding at the end)
    context_valid: torch.Tensor | None  # (B, L) bool, False at padding; None: all real
    target_idx: torch.Tensor  # (B, M, T) long, ascending within each block

    def to(self, device: torch.device | str) -> MaskBatch:
        """The same masks on `device` (non-blocking copies)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(
            self,
            context_idx=move(self.context_idx),
            context_valid=move(self.context_valid),
            target_idx=move(self.target_idx),
        )

    @property
    def context_lengths(self) -> torch.Tensor:
        """Real context tokens per image (B,)."""
        if self.context_valid is None:
            return torch.full((self.context_idx.shape[0],), self.context_idx.shape[1])
        return self.context_valid.sum(1)


def block_size(
    grid: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int]:
    """(height, width) in patches of a block covering ~U(scale) of the grid with ~U(aspect)."""
    area_draw, aspect_draw = torch.rand(2, generator=generator).tolist()
    area = grid * grid * (scale[0] + area_draw * (scale[1] - scale[0]))
    ratio = aspect[0] + aspect_draw * (aspect[1] - aspect[0])
    height = int(round(math.sqrt(area * ratio)))
    width = int(round(math.sqrt(area / ratio)))
    return min(max(height, 1), grid), min(max(width, 1), grid)


def block_masks(
    count: tuple[int, ...],
    grid: int,
    size: tuple[int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Boolean masks count + (grid*grid,) of blocks of `size` at uniform positions."""
    height, width = size
    top = (torch.rand(count, generator=generator) * (grid - height + 1)).long()
    left = (torch.rand(count, generator=generator) * (grid - width + 1)).long()
    rows = torch.arange(grid).view(1, grid, 1)
    cols = torch.arange(grid).view(1, 1, grid)
    top, left = top.reshape(-1, 1, 1), left.reshape(-1, 1, 1)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return inside.reshape(*count, grid * grid)


def _true_indices(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Per row, the indices of True entries in ascending order, first `length` of them."""
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
    return order[..., :length]


class MultiBlockMasker:
    """Samples I-JEPA multi-block masks for a grid of grid_size x grid_size patches."""

    def __init__(self, grid_size: int, cfg: MaskConfig):
        self.grid = grid_size
        self.cfg = cfg

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        """Sample masks for `batch_size` images from `generator` (CPU tensors)."""
        cfg = self.cfg
        target_size = block_size(self.grid, cfg.target_scale, cfg.target_aspect, generator)
        context_size = block_size(self.grid, cfg.context_scale, cfg.context_aspect, generator)
        targets = block_masks((batch_size, cfg.num_targets), self.grid, target_size, generator)
        context = block_masks((batch_size,), self.grid, context_size, generator)
        context &= ~targets.any(1)
        # Resample (context and targets) only for the images whose context is too small.
        for _ in range(_MAX_RESAMPLES):
            short = context.sum(1) < cfg.min_keep
            if not short.any():
                break
            n = int(short.sum())
            new_targets = block_masks((n, cfg.num_targets), self.grid, target_size, generator)
            new_context = block_masks((n,), self.grid, context_size, generator)
            targets[short] = new_targets
            context[short] = new_context & ~new_targets.any(1)
        else:
            raise UserError(
                f"masks leave fewer than mask.min_keep={cfg.min_keep} context patches; "
                "lower mask.min_keep, mask.num_targets or mask.target_scale"
            )
        tokens = target_size[0] * target_size[1]
        target_idx = _true_indices(targets, tokens)
        return self._batch_context(context, target_idx, generator)

    def _batch_context(
        self, context: torch.Tensor, target_idx: torch.Tensor, generator: torch.Generator
    ) -> MaskBatch:
        lengths = context.sum(1)
        mode = self.cfg.context_batching
        if mode == "pad":
            longest = int(lengths.max())
            idx = _true_indices(context, longest)
            valid = torch.arange(longest)[None] < lengths[:, None]
            return MaskBatch(idx, None if bool(valid.all()) else valid, target_idx)
        shortest = int(lengths.min())
        if mode == "truncate":
            return MaskBatch(_true_indices(context, shortest), None, target_idx)
        # subsample: random priorities for real tokens, keep the `shortest` best, re-sort.
        priority = torch.rand(context.shape, generator=generator).masked_fill(~context, 2.0)
        chosen = torch.argsort(priority, dim=1)[:, :shortest]
        return MaskBatch(chosen.sort(dim=1).values, None, target_idx)
