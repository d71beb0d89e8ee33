"""The benchmark runs end to end on a tiny configuration and writes valid JSON and markdown."""

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
from helpers import ROOT

from shunted_lab.bench import main, parse_args
from shunted_lab.config import CONF_DIR


@pytest.mark.slow
def test_bench_tiny_end_to_end_with_reference_under_bf16_autocast(tmp_path):
    # The GPU targets are bf16; the same autocast path runs here on the CPU, reference and peer included.
    out = tmp_path / "bench.json"
    argv = ["--models", "shunted_t", "--attention", "shunted", "--reference", "--peers", "resnet18"]
    argv += ["--precision", "bf16"]
    argv += ["--ffn-recompute", "on", "--op-times"]
    argv += ["--batch-size", "1", "--image-size", "64", "--warmup", "1", "--iters", "1", "--rounds", "2"]
    argv += ["--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["peak_kind"] == "measured bf16 matmul"
    results = {r["kind"]: r for r in report["results"]}
    assert [r["kind"] for r in report["results"]] == ["ours", "reference", "peer"]
    reference, fast = results["reference"], results["ours"]
    assert reference["max_rel_diff_vs_fast"] < 1e-5
    assert reference["params"] == fast["params"] and abs(reference["gmacs"] - fast["gmacs"]) < 1e-9
    assert fast["vs_reference"]["train_speedup"] > 0 and fast["peak_memory_mb"] > 0
    # The FFNs recompute their hidden tensors; the reference keeps them and its attention maps.
    assert fast["vs_reference"]["saved_for_backward_ratio"] < 0.8
    # Both rounds are pooled: one timed iteration per round, one ratio per round.
    assert fast["rounds"] == 2 and len(fast["train_seconds"]) == 2
    assert len(fast["vs_reference"]["train_speedup_per_round"]) == 2
    for r in report["results"]:
        assert r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0 and 0 < r["train_flop_share_of_peak"]

    # Op by op: the reference builds its attention maps (bmm, softmax), the fast path never does.
    def softmaxes(r):
        return {op for op in r["train_op_ms"] if "softmax" in op and "log_softmax" not in op}

    assert "aten.bmm" in reference["train_op_ms"] and softmaxes(reference)
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in fast["train_op_ms"] and not softmaxes(fast)
    table = out.with_suffix(".md").read_text()
    assert "| ms per training step, op by op |" in table and "| all ops |" in table
    assert "shunted_t shunted/detail_specific (reference)" in table and "timm resnet18" in table
    assert "shunted_t shunted/detail_specific [FFN recompute on]" in table and "glibc keeping freed memory" in table
    assert "| vs reference |" in table and "bf16" in table


@pytest.mark.slow
def test_an_entry_that_fails_is_listed_and_the_others_are_kept(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "no_such_preset,shunted_nano", "--attention", "vit"]  # the first entry fails
    argv += ["--batch-size", "2", "--image-size", "32", "--warmup", "1", "--iters", "1", "--rounds", "1"]
    assert main([*argv, "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert [(r["kind"], r["model"]) for r in report["results"]] == [("ours", "shunted_nano")]
    assert list(report["failures"]) == ["no_such_preset vit/detail_specific"]
    failed = "Failed: no_such_preset vit/detail_specific: benchmark of no_such_preset vit/detail_specific failed: "
    assert failed + "RuntimeError: Unknown model (no_such_preset)" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_loop_overhead_alternates_bare_and_lightning_runs(tmp_path):
    out = tmp_path / "loop.json"
    argv = ["--loop-overhead", "--models", "shunted_nano", "--image-size", "64", "--batch-size", "4"]
    assert main([*argv, "--warmup", "1", "--iters", "3", "--rounds", "2", "--out", str(out)]) == 0
    loop = json.loads(out.read_text())["loop"]
    assert len(loop["rounds"]["bare"]) == len(loop["rounds"]["lightning"]) == 2
    assert len(loop["lightning_vs_bare_per_round"]) == 2
    assert loop["lightning_vs_bare"] > 0 and loop["loader_vs_model"] > 0


def test_every_config_ships_inside_the_package(tmp_path):
    # The configs live in conf/ at the top (src/shunted_lab/conf links to it); every run reads them from
    # the package, so the wheel a non-editable install unpacks must carry each one.
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*wheel, str(ROOT)], check=True, capture_output=True, timeout=300)
    [built] = tmp_path.glob("shunted_lab-*.whl")
    shipped = {n for n in zipfile.ZipFile(built).namelist() if n.startswith("shunted_lab/conf/")}
    configs = {f"shunted_lab/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert CONF_DIR.resolve() == ROOT / "conf" and len(configs) > 50 and shipped == configs


def test_the_subcommands_are_the_flags_they_stand_for():
    assert parse_args(["loop", "--batch-size", "4"]) == parse_args(["--loop-overhead", "--batch-size", "4"])
    data = parse_args(["data", "data=imagenet", "data.root=/x", "--loader-workers", "1,4"])
    assert data.data == ["data=imagenet", "data.root=/x"] and data.loader_workers == [1, 4]
    assert data == parse_args(["--data", "data=imagenet", "data.root=/x", "--loader-workers", "1,4"])
    models = parse_args(["models", "--models", "shunted_t"])
    assert models == parse_args(["--models", "shunted_t"]) and not models.loop_overhead and models.data is None


def test_op_times_refuse_cuda():
    with pytest.raises(SystemExit):
        parse_args(["--op-times", "--device", "cuda"])


@pytest.mark.slow  # each step runs out its timeout
@pytest.mark.parametrize(
    "python,ending",
    [
        ("#!/bin/bash\ntrap '' TERM\nsleep 600\n", "hung, killed 1 s after its SIGTERM at 1 s"),  # ignores SIGTERM
        ("#!/bin/bash\nexit 3\n", "failed with exit code 3"),
    ],
)
def test_the_gpu_bench_script_ends_every_step_and_says_which_did_not_finish(tmp_path, python, ending):
    fake = tmp_path / "python"
    fake.write_text(python)
    fake.chmod(0o755)
    steps = dict(BATCHES="2", MIXERS="vit", STEP_TIMEOUT="1", KILL_AFTER="1")
    env = {**os.environ, **steps, "PYTHON": str(fake), "RESULTS": str(tmp_path / "out")}
    start = time.monotonic()
    script = str(ROOT / "benchmarks" / "gpu_bench.sh")
    proc = subprocess.run(["bash", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 40  # seven steps of at most 1 s + 1 s
    assert proc.returncode != 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert summary.startswith("Steps that did not finish")
    steps = (
        "shunted_b2",
        "real_run (stop)",
        "data_pipeline",
        "jpeg_run",
        "loop_overhead",
        "vit_plain_b2",
        "segmentation",
    )
    assert [line for line in summary.splitlines() if line.startswith("- ")] == [f"- {s}: {ending}" for s in steps]


@pytest.mark.slow
def test_the_gpu_bench_script_skips_the_steps_its_budget_leaves_no_time_for(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/bash\ntrap '' TERM\nsleep 600\n")  # hangs: each step takes its whole limit
    fake.chmod(0o755)
    steps = dict(BATCHES="2", MIXERS="vit", STEP_TIMEOUT="2", KILL_AFTER="1", BUDGET="7", MIN_STEP="2")
    env = {**os.environ, **steps, "PYTHON": str(fake), "RESULTS": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_bench.sh")], cwd=ROOT, env=env, capture_output=True)
    assert proc.returncode != 0
    listed = [line for line in (tmp_path / "out" / "summary.md").read_text().splitlines() if line.startswith("- ")]
    assert listed[:2] == [
        "- shunted_b2: hung, killed 1 s after its SIGTERM at 2 s",
        "- real_run (stop): hung, killed 1 s after its SIGTERM at 2 s",
    ]
    skipped = ["- data_pipeline", "- jpeg_run", "- loop_overhead", "- vit_plain_b2", "- segmentation"]
    assert [line.split(":")[0] for line in listed[2:]] == skipped
    assert all("skipped" in line and "of the 7 s budget left" in line for line in listed[2:])


def test_the_data_bench_measures_both_pipelines_per_worker_and_in_the_loader(tmp_path):
    out = tmp_path / "data.json"
    argv = ["--data", "data.batch_size=8", "data.image_size=32", "--make-images", "16", "--images-dir", str(tmp_path)]
    assert main([*argv, "--loader-workers", "0,1", "--loader-epochs", "1", "--rounds", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())["data"]
    assert data["images"] == 16 and data["image_size"] == 32
    assert len(data["per_worker"]) == 4 and all(rate > 0 for rate in data["per_worker"].values())
    assert {name: list(rates) for name, rates in data["loaders"].items()} == {
        "workers": ["0", "1"],
        "device": ["0", "1"],
    }
    assert data["device_stage"]["images_per_s"] > 0 and data["speedup"] > 0
    assert len(list((tmp_path / "train").rglob("*.jpg"))) == 16  # --images-dir keeps them
    assert "| data.pipeline=device |" in out.with_suffix(".md").read_text()
