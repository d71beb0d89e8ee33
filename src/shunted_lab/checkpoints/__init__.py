"""Trained models back from disk: finding the checkpoints a path stands for (sources.py), and the tasks
that use them without training, `task=eval` and `task=analyze` (tasks.py)."""

from .tasks import analyze_checkpoints, evaluate_checkpoints

__all__ = ["analyze_checkpoints", "evaluate_checkpoints"]
