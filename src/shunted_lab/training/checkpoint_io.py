"""Checkpoints that survive a kill and never run code when loaded."""

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill mid-save leaves the previous
    checkpoint whole. (Lightning stages in the system temp dir, which turns into a plain copy onto
    the target when that is another filesystem.) Loading is `weights_only`: plain tensors and containers."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
