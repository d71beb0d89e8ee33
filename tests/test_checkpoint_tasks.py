"""task=eval: score a run, a sweep or a loose checkpoint again, without training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from helpers import ROOT, compose_cfg, official_state_dict, write_image_folder

from shunted_lab.checkpoints.sources import Source, architecture, load_model
from shunted_lab.checkpoints.tasks import evaluate_checkpoints as evaluate
from shunted_lab.exits import ConfigError


@pytest.fixture
def run_dir(trained_run) -> Path:
    return trained_run


def eval_cfg(tmp_path: Path, ckpt_path, *overrides: str):
    return compose_cfg(tmp_path, "task=eval", f"ckpt_path={ckpt_path}", *overrides)


@pytest.mark.parametrize(
    "speed",
    # The graph mode scores through its evaluation path: batches of 12, 12 and a last one of 8, padded.
    [[], ["compile=cudagraphs-eager", "data.batch_size=12"]],
)
def test_eval_of_a_run_reproduces_its_scores(run_dir, tmp_path, speed):
    trained = json.loads((run_dir / "metrics.json").read_text())
    [scored] = evaluate(eval_cfg(tmp_path, run_dir, "attention=pvt", *speed), []).values()
    for key in ("val/top1", "test/top1", "val/loss"):
        assert abs(scored[key] - trained[key]) <= 1e-6, key
    assert scored["attention"] == "shunted"  # the run's, not the eval command's pvt
    assert scored["checkpoint"] == trained["best_checkpoint"]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["done"]["out"]["val/top1"] == scored["val/top1"]
    assert written["done"]["out"]["data"]["num_val"] == 32


def test_eval_on_other_data_keys_keeps_the_runs_data_otherwise(run_dir, tmp_path):
    overrides = ["eval_splits=[val]", "data.image_size=48"]
    [scored] = evaluate(eval_cfg(tmp_path, run_dir, *overrides), overrides).values()
    assert scored["data"]["image_size"] == 48 and scored["data"]["num_val"] == 32
    assert "val/top1" in scored and "test/top1" not in scored


def test_eval_of_a_sweep_scores_every_job_and_extends_the_report(run_dir, tmp_path):
    sweep = tmp_path / "sweep"
    for num, seed in enumerate((0, 1)):
        job = sweep / f"{num}_shunted-seed{seed}"
        shutil.copytree(run_dir, job)
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text(f"- attention=shunted\n- seed={seed}\n")
    scored = evaluate(eval_cfg(tmp_path, sweep), [])
    assert sorted(scored) == ["0_shunted-seed0", "1_shunted-seed1"]
    for name in scored:
        assert json.loads((sweep / name / "eval.json").read_text())["val/top1"] == scored[name]["val/top1"]
    summary = (sweep / "summary.md").read_text()
    assert "`eval:val/top1`" in summary and "`eval:test/top1`" in summary
    assert "eval:val/top1_mean" in (sweep / "summary.csv").read_text()


def test_eval_refuses_a_checkpoint_of_another_variant(run_dir, tmp_path):
    loose = tmp_path / "loose.ckpt"  # no run directory around it: the command's architecture is used
    shutil.copy(next((run_dir / "checkpoints").glob("epoch*.ckpt")), loose)
    with pytest.raises(
        ConfigError, match=r"does not fit model=shunted_nano attention=pvt mlp=detail_specific: .* missing"
    ):
        evaluate(eval_cfg(tmp_path, loose, "attention=pvt"), [])
    [scored] = evaluate(eval_cfg(tmp_path, loose), []).values()
    assert scored["run_dir"] is None


def test_eval_refuses_a_class_count_mismatch(run_dir, tmp_path):
    write_image_folder(tmp_path / "images")  # 3 classes; the run had SHAPES' 10
    overrides = ["data=imagefolder", f"data.root={tmp_path}/images", "data.image_size=32"]
    with pytest.raises(ConfigError, match="has a 10-class head but the data has 3 classes"):
        evaluate(eval_cfg(tmp_path, run_dir, *overrides), overrides)


def test_eval_refuses_an_official_release_file_for_other_classes(tmp_path):
    torch.save({"model": official_state_dict("shunted_t")}, tmp_path / "ckpt_T.pth")  # a training checkpoint
    with pytest.raises(ConfigError, match="has a 1000-class head but the data has 10 classes"):
        evaluate(eval_cfg(tmp_path, tmp_path / "ckpt_T.pth", "model=shunted_t"), [])


def test_an_official_release_file_loads_as_timm_loads_it(tmp_path):
    torch.save({"model": official_state_dict("shunted_t")}, tmp_path / "ckpt_T.pth")
    source = Source("ckpt_T.pth", tmp_path / "ckpt_T.pth", None, None)
    model = load_model(source, architecture(source, compose_cfg(tmp_path, "model=shunted_t")), 1000)
    file = {"file": str(tmp_path / "ckpt_T.pth")}
    reference = timm.create_model("shunted_t", pretrained=True, pretrained_cfg_overlay=file).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    with pytest.raises(ConfigError, match=r"does not fit model=shunted_t attention=pvt .*missing keys"):
        load_model(source, architecture(source, compose_cfg(tmp_path, "model=shunted_t", "attention=pvt")), 1000)


@pytest.mark.slow
def test_eval_of_a_missing_path_exits_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "task=eval", f"ckpt_path={tmp_path}/none", f"paths.root_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "does not exist; expected a run or sweep directory" in errors[0]
    assert "Traceback" not in proc.stderr
