"""Models of the method: ViT encoder, JEPA / diffusion-JEPA predictor, diffusion schedule."""

from djepa_bench.config import ENCODER_SIZES, encoder_dims
from djepa_bench.models.diffusion import DiffusionSchedule, build_schedule, ddim_sample_targets
from djepa_bench.models.encoder import VisionEncoder, build_encoder
from djepa_bench.models.predictor import Predictor, PredictorOutput, build_predictor

__all__ = [
    "ENCODER_SIZES",
    "DiffusionSchedule",
    "Predictor",
    "PredictorOutput",
    "VisionEncoder",
    "build_encoder",
    "build_predictor",
    "build_schedule",
    "ddim_sample_targets",
    "encoder_dims",
]
