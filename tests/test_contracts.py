"""What a user relies on beyond the code: the repository stands alone, the README's commands run,
sweeps resume where the README says so, the printed model summary is true."""

import re
import subprocess
from pathlib import Path

import pytest
from helpers import CONF_DIR, ROOT, SHAPES_TINY, TINY, compose_cfg, read_metrics, run_command, run_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shunted_lab.training.fit import train


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        return [ROOT / f for f in listed.stdout.splitlines()]
    return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def test_the_repository_reads_nothing_beside_it():
    # A user's clone has nothing beside it: no code, test, config or default run may reach outside.
    outside = re.compile(r"\.\./" + "shared|parents\\[\\d\\]\\.parent\\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in tracked_files()
        if path.suffix in {".py", ".yaml", ".sh", ".toml", ".cfg"} or path.name == "run"
        if path.is_file() and outside.search(path.read_text(errors="ignore"))
    ]
    assert offenders == []


def test_the_readme_is_an_entry_point_of_at_most_220_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path):
    setup_and_run, setup_and_test = readme_commands()
    assert setup_and_test == 'pip install -e ".[dev]" && pytest -q'
    install, command = setup_and_run.split(" && ")
    assert install == "pip install -e ." and command.startswith("python run.py ")
    # The main job as quoted, on a tiny configuration with the default loggers (W&B offline, as without
    # a key); the install is this environment's.
    overrides = command.split()[2:]
    tiny = [o for o in TINY if not o.startswith("logger=")]
    tiny += ["data.num_train=64", "data.num_val=32", "data.num_test=32", f"paths.root_dir={tmp_path}"]
    proc = subprocess.run(
        run_command(*overrides, *tiny, "hydra.run.dir=run"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=run_env(NETRC=str(tmp_path / "none")),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    # The console ends by saying where everything went, and passes on no library noise.
    console = proc.stdout + proc.stderr
    tail = proc.stdout.strip().splitlines()[-6:]  # Hydra logs to stdout; warnings go to stderr
    assert tail[0].split(" - ", 1)[-1].startswith("done: val/top1 ") and "test/top1" in tail[0]
    assert [line.split()[0] for line in tail[1:]] == ["run", "metrics", "best", "W&B", "compare"]
    assert tail[2].split()[-1] == str(tmp_path / "run" / "metrics.json")
    assert "python run.py -m attention=vit,pvt,swin,shunted" in tail[-1]
    noises = ("litlogger", "Trainer already configured", "anonymous setting", "LeafSpec", "Run history")
    noises += ("GPU available", "TPU available", "estimate number of stepping batches", "weights_only")
    for noise in noises:
        assert noise not in console, noise


def test_the_ablation_experiment_fixes_its_sweep_directory(tmp_path):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=shapes_ablation"], return_hydra_config=True)
    sweep_dir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    assert "${now:" not in sweep_dir and sweep_dir.endswith("/multirun/shapes_ablation")


def test_the_model_summary_prints_the_models_flops(tmp_path, capfd):
    # Lightning alone prints "Total FLOPs: 0" without an example input.
    tiny = [o for o in TINY if o != "~callbacks.model_summary"]
    cfg = compose_cfg(tmp_path, *tiny, *SHAPES_TINY, "callbacks.model_summary.max_depth=1", tiny=False)
    train(cfg)
    printed = re.search(r"Total FLOPs: ([\d.]+) (\w?)", capfd.readouterr().out)
    assert printed, "no Total FLOPs line"
    value = float(printed[1]) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[printed[2]]
    assert abs(value - 2e9 * read_metrics(cfg)["gmacs"]) <= 0.1e6  # one image's forward pass
