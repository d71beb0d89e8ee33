"""Token mixers: one file each, registered by name where they are defined (base.py says how to add one)."""

import importlib
import pkgutil

from .base import MIXERS, TokenMixer, build_mixer, register_mixer


def discover_mixers() -> None:
    """Import every module of this package: each registers its mixers, so a new file needs no edit here."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover_mixers()

__all__ = ["MIXERS", "TokenMixer", "build_mixer", "discover_mixers", "register_mixer"]
