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
lengths without the official bias toward the top rows); "fixed" pads every context to
the longest any draw can give and every target block to the largest block any draw can
give (`max_context_tokens`, `max_target_tokens`, exact bounds from the grid, scales and
aspects), marking padding in `context_valid` and `target_valid`: every tensor shape of a
step is then fixed by the config, so torch.compile compiles the step once and CUDA graphs
can replay it. "fixed" samples on the generator's device, vectorised: the resampling of
too-small contexts draws a few candidate mask sets per image at once and keeps the first
that leaves `min_keep` context patches (the same conditional distribution as resampling
one image at a time, with no Python loop and no device-to-host synchronisation).

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

import itertools
import math
from dataclasses import dataclass, replace
from functools import cached_property

import torch
import torch.nn.functional as F

from djepa_bench.config import MaskConfig
from djepa_bench.errors import UserError

CONTEXT_BATCHING = ("pad", "truncate", "subsample", "fixed")
_MAX_RESAMPLES = 50
# "fixed": candidates per image are chosen so that all of them leave too small a context
# with probability below this (estimated from _ESTIMATE_DRAWS draws per pair of block sizes
# when the masker is built).
_FAILURE_PER_IMAGE = 1e-15
_ESTIMATE_DRAWS = 1024
_MAX_CANDIDATES = 256


@dataclass
class MaskBatch:
    """Index tensors for one batch: which tokens the context encoder and predictor see."""

    context_idx: torch.Tensor  # (B, L) long, ascending per image (padding at the end)
    context_valid: torch.Tensor | None  # (B, L) bool, False at padding; None: all real
    target_idx: torch.Tensor  # (B, M, T) long, ascending within each block (padding at the end)
    target_valid: torch.Tensor | None = None  # (B, M, T) bool, False at padding; None: all real

    def to(self, device: torch.device | str) -> MaskBatch:
        """The same masks on `device` (non-blocking copies)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(
            self,
            context_idx=move(self.context_idx),
            context_valid=move(self.context_valid),
            target_idx=move(self.target_idx),
            target_valid=move(self.target_valid),
        )

    @property
    def context_lengths(self) -> torch.Tensor:
        """Real context tokens per image (B,)."""
        if self.context_valid is None:
            return torch.full((self.context_idx.shape[0],), self.context_idx.shape[1])
        return self.context_valid.sum(1)

    def padded(self, context_length: int, target_tokens: int) -> MaskBatch:
        """The same masks with contexts padded to `context_length` tokens and target blocks to
        `target_tokens`, padding marked invalid (what "fixed" batching gives for these masks)."""
        batch, length = self.context_idx.shape
        tokens = self.target_idx.shape[2]
        if context_length < length or target_tokens < tokens:
            raise ValueError(
                f"cannot pad ({length}, {tokens}) tokens to ({context_length}, {target_tokens})"
            )
        context_valid = self.context_valid
        if context_valid is None:
            context_valid = torch.ones_like(self.context_idx, dtype=torch.bool)
        target_valid = self.target_valid
        if target_valid is None:
            target_valid = torch.ones_like(self.target_idx, dtype=torch.bool)
        more_ctx, more_tgt = context_length - length, target_tokens - tokens
        return MaskBatch(
            context_idx=F.pad(self.context_idx, (0, more_ctx)),
            context_valid=F.pad(context_valid, (0, more_ctx), value=False),
            target_idx=F.pad(self.target_idx, (0, more_tgt)),
            target_valid=F.pad(target_valid, (0, more_tgt), value=False),
        )


def _squared_dims(grid: int, scale, aspect, area_draw, aspect_draw):
    """Squared height and width (reals) of a block from two uniform draws: floats or tensors."""
    area = grid * grid * (scale[0] + area_draw * (scale[1] - scale[0]))
    ratio = aspect[0] + aspect_draw * (aspect[1] - aspect[0])
    return area * ratio, area / ratio


def block_size(
    grid: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int]:
    """(height, width) in patches of a block covering ~U(scale) of the grid with ~U(aspect)."""
    area_draw, aspect_draw = torch.rand(2, generator=generator).tolist()
    height, width = (
        math.sqrt(x) for x in _squared_dims(grid, scale, aspect, area_draw, aspect_draw)
    )
    return min(max(int(round(height)), 1), grid), min(max(int(round(width)), 1), grid)


def block_masks(
    count: tuple[int, ...],
    grid: int,
    size: tuple[int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Boolean masks count + (grid*grid,) of blocks of `size` at uniform positions."""
    top = torch.rand(count, generator=generator)
    left = torch.rand(count, generator=generator)
    return _place_blocks(top, left, grid, *size)


def _place_blocks(top_draw, left_draw, grid: int, height, width) -> torch.Tensor:
    """Boolean masks draws.shape + (grid*grid,) of height x width blocks (ints or 0-d tensors)
    whose top-left corners are uniform draws scaled to every position on the grid."""
    shape = top_draw.shape
    top = (top_draw * (grid - height + 1)).long().reshape(-1, 1, 1)
    left = (left_draw * (grid - width + 1)).long().reshape(-1, 1, 1)
    rows = torch.arange(grid, device=top.device).view(1, grid, 1)
    cols = torch.arange(grid, device=top.device).view(1, 1, grid)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return inside.reshape(*shape, grid * grid)


def _true_indices(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Per row, the indices of True entries in ascending order, first `length` of them."""
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
    return order[..., :length]


def achievable_sizes(
    grid: int, scale: tuple[float, float], aspect: tuple[float, float]
) -> list[tuple[int, int]]:
    """Every (height, width) that `block_size` can return (closed intervals: a superset at
    rounding ties, which have probability zero).

    A block of size (h, w) comes from real sizes H = sqrt(area * ratio) in [h - 1/2, h + 1/2]
    (unbounded above at h = grid, below at h = 1) and likewise W; in u = log H, v = log W the
    draws cover the rectangle u + v in log(area range), u - v in log(ratio range). A size is
    achievable when that rectangle meets the cell of (h, w): a 2-D linear feasibility test.
    """
    s0, s1 = (math.log(grid * grid * s) for s in scale)
    d0, d1 = (math.log(a) for a in aspect)

    def cell(n: int) -> tuple[float, float]:
        low = -math.inf if n == 1 else math.log(n - 0.5)
        high = math.inf if n == grid else math.log(n + 0.5)
        return low, high

    sizes = []
    for h, w in itertools.product(range(1, grid + 1), repeat=2):
        (u0, u1), (v0, v1) = cell(h), cell(w)
        # v must lie in [max(v0, s0 - u, u - d1), min(v1, s1 - u, u - d0)] for some u in [u0, u1]
        low = max(u0, v0 + d0, s0 - v1, (s0 + d0) / 2)
        high = min(u1, s1 - v0, v1 + d1, (s1 + d1) / 2)
        if low <= high:
            sizes.append((h, w))
    return sizes


class MultiBlockMasker:
    """Samples I-JEPA multi-block masks for a grid of grid_size x grid_size patches."""

    def __init__(self, grid_size: int, cfg: MaskConfig):
        self.grid = grid_size
        self.cfg = cfg
        self.candidates = self._candidates() if cfg.context_batching == "fixed" else 1

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @cached_property
    def max_target_tokens(self) -> int:
        """The most tokens a target block can have: the fixed target length of "fixed"."""
        sizes = achievable_sizes(self.grid, self.cfg.target_scale, self.cfg.target_aspect)
        return max(h * w for h, w in sizes)

    @cached_property
    def max_context_tokens(self) -> int:
        """The most context tokens any draw can leave: the fixed context length of "fixed".

        A context is its block minus the targets' union, which overlaps the block at least as
        much as one target does; one target's smallest overlap over all positions is
        max(0, ch + th - grid) x max(0, cw + tw - grid), reached when every target sits there.
        """
        cfg, grid = self.cfg, self.grid
        contexts = achievable_sizes(grid, cfg.context_scale, cfg.context_aspect)
        targets = achievable_sizes(grid, cfg.target_scale, cfg.target_aspect)
        return max(
            ch * cw - max(0, ch + th - grid) * max(0, cw + tw - grid)
            for (ch, cw), (th, tw) in itertools.product(contexts, targets)
        )

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        """Sample masks for `batch_size` images from `generator` (on its device for "fixed",
        as CPU tensors otherwise)."""
        if self.cfg.context_batching == "fixed":
            return self._sample_fixed(batch_size, generator)
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

    # --- "fixed": static shapes, sampled on the generator's device ------------------------

    def _draw_blocks(
        self,
        candidates: int,
        batch: int,
        generator: torch.Generator,
        sizes: tuple[tuple[int, int], tuple[int, int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate masks from one draw of uniforms: targets (K, B, M, N), contexts (K, B, N)
        (targets removed) and the number of target tokens per block (0-d tensor). Block sizes
        are drawn once per batch, or given as ((th, tw), (ch, cw))."""
        cfg, grid, m = self.cfg, self.grid, self.cfg.num_targets
        device = generator.device
        draws = torch.rand(4 + 2 * candidates * batch * (m + 1), generator=generator, device=device)
        size_draws = draws[:4].double()  # the host sampler's sizes come from float64 maths too

        def dims(scale, aspect, a, b):
            squares = _squared_dims(grid, scale, aspect, a, b)
            return tuple(torch.round(x.sqrt()).clamp(1, grid).long() for x in squares)

        if sizes is None:
            th, tw = dims(cfg.target_scale, cfg.target_aspect, size_draws[0], size_draws[1])
            ch, cw = dims(cfg.context_scale, cfg.context_aspect, size_draws[2], size_draws[3])
        else:
            (th, tw), (ch, cw) = (tuple(torch.tensor(x, device=device) for x in s) for s in sizes)
        top, left = draws[4:].view(2, candidates, batch, m + 1)
        targets = _place_blocks(top[..., :m], left[..., :m], grid, th, tw)
        context = _place_blocks(top[..., m], left[..., m], grid, ch, cw) & ~targets.any(2)
        return targets, context, th * tw

    def _sample_fixed(self, batch: int, generator: torch.Generator) -> MaskBatch:
        k, min_keep, n = self.candidates, self.cfg.min_keep, self.num_patches
        targets, context, tokens = self._draw_blocks(k, batch, generator)
        count = context.sum(-1)  # (K, B)
        # Per image the first candidate with min_keep context patches (rejection sampling, all
        # candidates at once); if none has (probability < _FAILURE_PER_IMAGE), the largest.
        rank = torch.arange(k, 0, -1, device=count.device)[:, None]
        chosen = torch.where(count >= min_keep, 2 * n + rank, count).argmax(0)  # (B,)
        images = torch.arange(batch, device=count.device)
        context, targets, count = (
            context[chosen, images],
            targets[chosen, images],
            count[chosen, images],
        )
        length, per_block = self.max_context_tokens, self.max_target_tokens
        positions = torch.arange(max(length, per_block), device=count.device)
        return MaskBatch(
            context_idx=_true_indices(context, length),
            context_valid=positions[:length] < count[:, None],
            target_idx=_true_indices(targets, per_block),
            target_valid=(positions[:per_block] < tokens).expand(*targets.shape[:2], per_block),
        )

    def _candidates(self) -> int:
        """Candidates per image for "fixed", from the rate of too-small contexts at the worst
        pair of block sizes, on a fixed sample of draws per pair (the resampling loop's "too
        many resamples" becomes an error here)."""
        cfg, generator = self.cfg, torch.Generator().manual_seed(0)
        failures = 0
        for sizes in itertools.product(
            achievable_sizes(self.grid, cfg.target_scale, cfg.target_aspect),
            achievable_sizes(self.grid, cfg.context_scale, cfg.context_aspect),
        ):
            _, context, _ = self._draw_blocks(1, _ESTIMATE_DRAWS, generator, sizes)
            failures = max(failures, int((context.sum(-1) < cfg.min_keep).sum()))
        rate = max(failures, 1) / _ESTIMATE_DRAWS
        needed = math.ceil(math.log(_FAILURE_PER_IMAGE) / math.log(rate)) if rate < 1 else math.inf
        if needed > _MAX_CANDIDATES:
            raise UserError(
                f"masks leave fewer than mask.min_keep={self.cfg.min_keep} context patches in "
                f"{100 * failures / _ESTIMATE_DRAWS:.0f}% of draws at the least favourable block "
                "sizes; lower mask.min_keep, "
                "mask.num_targets or mask.target_scale"
            )
        return max(2, needed)
