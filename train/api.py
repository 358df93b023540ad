"""In-process entry points for other code and tests: train a run directory from a Config."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from djepa_bench.config import Config, config_from_dict, to_dict
from djepa_bench.train.loop import TrainingDiverged, TrainingStopped, train_run

__all__ = ["TrainingDiverged", "TrainingStopped", "quick_config", "train_run"]


def quick_config(dataset: str = "synthetic", method: str = "djepa", **overrides: Any) -> Config:
    """A tiny config that trains in seconds on CPU (for tests and smoke runs).

    Keyword overrides use `section__field=value`, e.g. quick_config(train__epochs=2).
    """
    cfg = Config()
    cfg.data = replace(cfg.data, dataset=dataset)
    cfg.model = replace(
        cfg.model, size="nano", embed_dim=32, depth=2, num_heads=2, predictor_dim=32,
        predictor_depth=1, predictor_heads=2, patch_size=4,
    )  # fmt: skip
    cfg.diffusion = replace(cfg.diffusion, timesteps=100)
    cfg.optim = replace(cfg.optim, batch_size=64, warmup_epochs=0.5)
    cfg.train = replace(
        cfg.train, method=method, epochs=1, device="cpu", log_every=5, monitor_size=200
    )
    data = to_dict(cfg)
    for key, value in overrides.items():
        section, name = key.split("__", 1)
        data[section][name] = value
    return config_from_dict(data)
