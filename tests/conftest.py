import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto runs a worker per core: one torch thread each (run.py subprocesses inherit it), so
    # the workers share the cores instead of oversubscribing them.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

import shunted_lab.models  # noqa: F401  (registers the models with timm)

LONGEST_FIRST = ("test_gpu_call.py",)  # minutes, in one test: started last, it would end the suite alone


@pytest.hookimpl(optionalhook=True)  # xdist's hook: the lent GPU machine runs the tests without xdist
def pytest_xdist_make_scheduler(config, log):
    """xdist's loadfile hands out files with the most tests first, which puts a file of one long test
    last; this one hands out LONGEST_FIRST before the rest, so the other worker runs beside it."""
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            for scope in [s for s in self.workqueue if s.endswith(LONGEST_FIRST)]:
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _wandb_mode_kept():
    """An offline WandbLogger in a test sets WANDB_MODE for the whole process (Lightning does, for wandb):
    the tests after it in the same worker would then find W&B offline whatever they set up."""
    before = os.environ.get("WANDB_MODE")
    yield
    if before is None:
        os.environ.pop("WANDB_MODE", None)
    else:
        os.environ["WANDB_MODE"] = before


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny shunted run directory (best checkpoint, metrics.json), analyzed after training (8 images)."""
    from helpers import compose_cfg

    from shunted_lab.training.fit import train

    tmp = tmp_path_factory.mktemp("trained")
    train(compose_cfg(tmp, "analysis.enabled=true", "analysis.num_images=8", "analysis.show=2"))
    return tmp / "out"
