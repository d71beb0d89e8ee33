"""Trained models back from disk: finding the checkpoints a path stands for (sources.py), and the tasks
that use them without training, `task=eval` and `task=analyze` (tasks.py)."""

from .tasks import analyze, evaluate

__all__ = ["analyze", "evaluate"]
