"""W&B, offline: what a run's .wandb file holds (predictions, confusion matrix, model artifact), and jobs
launched the way a W&B agent launches them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, SHAPES_TINY, TINY, compose_cfg, read_metrics, wandb_logged, wandb_records

from shunted_lab.data.shapes import CLASSES
from shunted_lab.report import main as report_main
from shunted_lab.sweeps.wandb_run import report_run_id
from shunted_lab.training.fit import train


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No credentials, and W&B's files (artifact staging included) under tmp_path."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    return dict(os.environ)


def offline_run(job_dir: Path, run_id: str) -> Path:
    [run] = job_dir.glob(f"wandb/offline-run-*-{run_id}")
    return run


def logged_table(run: Path, key: str) -> dict:
    """A wandb.Table the run logged under `key`, from its JSON file in the run's media."""
    [path] = run.glob(f"files/media/table/{key}_*.table.json")
    return json.loads(path.read_text())


def train_offline(tmp_path: Path, *overrides: str) -> tuple:
    """A tiny single run logging to W&B offline: its config, metrics.json, offline run folder and what it logged."""
    cfg = compose_cfg(tmp_path, "logger=csv_wandb", *overrides)
    train(cfg)
    metrics = read_metrics(cfg)
    run = offline_run(tmp_path / "out", metrics["wandb"]["id"])
    return cfg, metrics, run, wandb_logged(wandb_records(run))


def test_a_single_run_logs_predictions_confusion_matrix_and_its_best_checkpoint(tmp_path, offline):
    cfg, metrics, run, logged = train_offline(tmp_path, "trainer.max_epochs=2", "logger.wandb.predictions=20")
    val_images = cfg.data.num_val

    predictions = logged_table(run, "val/predictions")
    assert predictions["columns"] == ["image", "label", "prediction", "confidence", "correct", "group"]
    assert len(predictions["data"]) == 20
    for _, label, predicted, confidence, correct, group in predictions["data"]:
        assert label in CLASSES and predicted in CLASSES and group in ("small", "medium", "large")
        assert 0.1 <= confidence <= 1 and correct == (label == predicted)  # the top of 10 probabilities

    # Over the whole validation split with the best checkpoint: its diagonal is val/top1.
    matrix = logged_table(run, "val/confusion_matrix_table")
    assert matrix["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert len(matrix["data"]) == len(CLASSES) ** 2
    assert sum(n for _, _, n in matrix["data"]) == val_images
    diagonal = sum(n for actual, predicted, n in matrix["data"] if actual == predicted)
    assert diagonal / val_images == pytest.approx(metrics["val/top1"])
    assert "val/predictions/_type" in logged["history"] and "val/confusion_matrix_table/_type" in logged["history"]

    # A single run uploads its best checkpoint (log_model: null means on outside sweeps).
    [model] = [a for a in logged["artifacts"] if a.type == "model"]
    assert model.name == f"model-{metrics['wandb']['id']}" and set(model.aliases) == {"best", "latest"}
    assert [c.path for c in model.manifest.contents] == [Path(metrics["best_checkpoint"]).name]
    assert json.loads(model.metadata)["val/top1"] == metrics["val/top1"]
    # The run records the code's commit and the resolved config.
    assert len(metrics["git"]["commit"]) == 40
    assert json.loads(logged["config"]["git"])["commit"] == metrics["git"]["commit"]
    assert json.loads(logged["config"]["data"])["num_val"] == val_images


def test_log_model_false_uploads_no_checkpoint(tmp_path, offline):
    *_, logged = train_offline(tmp_path, "logger.wandb.log_model=false", "logger.wandb.predictions=0")
    assert not [a for a in logged["artifacts"] if a.type == "model"]
    assert "val/predictions/_type" not in logged["history"]
    assert "val/confusion_matrix_table/_type" in logged["history"]


def run_like_an_agent(tmp_path: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    """What `wandb agent` runs: the program with the sweep's values as overrides without leading dashes,
    WANDB_SWEEP_ID set."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "attention=vit", "seed=1", *TINY, *SHAPES_TINY, "logger=csv_wandb"],
        capture_output=True,
        text=True,
        env={**env, "WANDB_SWEEP_ID": "abc123"},
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=600,
    )


@pytest.mark.slow
def test_a_job_started_by_a_wandb_agent_is_a_sweep_job(tmp_path, offline):
    proc = run_like_an_agent(tmp_path, offline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "logs" / "multirun" / "wandb-abc123"
    [job] = [p.parent for p in sweep.glob("*/metrics.json")]
    assert job.name.startswith("attention=vit,")  # its overrides name it (long ones end in a hash of them)
    assert {"attention=vit", "seed=1"} <= set(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
    metrics = json.loads((job / "metrics.json").read_text())
    run = metrics["wandb"]
    assert run["group"] == "shunted_nano-shapes-vit-detail_specific"  # as in a Hydra multirun
    assert "sweep=abc123" in run["tags"] and metrics["config"]["sweep_id"] == "abc123"
    logged = wandb_logged(wandb_records(offline_run(job, run["id"])))
    assert logged["run"].run_group == run["group"] and "sweep=abc123" in logged["run"].tags
    assert not [a for a in logged["artifacts"] if a.type == "model"]  # a sweep's jobs upload no checkpoint
    # The sweep's report run got the summary, as after a multirun's job.
    report_run = offline_run(sweep, report_run_id("abc123"))
    report = wandb_logged(wandb_records(report_run))["run"]
    assert (report.job_type, report.run_group, list(report.tags)) == ("report", "abc123", ["sweep=abc123"])
    assert (sweep / "summary.md").is_file()

    # Run again: complete, so skipped (no second W&B run).
    again = run_like_an_agent(tmp_path, offline)
    assert again.returncode == 0 and "is complete (metrics.json); skipped" in again.stderr + again.stdout
    assert len(list(job.glob("wandb/offline-run-*"))) == 1
    # Interrupted (no metrics.json, a last.ckpt): resumed, at the step it had reached. Its W&B run is the
    # one the agent gives it, in the same group (W&B sweeps choose their runs' ids).
    (job / "metrics.json").unlink()
    resumed = run_like_an_agent(tmp_path, offline)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "was interrupted; resuming from checkpoints/last.ckpt" in resumed.stderr + resumed.stdout
    after = json.loads((job / "metrics.json").read_text())
    assert after["global_step"] == metrics["global_step"] and after["wandb"]["group"] == run["group"]
    assert report_main([str(sweep)]) == 0  # the local report reads an agent's sweep like a multirun


def test_a_segmentation_run_logs_its_masks(tmp_path, offline):
    seg = ["objective=segmentation", "data.num_train=32", "data.num_val=16", "data.num_test=16"]
    _, metrics, run, logged = train_offline(tmp_path, *seg, "logger.wandb.predictions=5")
    table = logged_table(run, "val/masks")
    assert table["columns"] == ["image", "pixel_acc"] and len(table["data"]) == 5
    assert all(0 <= pixel_acc <= 1 for _, pixel_acc in table["data"])
    # The table's images and their masks travel in its run_table artifact: a prediction and a ground truth each.
    [media] = [a for a in logged["artifacts"] if a.type == "run_table"]
    files = [c.path for c in media.manifest.contents]
    assert sum(f.endswith(".mask.png") for f in files) == 10
    assert sum(f.startswith("media/images/") and not f.endswith(".mask.png") for f in files) == 5
    assert "val/confusion_matrix_table/_type" not in logged["history"]
    assert (
        json.loads([a for a in logged["artifacts"] if a.type == "model"][0].metadata)["val/miou"] == metrics["val/miou"]
    )
    assert (tmp_path / "out" / "val_masks.png").is_file()
