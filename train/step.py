"""One optimisation step of I-JEPA or D-JEPA: the object the trainer runs and the benchmarks time.

`TrainStep` owns everything a step needs: the context encoder and its EMA target, the
predictor, the optional projector, AdamW, the lr / weight-decay / EMA schedules, the mask
sampler, the diffusion schedule and the precision (autocast, DDP, torch.compile). One call
is one step: schedules, masks and noise drawn from (seed, rank, step), forward, backward,
gradient clipping, AdamW, EMA. The loop (loop.py) keeps data, the run directory, signals
and logs, as DINOv2 splits its SSLMetaArch from train.py; the benchmarks time this same
object, so their step times and MFU are those of the trainer's step.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from djepa_bench.checkpoint import clean_state_dict
from djepa_bench.config import Config
from djepa_bench.errors import UserError
from djepa_bench.masks import MultiBlockMasker
from djepa_bench.models import build_encoder, build_predictor, build_schedule
from djepa_bench.train.batches import derived_seed, generator_for
from djepa_bench.train.objectives import JepaModel, LossParts, compute_losses, projector_for
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
    """Whether a step autocasts to bf16: 'bf16', or 'auto' on a GPU."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown train.precision '{precision}'; use auto, fp32 or bf16")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


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
        self.diffusion = build_schedule(cfg.diffusion) if cfg.train.method == "djepa" else None
        self.masker = MultiBlockMasker(encoder.grid_size, cfg.mask)
        self.forward_model: torch.nn.Module = self.model
        self.forward_target: torch.nn.Module = self.target_encoder
        if distributed:
            device_ids = [device] if device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=device_ids, **_NO_BUFFER_SYNC
            )
        if cfg.train.compile:
            self.forward_model = torch.compile(self.forward_model)
            self.forward_target = torch.compile(self.target_encoder)

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
        masks = self.masker(images.shape[0], generator_for(seed, "mask", rank, step))
        masks = masks.to(self.device)
        noise_gen = generator_for(seed, "noise", rank, step, device=self.device)
        torch.manual_seed(derived_seed(seed, "torch", rank, step))  # drop-path
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with autocast:
            parts = compute_losses(
                self.forward_model,
                self.forward_target,
                self.diffusion,
                images,
                masks,
                cfg,
                noise_gen,
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
