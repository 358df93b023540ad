"""Multi-block masks: counts, sizes, disjointness, whole-grid positions, batching modes."""

from __future__ import annotations

import pytest
import torch

from djepa_bench.config import MaskConfig, build_config
from djepa_bench.errors import UserError
from djepa_bench.masks import MultiBlockMasker, block_size


def sample(grid=8, batch=64, seed=0, **cfg):
    masker = MultiBlockMasker(grid, MaskConfig(**cfg))
    return masker(batch, torch.Generator().manual_seed(seed))


def context_sets(masks):
    valid = masks.context_valid
    out = []
    for i, row in enumerate(masks.context_idx):
        keep = row if valid is None else row[valid[i]]
        out.append(set(keep.tolist()))
    return out


def test_block_counts_shapes_and_target_sizes():
    masks = sample(grid=8, batch=32, num_targets=4)
    batch, blocks, tokens = masks.target_idx.shape
    assert (batch, blocks) == (32, 4)
    # One target size per batch: every block has the same number of distinct tokens.
    for row in masks.target_idx.reshape(-1, tokens):
        assert len(set(row.tolist())) == tokens
    assert masks.target_idx.min() >= 0 and masks.target_idx.max() < 64


def test_targets_are_rectangles_within_scale_and_aspect_bounds():
    grid = 16
    cfg = MaskConfig()
    for seed in range(20):
        masks = sample(grid=grid, batch=4, seed=seed)
        block = masks.target_idx[0, 0]
        rows, cols = block // grid, block % grid
        height = int(rows.max() - rows.min() + 1)
        width = int(cols.max() - cols.min() + 1)
        assert height * width == block.numel()  # a full rectangle
        area = height * width / grid**2
        assert cfg.target_scale[0] - 0.05 <= area <= cfg.target_scale[1] + 0.05
        assert 0.5 <= height / width <= 2.0


def test_context_excludes_targets_and_keeps_min_keep():
    masks = sample(grid=8, batch=64, min_keep=10)
    for ctx, targets in zip(context_sets(masks), masks.target_idx, strict=True):
        assert len(ctx) >= 10
        assert not ctx & set(targets.flatten().tolist())


def test_same_seed_same_masks_different_seed_different_masks():
    a, b, c = sample(seed=3), sample(seed=3), sample(seed=4)
    assert torch.equal(a.context_idx, b.context_idx) and torch.equal(a.target_idx, b.target_idx)
    assert not torch.equal(a.target_idx, c.target_idx)


def test_target_positions_cover_whole_grid_including_last_row_and_column():
    hits = torch.zeros(64, dtype=torch.bool)
    for seed in range(30):
        hits[sample(seed=seed, batch=32).target_idx.flatten()] = True
    assert hits.all()  # the official sampler never reaches the last row/column


def test_target_coverage_matches_configured_scale():
    grid, cfg = 16, MaskConfig()
    areas = []
    for seed in range(200):
        masks = sample(grid=grid, batch=2, seed=seed)
        areas.append(masks.target_idx.shape[2] / grid**2)
    mean = sum(areas) / len(areas)
    assert abs(mean - sum(cfg.target_scale) / 2) < 0.015
    assert min(areas) >= cfg.target_scale[0] - 0.03 and max(areas) <= cfg.target_scale[1] + 0.03


def test_pad_keeps_every_context_token_truncate_cuts_to_minimum():
    padded = sample(seed=1, context_batching="pad")
    truncated = sample(seed=1, context_batching="truncate")
    lengths = padded.context_lengths
    assert padded.context_idx.shape[1] == int(lengths.max())
    assert truncated.context_idx.shape[1] == int(lengths.min())
    assert lengths.float().mean() > truncated.context_idx.shape[1] + 5
    # Same sampled blocks: truncation keeps the first (lowest-index) context tokens.
    for full, cut in zip(context_sets(padded), truncated.context_idx, strict=True):
        assert cut.tolist() == sorted(full)[: len(cut)]


def test_subsample_gives_equal_length_random_subsets():
    padded = sample(seed=2, context_batching="pad")
    sub = sample(seed=2, context_batching="subsample")
    assert sub.context_valid is None
    assert sub.context_idx.shape[1] == int(padded.context_lengths.min())
    for full, part in zip(context_sets(padded), sub.context_idx, strict=True):
        assert set(part.tolist()) <= full


def test_block_size_never_exceeds_grid():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        h, w = block_size(8, (0.85, 1.0), (1.0, 1.0), gen)
        assert 1 <= h <= 8 and 1 <= w <= 8


def test_unknown_batching_mode_is_refused_when_the_config_is_built():
    with pytest.raises(UserError, match="context_batching' must be one of pad, truncate"):
        build_config(overrides=["mask.context_batching=crop"])
