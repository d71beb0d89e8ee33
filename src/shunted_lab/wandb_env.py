"""Whether W&B can send: without an API key a run goes offline by itself and never prompts; the user
runs `wandb sync` later. Shared by the run's loggers and the sweep's W&B report run and Report."""

import netrc
import os
from urllib.parse import urlparse

OFFLINE_MODES = ("offline", "dryrun", "disabled")  # WANDB_MODE values that send nothing


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline(configured: bool) -> bool:
    """Whether a W&B run goes offline. WANDB_MODE, when set, decides instead (wandb reads it)."""
    return configured or (not os.environ.get("WANDB_MODE") and not wandb_has_credentials())


def wandb_online() -> bool:
    """Whether a W&B API call (a Report) can be made now."""
    return wandb_has_credentials() and os.environ.get("WANDB_MODE") not in OFFLINE_MODES
