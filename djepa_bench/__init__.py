"""djepa-bench: train and measure diffusion-regularised JEPA (D-JEPA) against I-JEPA."""

__version__ = "0.1.0"
