"""Training one variant: the LightningModule (module.py), the fit pipeline from a config to metrics.json
(fit.py), our callbacks, loggers and metrics, and the checkpoint IO."""

from .fit import train

__all__ = ["train"]
