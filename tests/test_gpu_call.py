"""The one GPU call, rehearsed on a machine as bare as the lent one: the committed files in an empty
folder, a venv holding only what that machine has (torch, timm, lightning, torchmetrics, matplotlib,
rich and their requirements, linked from this venv), the wheels of benchmarks/gpu_wheels.sh, and
`DRY_RUN=1 bash benchmarks/gpu_call.sh`. It catches what the checkout's own venv hides: a package the
call imports but the machine lacks, a relative path, a pytest option of a plugin that is not there."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from helpers import ROOT
from packaging.requirements import Requirement

ON_THE_GPU_MACHINE = ("torch", "timm", "lightning", "torchmetrics", "matplotlib", "rich")


def requirements_closure(names: tuple[str, ...]) -> dict:
    """The installed distributions of `names` and of everything they require (extras left out)."""
    found, todo = {}, list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in found:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # an optional requirement, absent here too
            continue
        found[name] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def bare_venv(folder: Path) -> Path:
    """A venv whose site-packages links only ON_THE_GPU_MACHINE and their requirements: its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    [site] = folder.glob("lib/python*/site-packages")
    for dist in requirements_closure(ON_THE_GPU_MACHINE).values():
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source, link = Path(dist.locate_file(top)), site / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return folder / "bin" / "python"


def committed_files(folder: Path) -> Path:
    """The repository's tracked files as they are in the working tree (a clean clone's, in CI)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, copy = ROOT / name, folder / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # src/shunted_lab/conf -> ../../conf, as a clone has it
            copy.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, copy)
    return folder


@pytest.mark.slow
def test_the_gpu_call_runs_every_phase_on_a_bare_machine(tmp_path):
    python = bare_venv(tmp_path / "venv")
    probe = subprocess.run([python, "-c", "import hydra"], capture_output=True, text=True)
    assert "No module named 'hydra'" in probe.stderr  # bare indeed: the wheels must bring it
    checkout = committed_files(tmp_path / "checkout")
    subprocess.run(["bash", "benchmarks/gpu_wheels.sh"], cwd=checkout, check=True, capture_output=True)
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    (out / "left from an earlier call").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PYTHON", "VIRTUAL_ENV", "RAY_"))}
    env |= dict(DRY_RUN="1", OUT=str(out), RESULTS=str(results), PYTHON=str(python), RUN_DIR=str(tmp_path / "run"))
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_call.sh"], cwd=checkout, env=env, capture_output=True, text=True, timeout=600
    )
    log = (out / "call.log").read_text()
    assert proc.returncode == 0, log[-5000:]
    assert "No module named" not in log
    assert sorted(p.name for p in out.iterdir()) == ["call.log", "gpu_results.tar.gz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert re.search(r"CUDA tests: exit code 0", summary) and "graph vs eager: exit code 0" in summary
    assert "gpu_bench.sh: exit code 0" in summary and "All steps finished." in summary
    assert re.search(r"\d+ passed, \d+ skipped", log)  # the CUDA-only tests skip, the rest run
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        assert "results/graph_vs_eager.json" in tar.getnames() and "results/real_run_metrics.json" in tar.getnames()

    shunted = json.loads((results / "shunted_b2.json").read_text())["results"]
    assert [r["mode"] for r in shunted] == ["eager", "cudagraphs", "compile", "cudagraphs-eager"]
    vit = json.loads((results / "vit_plain_b2.json").read_text())["results"]
    assert [(r["attention"], r["mlp"], r["mode"]) for r in vit] == [
        ("vit", "plain", "eager"),
        ("vit", "plain", "cudagraphs-eager"),
    ]
    assert all(r["profile"]["wall_ms_per_step"] > 0 and r["first_train_s"] > 0 for r in shunted + vit)
    loop = json.loads((results / "loop_overhead.json").read_text())["loop"]
    assert loop["mode"] == "cudagraphs-eager" and loop["lightning_vs_bare"] > 0
    segmentation = json.loads((results / "segmentation.json").read_text())["modes"]
    assert [r["mode"] for r in segmentation] == ["eager", "cudagraphs-eager"]
    # The real run, its loader workers running, stopped on a SIGTERM sent to it (exit 75, not a worker's
    # death), and the same command took it to its end.
    run = json.loads((results / "real_run_metrics.json").read_text())
    assert run["global_step"] == 2 * 256 // 16 and run["config"]["data"]["num_workers"] == 2
    assert "| exit code (75: stopped, step saved) | 75 |" in (results / "real_run.md").read_text()
    # The data bench wrote the JPEGs the JPEG run then trained on, decoded and augmented on the device.
    assert json.loads((results / "data_pipeline.json").read_text())["data"]["images"] == 16
    jpeg_run = json.loads((results / "jpeg_run_metrics.json").read_text())
    assert jpeg_run["global_step"] == 16 // 2 and jpeg_run["config"]["data"]["pipeline"] == "device"
    graph = json.loads((results / "graph_vs_eager.json").read_text())
    assert graph["false"]["val/top1"] == graph["cudagraphs-eager"]["val/top1"]
