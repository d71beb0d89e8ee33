"""Models: token mixers, FFNs and the pyramid backbone; importing this registers them with timm."""

from .factory import build_model, describe
from .ffn import FFNS
from .mixers import MIXERS, build_mixer, register_mixer
from .pyramid import PyramidTransformer, checkpoint_filter_fn

__all__ = [
    "FFNS",
    "MIXERS",
    "PyramidTransformer",
    "build_mixer",
    "build_model",
    "checkpoint_filter_fn",
    "describe",
    "register_mixer",
]
