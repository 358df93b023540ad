"""One optimisation step of I-JEPA or D-JEPA: the object the trainer runs and the benchmarks time.

`TrainStep` owns everything a step needs: the context encoder and its EMA target, the
predictor, the optional projector, AdamW, the lr / weight-decay / EMA schedules, the mask
sampler, the diffusion schedule and the precision (autocast, DDP, torch.compile). One call
is one step: schedules, masks and noise drawn from (seed, rank, step), forward, backward,
gradient clipping, AdamW, EMA. The loop (loop.py) keeps data, the run directory, signals
and logs, as DINOv2 splits its SSLMetaArch from train.py; the benchmarks time this same
object, so their step times and MFU are those of the trainer's step.

With `train.compile` the forward pass and the losses (target encoder, context encoder,
predictor, objectives, under autocast) are one torch.compile graph, taking only tensors:
masks and noise are drawn outside it (generators do not trace). With
`mask.context_batching=fixed` (which compile requires) every input shape is fixed by the
config, so the graph compiles once (tests/test_compile.py counts it) and CUDA graphs can
replay it (`train.compile_mode=reduce-overhead`); the masks are then sampled on the device,
so a step never waits on a host-to-device copy. AdamW (fused on GPU), clipping and EMA
(torch._foreach) stay eager: a handful of multi-tensor kernels.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from djepa_bench.checkpoint import clean_state_dict
from djepa_bench.config import Config
from djepa_bench.masks import MaskBatch, MultiBlockMasker
from djepa_bench.models import build_encoder, build_predictor, build_schedule
from djepa_bench.train.batches import derived_seed, generator_for
from djepa_bench.train.objectives import (
    JepaModel,
    LossParts,
    compute_losses,
    draw_noise,
    projector_for,
)
from djepa_bench.train.optim import build_optimizer, ema_update, set_lr_wd
from djepa_bench.train.schedules import Schedules, StepValues

# Buffers (BatchNorm statistics of the projector) stay per rank in forward; newer torch
# deprecates `broadcast_buffers` for `forward_sync_buffers` (which still syncs them once at
# init, harmless here: every rank builds identical weights).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class StepOutput:
    """What one step returns: the loss parts, the gradient norm (if measured) and the schedules."""

    parts: LossParts
    grad_norm: torch.Tensor | None  # total L2 norm before clipping; None when not measured
    values: StepValues


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a step autocasts to bf16: 'bf16', or 'auto' on a GPU (train.precision's type
    holds the allowed values)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


# torch.compile's backend; tests that only count graphs use "aot_eager" (no code generation).
COMPILE_BACKEND = "inductor"


def _symbolic_sizes(compiled: Callable) -> Callable:
    """`compiled` traced with every size its own symbol: without fixed shapes the token counts
    vary per step, and duck sizing would tie a count to any size it first equalled (say the
    batch), then recompile when they part."""

    from torch.fx.experimental import _config as fx_config

    def call(*args):
        with fx_config.patch(use_duck_shape=False):
            return compiled(*args)

    return call


class TrainStep:
    """Models, optimiser, schedules, masks, noise and precision of one method; call it per step."""

    def __init__(
        self,
        cfg: Config,
        image_size: int,
        channels: int,
        device: torch.device,
        *,
        total_steps: int,
        steps_per_epoch: int,
        rank: int = 0,
        distributed: bool = False,
    ):
        self.cfg = cfg
        self.device = device
        self.rank = rank
        self.bf16 = uses_bf16(cfg.train.precision, device)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        encoder = build_encoder(cfg.model, image_size, channels)
        predictor = build_predictor(cfg.model, encoder, cfg.train.method)
        self.target_encoder = copy.deepcopy(encoder).to(device)
        for param in self.target_encoder.parameters():
            param.requires_grad_(False)
        projector = projector_for(cfg.regularizer, encoder.embed_dim)
        self.model = JepaModel(encoder, predictor, projector).to(device)
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.schedules = Schedules(cfg.optim, total_steps, steps_per_epoch)
        self.diffusion = None
        if cfg.train.method == "djepa":
            self.diffusion = build_schedule(cfg.diffusion).to(device)
        self.masker = MultiBlockMasker(encoder.grid_size, cfg.mask)
        self.masks_on_device = cfg.mask.context_batching == "fixed"
        self.forward_model: torch.nn.Module = self.model
        if distributed:
            device_ids = [device] if device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=device_ids, **_NO_BUFFER_SYNC
            )
        self.losses = self._losses
        self.cuda_graphs = False
        if cfg.train.compile:
            mode = cfg.train.compile_mode
            static = cfg.mask.context_batching == "fixed"
            compiled = torch.compile(
                self._losses, mode=mode, fullgraph=True, backend=COMPILE_BACKEND, dynamic=not static
            )
            self.losses = compiled if static else _symbolic_sizes(compiled)
            self.cuda_graphs = device.type == "cuda" and mode != "default"

    @property
    def context_encoder(self) -> torch.nn.Module:
        return self.model.context_encoder

    @property
    def predictor(self) -> torch.nn.Module:
        return self.model.predictor

    @property
    def projector(self) -> torch.nn.Module | None:
        return self.model.projector

    def __call__(self, images: torch.Tensor, step: int, grad_norm: bool = False) -> StepOutput:
        """Train on `images` as step `step` (0-based); `grad_norm` also measures the gradient norm
        when clipping does not (one more pass over the gradients)."""
        cfg = self.cfg
        seed, rank = cfg.train.seed, self.rank
        values = self.schedules(step)
        set_lr_wd(self.optimizer, values.lr, values.wd)
        masks = self.sample_masks(images.shape[0], step)
        level = eps = None
        if self.diffusion is not None:
            batch, blocks, tokens = masks.target_idx.shape
            width = self.context_encoder.embed_dim
            shape = (batch, blocks * cfg.diffusion.noise_draws, tokens, width)
            noise_gen = generator_for(seed, "noise", rank, step, device=self.device)
            level, eps = draw_noise(self.diffusion, shape, noise_gen)
        torch.manual_seed(derived_seed(seed, "torch", rank, step))  # drop-path
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        parts = LossParts(
            *self.losses(
                images,
                masks.context_idx,
                masks.context_valid,
                masks.target_idx,
                masks.target_valid,
                level,
                eps,
            )
        )
        self.optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        norm = None
        if cfg.optim.clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        elif grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        self.optimizer.step()
        ema_update(self.target_encoder, self.model.context_encoder, values.ema)
        return StepOutput(parts, norm, values)

    def sample_masks(self, batch: int, step: int) -> MaskBatch:
        """This rank's masks for step `step`, on the device ("fixed" samples them there)."""
        seed, rank = self.cfg.train.seed, self.rank
        if self.masks_on_device:
            return self.masker(batch, generator_for(seed, "mask", rank, step, device=self.device))
        masks = self.masker(batch, generator_for(seed, "mask", rank, step))
        if (
            self.cfg.train.compile
            and masks.context_valid is None
            and self.cfg.mask.context_batching == "pad"
        ):
            # A compiled "pad" step always gets the validity mask: None when no context is
            # padded would be a second graph.
            masks = replace(
                masks, context_valid=torch.ones_like(masks.context_idx, dtype=torch.bool)
            )
        return masks.to(self.device)

    def _losses(
        self,
        images: torch.Tensor,
        context_idx: torch.Tensor,
        context_valid: torch.Tensor | None,
        target_idx: torch.Tensor,
        target_valid: torch.Tensor | None,
        level: torch.Tensor | None,
        eps: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward pass and losses from tensors only (what torch.compile traces as one graph):
        loss, loss_jepa, loss_diff, loss_reg."""
        masks = MaskBatch(context_idx, context_valid, target_idx, target_valid)
        noise = None if level is None else (level, eps)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            parts = compute_losses(
                self.forward_model,
                self.target_encoder,
                self.diffusion,
                images,
                masks,
                self.cfg,
                noise=noise,
            )
        # The logged parts are copied into one new tensor: inductor folds `loss_jepa + 0` (no
        # diffusion or regulariser term) into loss_jepa itself, and a graph output that
        # aliases the differentiated total left the total without a grad_fn.
        logged = torch.stack((parts.loss_jepa, parts.loss_diff, parts.loss_reg))
        return parts.loss, logged[0], logged[1], logged[2]

    def modules(self) -> dict[str, torch.nn.Module]:
        """The checkpointed modules by their checkpoint key (projector only when built)."""
        out = {
            "context_encoder": self.model.context_encoder,
            "target_encoder": self.target_encoder,
            "predictor": self.model.predictor,
        }
        if self.model.projector is not None:
            out["projector"] = self.model.projector
        return out

    def state_dict(self) -> dict[str, Any]:
        """Weights of every module and the optimiser state, as a checkpoint stores them."""
        state: dict[str, Any] = {
            key: clean_state_dict(module.state_dict()) for key, module in self.modules().items()
        }
        state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (or a checkpoint holding the same keys)."""
        for key, module in self.modules().items():
            module.load_state_dict(state[key])
        self.optimizer.load_state_dict(state["optimizer"])

    def weights_finite(self) -> bool:
        """Whether every weight (trained and EMA) is finite: checked before a checkpoint."""
        flags = [torch.isfinite(p).all() for m in self.modules().values() for p in m.parameters()]
        return bool(torch.stack(flags).all())

    def fingerprint(self) -> str:
        """sha256 of every module's state, to compare weights across ranks or runs."""
        digest = hashlib.sha256()
        for module in (self.model.context_encoder, self.model.predictor, self.target_encoder):
            for name, tensor in module.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
