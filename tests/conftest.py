import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto runs a worker per core: one torch thread each (run.py subprocesses inherit it), so
    # the workers share the cores instead of oversubscribing them.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

import shunted_lab.models  # noqa: F401  (registers the models with timm)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny shunted run directory (best checkpoint, metrics.json), analyzed after training (8 images)."""
    from helpers import compose_cfg

    from shunted_lab.training import train

    tmp = tmp_path_factory.mktemp("trained")
    train(compose_cfg(tmp, "analysis.enabled=true", "analysis.num_images=8", "analysis.show=2"))
    return tmp / "out"
