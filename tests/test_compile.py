"""torch.compile of the training step: one graph per method, compiled once over varied masks."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from djepa_bench.train import step as step_module
from djepa_bench.train.api import quick_config
from djepa_bench.train.step import TrainStep


def compiled_step(
    method: str, compile_: bool = True, batching: str = "fixed", **overrides
) -> TrainStep:
    settings = {"regularizer__variance": 1.0, "regularizer__projector_dim": 16, **overrides}
    cfg = quick_config(
        method=method,
        mask__context_batching=batching,
        train__compile=compile_,
        optim__clip_grad=1.0,
        **settings,
    )
    return TrainStep(cfg, 32, 3, torch.device("cpu"), total_steps=20, steps_per_epoch=10)


@pytest.fixture
def fresh_dynamo():
    """Counters from zero, and any recompilation an error."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("method", ["ijepa", "djepa"])
def test_compiled_step_is_one_graph_compiled_once_over_varied_masks(
    method, fresh_dynamo, monkeypatch
):
    # Dynamo's graph capture and AOT autograd are what is counted; "aot_eager" skips only
    # the code generation (the inductor test below compiles for real).
    monkeypatch.setattr(step_module, "COMPILE_BACKEND", "aot_eager")
    step = compiled_step(method, diffusion__noise_draws=2)
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lengths, tokens = set(), set()
    for i in range(8):
        masks = step.sample_masks(16, i)
        lengths.add(int(masks.context_valid.sum(1).max()))
        tokens.add(int(masks.target_valid[0, 0].sum()))
        out = step(images, i)
        assert torch.isfinite(out.parts.loss)
    assert len(lengths) > 1 and len(tokens) > 1  # the masks' real lengths did vary
    assert counters["stats"]["unique_graphs"] == 1  # one graph (fullgraph: no breaks) ...
    assert counters["aot_autograd"]["total"] == 1  # ... compiled once, forward and backward
    assert not counters["graph_break"]


@pytest.mark.parametrize("method", ["ijepa", "djepa"])
@pytest.mark.parametrize("batching", ["pad", "truncate"])
def test_compiled_step_without_fixed_shapes_is_one_graph_with_symbolic_token_counts(
    method, batching, fresh_dynamo, monkeypatch
):
    # What the CPU presets compile: their contexts are not padded to a fixed length, so the
    # graph takes the token counts as symbols instead of recompiling for each new count.
    monkeypatch.setattr(step_module, "COMPILE_BACKEND", "aot_eager")
    step = compiled_step(method, batching=batching, diffusion__noise_draws=2)
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lengths, tokens = set(), set()
    for i in range(8):
        masks = step.sample_masks(16, i)
        lengths.add(masks.context_idx.shape[1])
        tokens.add(masks.target_idx.shape[2])
        assert torch.isfinite(step(images, i).parts.loss)
    assert len(lengths) > 1 and len(tokens) > 1  # the shapes did vary
    assert counters["stats"]["unique_graphs"] == 1
    # AOT autograd succeeds once (with symbolic sizes it may retry its first attempt, which
    # "total" also counts); recompiles are errors here.
    assert counters["aot_autograd"]["ok"] == 1
    assert not counters["graph_break"]


@pytest.mark.slow  # inductor generates and builds C++ for the step: minutes on a busy machine
@pytest.mark.parametrize(
    "method, overrides",
    [
        ("djepa", {}),
        # No diffusion or regulariser term: the total is the JEPA loss itself, which once came
        # out of the inductor graph without a grad_fn (GPU preset cifar10-vit-tiny's I-JEPA).
        ("ijepa", {"regularizer__variance": 0.0, "regularizer__projector_dim": 0}),
    ],
)
def test_inductor_compiled_step_matches_the_eager_step_and_compiles_once(
    method, overrides, fresh_dynamo
):
    eager = compiled_step(method, compile_=False, **overrides)
    compiled = compiled_step(method, **overrides)
    compiled.load_state_dict(eager.state_dict())
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        a, b = eager(images, i), compiled(images, i)
        for part in ("loss", "loss_jepa", "loss_diff", "loss_reg"):
            torch.testing.assert_close(
                getattr(b.parts, part), getattr(a.parts, part), atol=1e-4, rtol=1e-4
            )
    after_eager, after_compiled = eager.state_dict(), compiled.state_dict()
    for key, tensor in after_eager["context_encoder"].items():
        torch.testing.assert_close(
            after_compiled["context_encoder"][key], tensor, atol=1e-4, rtol=1e-3
        )
    assert counters["stats"]["unique_graphs"] == 1
    assert counters["aot_autograd"]["total"] == 1
