"""compile=cudagraphs: the training step and evaluation in CUDA graphs. `engine` is torch's and timm's
only (the benchmarks use it); `adapter` is the LightningModule's side."""

from .adapter import GraphedSteps

__all__ = ["GraphedSteps"]
