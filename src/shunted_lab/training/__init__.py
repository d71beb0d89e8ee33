"""Training one variant: the LightningModule (module.py), the fit pipeline from a config to metrics.json
(fit.py: `train`), our callbacks, loggers and metrics, and the checkpoint IO.

Nothing is imported here: bench/ imports the graph engine (graphs/engine.py) without Lightning."""
