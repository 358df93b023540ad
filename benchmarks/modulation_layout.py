"""D-JEPA's modulated predictor block: split/concatenate layout vs a grouped layout, one run.

The predictor modulates only its trailing noisy query groups. `ModulatedBlock` (the model's
own) splits the sequence, modulates the tail viewed as (B, Q, T, D) and concatenates it
back, three times per block (copies in eager mode; inductor can fuse them). The grouped
layout written here instead pads the plain part (context and mask-token queries) to a
multiple of the group size T, views the whole sequence as (B, G, T, D) and modulates every
group, the plain ones with zero shift/scale/gate rows, so nothing is split or concatenated
but a few padded tokens are computed. This script checks that both give the same outputs
on the real tokens, then times forward + backward of one block at the cifar10-vit-tiny
D-JEPA shapes (or those given), eager and compiled, interleaved. It decides which layout
the predictor should use on a GPU; the model keeps the split layout until this says
otherwise.

    python3 benchmarks/modulation_layout.py                       # GPU, bf16
    .venv/bin/python benchmarks/modulation_layout.py --device cpu --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from djepa_bench.distributed import resolve_device
from djepa_bench.models.predictor import ModulatedBlock


class GroupedModulatedBlock(ModulatedBlock):
    """The same block over a sequence of G equal groups; modulation (B, Q, 6D) applies to the
    last Q groups, the first G - Q are plain (zero modulation rows, hence unchanged)."""

    def forward(self, x, attn_mask=None, modulation=None, start=0):
        batch, length, dim = x.shape
        queries = modulation.shape[1]
        tokens = (length - start) // queries
        groups = length // tokens
        rows = F.pad(modulation, (0, 0, groups - queries, 0)).unsqueeze(2)  # (B, G, 1, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = rows.chunk(6, dim=-1)
        shape = (batch, groups, tokens, dim)
        h = torch.addcmul(shift1, self.norm1(x).view(shape), 1 + scale1).view_as(x)
        attn = self.ls1(self.attn(h, attn_mask=attn_mask)).view(shape) * (1 + gate1)
        x = x + self.drop_path1(attn.view_as(x))
        h = torch.addcmul(shift2, self.norm2(x).view(shape), 1 + scale2).view_as(x)
        return x + self.drop_path2((self.ls2(self.mlp(h)).view(shape) * (1 + gate2)).view_as(x))


def attention_mask(plain: int, real_plain: int, queries: int, tokens: int, batch: int, device):
    """(B, 1, S, S): every token sees the real plain tokens, query groups also themselves."""
    group = torch.cat(
        [torch.full((plain,), -1), torch.arange(queries).repeat_interleave(tokens)]
    ).to(device)
    key_ok = torch.arange(len(group), device=device) >= plain
    key_ok[:real_plain] = True
    allowed = ((group[None, :] < 0) | (group[:, None] == group[None, :])) & key_ok[None, :]
    return allowed[None, None].expand(batch, 1, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--plain", type=int, default=55 + 4 * 16, help="context + mask queries")
    parser.add_argument("--groups", type=int, default=4, help="noisy query groups Q")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per group T")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="time eager only")
    parser.add_argument("--warm-only", action="store_true", help="compile, run twice, exit")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    split = ModulatedBlock(args.dim, args.heads, 4.0, qkv_bias=True).to(device)
    grouped = GroupedModulatedBlock(args.dim, args.heads, 4.0, qkv_bias=True).to(device)
    grouped.load_state_dict(split.state_dict())
    b, t, q = args.batch, args.tokens, args.groups
    padded_plain = -(-args.plain // t) * t
    x = torch.randn(b, args.plain + q * t, args.dim, device=device)
    x_grouped = torch.cat([x[:, : args.plain], x.new_zeros(b, padded_plain - args.plain, args.dim),
                           x[:, args.plain :]], dim=1)  # fmt: skip
    modulation = 0.3 * torch.randn(b, q, 6 * args.dim, device=device)
    mask = attention_mask(args.plain, args.plain, q, t, b, device)
    mask_grouped = attention_mask(padded_plain, args.plain, q, t, b, device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    with torch.no_grad():
        ref = split(x, mask, modulation, args.plain)
        out = grouped(x_grouped, mask_grouped, modulation, padded_plain)
        real = torch.cat([out[:, : args.plain], out[:, padded_plain:]], dim=1)
        torch.testing.assert_close(real, ref, atol=1e-4, rtol=1e-4)

    def step(block, inputs):
        def run():
            with autocast:
                y = block(*inputs)
            y.float().square().mean().backward()

        return run

    x_req, xg_req = x.clone().requires_grad_(), x_grouped.clone().requires_grad_()
    mod_req = modulation.clone().requires_grad_()
    variants = {
        "split eager": step(split, (x_req, mask, mod_req, args.plain)),
        "grouped eager": step(grouped, (xg_req, mask_grouped, mod_req, padded_plain)),
    }
    if not args.no_compile:
        variants["split compiled"] = step(torch.compile(split), (x_req, mask, mod_req, args.plain))
        variants["grouped compiled"] = step(
            torch.compile(grouped), (xg_req, mask_grouped, mod_req, padded_plain)
        )
    for fn in variants.values():
        fn()
        fn()
    if args.warm_only:
        return
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"modulated block fwd+bwd, batch {b}, {args.plain} plain tokens (grouped: {padded_plain})"
        f" + {q}x{t} noisy, width {args.dim}, {device.type}; outputs equal on real tokens"
    )
    for name, seconds in median.items():
        print(f"{name}: {seconds * 1e3:.2f} ms")
    for kind in ("eager", "compiled"):
        if f"split {kind}" in median:
            ratio = median[f"grouped {kind}"] / median[f"split {kind}"]
            print(f"SUMMARY modulation layout {kind}: grouped/split {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v * 1e3 for k, v in median.items()}, indent=2))


if __name__ == "__main__":
    main()
