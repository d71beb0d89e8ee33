"""shunted-lab: compare token mixers and FFNs in one pyramid vision transformer.

Importing the package registers shunted_t / shunted_s / shunted_b / shunted_nano with timm.
"""

from . import models

__all__ = ["models"]
__version__ = "0.1.0"
