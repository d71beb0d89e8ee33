"""Models: token mixers, FFNs and the pyramid backbone; importing this registers them with timm."""

from .ffn import FFNS
from .mixers import MIXERS, build_mixer
from .pyramid import PyramidTransformer, checkpoint_filter_fn

__all__ = ["FFNS", "MIXERS", "PyramidTransformer", "build_mixer", "checkpoint_filter_fn"]
