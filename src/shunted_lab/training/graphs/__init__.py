"""compile=cudagraphs: the training step and evaluation in CUDA graphs. `engine` is torch's and timm's
only (the benchmarks use it without Lightning, so nothing is imported here); `adapter` is the
LightningModule's side."""
