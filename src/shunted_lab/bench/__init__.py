"""What every variant and its peers cost: `python -m shunted_lab.bench` (options in cli.py)."""

from .cli import main, parse_args

__all__ = ["main", "parse_args"]
