"""Checkpoints that survive a kill and never run code when loaded."""

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill mid-save leaves the previous
    checkpoint whole. (Lightning stages in the system temp dir, which turns into a plain copy onto
    the target when that is another filesystem.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


# Official training checkpoints keep their command line as an argparse.Namespace: data, no code.
ALLOWED_GLOBALS = {"argparse.Namespace"}


def unsafe_globals(path: str | Path) -> list[str]:
    """Names a checkpoint would import when unpickled that `weights_only` loading refuses (bar ALLOWED_GLOBALS).

    Raises ValueError when the file is not a readable PyTorch checkpoint.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # a truncated zip, not a checkpoint at all, ...
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return [name for name in found if name not in ALLOWED_GLOBALS]


def resolve_resume_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """`last` means this run directory's checkpoints/last.ckpt (rerun with hydra.run.dir=<that run>)."""
    if ckpt_path != "last":
        return ckpt_path
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"ckpt_path=last: no {last}; point hydra.run.dir at the run to resume, or give ckpt_path=<file>"
        )
    return str(last)
