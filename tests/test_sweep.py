"""Sweeps end to end: multirun + W&B offline, a failing cell, the report, DDP validation."""

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import (
    SHAPES_TINY,
    TINY,
    compose_cfg,
    read_metrics,
    run_command,
    run_env,
    wandb_logged,
    wandb_records,
    write_broken_image,
    write_image_folder,
)
from omegaconf import OmegaConf

from shunted_lab.report import main as report_main
from shunted_lab.run_dirs import sweep_id_of
from shunted_lab.sweeps import wandb_report as wandb_report_module
from shunted_lab.sweeps.callback import SweepReport
from shunted_lab.sweeps.wandb_run import SUMMARY_TABLE, VERDICTS_TABLE, report_run_id
from shunted_lab.training.classifier import ImageClassifier
from shunted_lab.training.fit import train


def multirun(tmp_path: Path, *overrides: str, sweep_dir: bool = True) -> subprocess.CompletedProcess:
    """run.py -m in tmp_path (the default paths.root_dir: the launch directory), into tmp_path/sweep,
    or with sweep_dir=False into the default logs/multirun/<time>."""
    env = run_env(NETRC=str(tmp_path / "no-netrc"))  # no credentials: W&B must go offline by itself
    return subprocess.run(
        [
            *run_command(),
            "-m",
            *([f"hydra.sweep.dir={tmp_path}/sweep"] if sweep_dir else []),
            *TINY,
            *(SHAPES_TINY if not any(o.startswith("data=") for o in overrides) else []),
            "logger=csv_wandb",
            *overrides,
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=600,
    )


def summary_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory) -> Path:
    """A real sweep, two cells by two seeds, analyzed and logged to W&B offline: its sweep directory."""
    tmp_path = tmp_path_factory.mktemp("two_by_two")
    analysis = ["analysis.enabled=true", "analysis.num_images=4", "analysis.show=1"]
    proc = multirun(tmp_path, "attention=vit,shunted", "seed=0,1", *analysis, sweep_dir=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [sweep] = (tmp_path / "logs" / "multirun").iterdir()  # the default sweep directory, named by time
    return sweep


@pytest.mark.slow
def test_two_by_two_multirun_with_wandb_groups_and_report(two_by_two):
    sweep = two_by_two
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 4
    ids, groups = set(), set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        run = metrics["wandb"]
        cell = f"shunted_nano-shapes-{metrics['attention']}-{metrics['mlp']}"
        assert run["group"] == cell and run["job_type"] == "train"
        assert set(run["tags"]) == {
            "shunted_nano",
            "shapes",
            f"attention={metrics['attention']}",
            f"mlp={metrics['mlp']}",
            f"sweep={sweep_id_of(sweep)}",
        }
        offline = list((job / "wandb").glob(f"offline-run-*-{run['id']}"))
        assert len(offline) == 1
        record = next(offline[0].glob("*.wandb")).read_bytes()
        assert cell.encode() in record and b"mlp=" in record  # group and tags reached the run record
        # The analysis of the best checkpoint: its figures are images of the run, its numbers metrics.
        media = sorted(p.name for p in offline[0].glob("files/media/images/analysis/*.png"))
        assert [m.rsplit("_", 2)[0] for m in media] == ["attention_0", "attention_distance", "erf", "gradcam"], media
        assert b"analysis/erf50_s4" in record
        artifacts = wandb_logged(wandb_records(offline[0]))["artifacts"]
        assert not [a for a in artifacts if a.type == "model"]  # a sweep's jobs upload no checkpoint
        ids.add(run["id"])
        groups.add(run["group"])
    assert len(ids) == 4 and len(groups) == 2  # a cell's seeds share its group
    rows = summary_rows(sweep)
    assert len(rows) == 2 and all(r["seeds"] == "2" and not r["failed"] for r in rows)
    main_table, rest = (sweep / "summary.md").read_text().split("## Evaluation and analysis")
    extra_table, group_table = rest.split("## Top-1 per group")  # SHAPES' object-size bins
    assert (
        main_table.count("| attention=") == extra_table.count("| attention=") == group_table.count("| attention=") == 2
    )
    assert "logger=csv_wandb" not in rows[0]["cell"]
    assert rows[0]["analysis:erf50_s1_mean"] and "`analysis:mad_px_s1`" in extra_table
    test_images = json.loads((jobs[0] / "metrics.json").read_text())["config"]["data"]["num_test"]
    assert sum(float(rows[0][f"test/count_{size}_mean"]) for size in ("small", "medium", "large")) == test_images
    for png in (
        "top1_vs_gmacs.png",
        "top1_vs_throughput.png",
        "val_curves.png",
        "erf_by_cell.png",
        "top1_by_group.png",
    ):
        assert (sweep / png).stat().st_size > 1000


@pytest.mark.slow
def test_the_sweeps_summary_is_a_wandb_table_in_its_report_run(two_by_two):
    sweep_id = sweep_id_of(two_by_two)
    # Refreshed after each job; offline, each refresh is a folder of its own for `wandb sync` to replay.
    refreshes = sorted(two_by_two.glob(f"wandb/offline-run-*-{report_run_id(sweep_id)}"))
    assert len(refreshes) == 4
    run = refreshes[-1]
    logged = wandb_logged(wandb_records(run))
    assert (logged["run"].job_type, logged["run"].run_group) == ("report", sweep_id)
    assert list(logged["run"].tags) == [f"sweep={sweep_id}"]
    assert len(logged["history"][f"{SUMMARY_TABLE}/_type"]) == 1  # the last job's refresh, one log call
    [table] = run.glob(f"files/media/table/{SUMMARY_TABLE}_*.table.json")
    table = json.loads(table.read_text())
    with open(two_by_two / "summary.csv") as f:
        header = next(csv.reader(f))
    assert table["columns"] == header and len(table["data"]) == 2
    by_cell = {row[0]: dict(zip(header, row, strict=True)) for row in table["data"]}
    for row in summary_rows(two_by_two):
        assert by_cell[row["cell"]]["val/top1_mean"] == pytest.approx(float(row["val/top1_mean"]))
    figures = {k.split("/")[1] for k in logged["history"] if k.startswith("figures/")}
    assert figures == {p.stem for p in two_by_two.glob("*.png")} and "verdicts" in figures
    [verdicts] = run.glob(f"files/media/table/{VERDICTS_TABLE}_*.table.json")
    verdicts = json.loads(verdicts.read_text())
    with open(two_by_two / "verdicts.csv") as f:
        written = list(csv.DictReader(f))
    assert verdicts["columns"] == list(written[0]) and len(verdicts["data"]) == len(written)
    row = dict(zip(verdicts["columns"], verdicts["data"][0], strict=True))
    assert (row["a"], row["b"], row["n"], row["verdict"]) == ("shunted", "vit", 2, "too few seeds")
    assert row["diff"] == pytest.approx(float(written[0]["diff"]))


@pytest.mark.slow
def test_the_sweeps_wandb_report_offline_and_published_through_a_double(two_by_two, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(two_by_two / "no-netrc"))
    sweep_id = sweep_id_of(two_by_two)
    # Offline: the spec is saved, nothing is sent, and the user is told how to publish; the same at the
    # end of a multirun with hydra.callbacks.sweep_report.wandb_report=true.
    SweepReport(wandb_report=True).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(two_by_two)}}}))
    assert (two_by_two / "wandb_report.json").is_file()
    refreshes = len(list(two_by_two.glob(f"wandb/offline-run-*-{report_run_id(sweep_id)}")))
    assert report_main([str(two_by_two), "--wandb-report", "--wandb-workspace", "--entity", "lab"]) == 0
    # The command refreshed the report run's table first (eval columns may have come since).
    assert len(list(two_by_two.glob(f"wandb/offline-run-*-{report_run_id(sweep_id)}"))) == refreshes + 1
    out = capsys.readouterr().out
    assert "nothing was sent" in out and f"python -m shunted_lab.report {two_by_two} --wandb-report" in out
    spec = json.loads((two_by_two / "wandb_report.json").read_text())
    assert spec["type"] == "Report" and (spec["entity"], spec["project"]) == ("lab", "shunted-lab")
    text = json.dumps(spec)
    assert "attention=vit,shunted seed=0,1" in text  # the sweep's command, from Hydra's multirun.yaml
    grids = [b for b in spec["blocks"] if b["type"] == "PanelGrid"]
    assert len(grids) == 2
    [jobs], [report_run] = grids[0]["runsets"], grids[1]["runsets"]
    tag = f"sweep={sweep_id}"
    assert jobs["filters"] == f"Metric(\"Tags\") in ['{tag}'] and Metric(\"JobType\") == 'train'"
    assert jobs["groupby"] == ["group"]  # one line per variant cell, its seeds aggregated
    assert report_run["filters"] == f"Metric(\"Tags\") in ['{tag}'] and Metric(\"JobType\") == 'report'"
    panels = {p["type"]: [] for p in grids[0]["panels"]}
    for p in grids[0]["panels"]:
        panels[p["type"]].append(p)
    assert [(p["y"], p["x"], p["groupby_aggfunc"], p["groupby_rangefunc"]) for p in panels["LinePlot"]] == [
        (["val/top1"], "trainer/global_step", "mean", "stddev"),
        (["val/loss"], "trainer/global_step", "mean", "stddev"),
    ]
    assert [(p["x"]["name"], p["y"]["name"]) for p in panels["ScatterPlot"]] == [
        ("gmacs", "val/top1"),
        ("train/images_per_sec", "val/top1"),
    ]
    [coordinates] = panels["ParallelCoordinatesPlot"]
    columns = [(c["metric"]["type"], c["metric"]["name"]) for c in coordinates["columns"]]
    assert columns == [("Config", "attention.name"), ("Config", "mlp.name"), ("SummaryMetric", "val/top1")]
    table, verdicts, media = grids[1]["panels"]
    assert (table["type"], table["table_name"]) == ("WeavePanelSummaryTable", SUMMARY_TABLE)
    assert (verdicts["type"], verdicts["table_name"]) == ("WeavePanelSummaryTable", VERDICTS_TABLE)
    assert sorted(media["media_keys"]) == sorted(f"figures/{p.stem}" for p in two_by_two.glob("*.png"))
    workspace = json.loads((two_by_two / "wandb_workspace.json").read_text())
    assert workspace["type"] == "Workspace" and workspace["sections"][0]["panels"] == grids[0]["panels"]

    # With credentials: saved through the double, then updated in place on the next publish.
    saved = []

    def save(view, *args, **kwargs):
        saved.append(view)
        view.id = view.id or "r1"

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key of the right form, never sent
    monkeypatch.setattr(wandb_report_module, "log_sweep_summary", lambda *args: None)  # tested offline above
    monkeypatch.setattr(wr.Report, "save", save)
    monkeypatch.setattr(wr.Report, "url", property(lambda r: f"https://wandb.test/{r.entity}/{r.id}"))
    monkeypatch.setattr(ws.Workspace, "save", lambda view: saved.append(view))
    monkeypatch.setattr(ws.Workspace, "url", property(lambda w: "https://wandb.test/workspace"))
    assert report_main([str(two_by_two), "--wandb-report", "--entity", "lab"]) == 0
    assert report_main([str(two_by_two), "--wandb-report", "--wandb-workspace", "--entity", "lab"]) == 0
    assert [type(v).__name__ for v in saved] == ["Report", "Report", "Workspace"]
    assert saved[1].id == "r1" and (two_by_two / "wandb_report_id").read_text() == "r1"  # the same report
    assert "W&B report: https://wandb.test/lab/r1" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failing_cell_keeps_the_others_and_the_summary(tmp_path):
    # One head in stage 1 is fine for vit but impossible for shunted (heads split in two).
    proc = multirun(tmp_path, "attention=vit,shunted", "+model.num_heads=[1,2,4,8]", "logger=csv")
    assert proc.returncode != 0
    failures = [line for line in (proc.stdout + proc.stderr).splitlines() if "job 1 failed" in line]
    assert len(failures) == 1 and "attention=shunted" in failures[0] and "num_heads=1" in failures[0]
    sweep = tmp_path / "sweep"
    assert len(list(sweep.glob("*/metrics.json"))) == 1
    rows = {r["cell"].split()[0]: r for r in summary_rows(sweep)}
    assert rows["attention=vit"]["seeds"] == "1" and not rows["attention=vit"]["failed"]
    assert rows["attention=shunted"]["seeds"] == "0"
    assert "num_heads=1 is not allowed for shunted" in rows["attention=shunted"]["failed"]
    assert "Failed or incomplete" in (sweep / "summary.md").read_text()


def fake_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None, error: str | None = None) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        full = {"params": 1000, "gmacs": 0.5, "train/images_per_sec": 100.0, "wall_time_s": 10.0, **metrics}
        (job / "metrics.json").write_text(json.dumps(full))
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text(f"epoch,step,val/top1\n0,10,0.3\n1,20,{metrics['val/top1']}\n")
    if error:
        (job / "failed.json").write_text(json.dumps({"error": error}))


def test_report_command_on_a_saved_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_job(sweep, "a0", ["attention=vit", "seed=0"], {"val/top1": 0.5, "test/top1": 0.4})
    fake_job(sweep, "a1", ["attention=vit", "seed=1"], {"val/top1": 0.7, "test/top1": 0.6})
    fake_job(sweep, "b0", ["attention=swin", "seed=0"], {"val/top1": 0.9, "test/top1": 0.8})
    fake_job(sweep, "b1", ["attention=swin", "seed=1"], None, error="ValueError: boom")
    fake_job(sweep, "b2", ["attention=swin", "seed=2"], None)  # killed: neither metrics nor failure
    assert report_main([str(sweep)]) == 0
    rows = {r["cell"]: r for r in summary_rows(sweep)}
    assert list(rows) == ["attention=swin", "attention=vit"]  # best val/top1 first
    vit, swin = rows["attention=vit"], rows["attention=swin"]
    assert vit["seeds"] == "2" and float(vit["val/top1_mean"]) == pytest.approx(0.6)
    assert float(vit["val/top1_std"]) == pytest.approx(0.1414, abs=1e-4)
    assert swin["seeds"] == "1" and "seed 1: failed (ValueError: boom)" in swin["failed"]
    assert "seed 2: incomplete" in swin["failed"]
    assert "| attention=vit | 2 | 60.0 +- 14.1 | 50.0 +- 14.1 |" in capsys.readouterr().out
    assert report_main([str(tmp_path / "missing")]) == 2
    assert report_main([str(sweep), "--wandb-report"]) == 2  # its jobs logged to CSV only
    assert "no completed job logged to W&B" in capsys.readouterr().err


def test_the_reports_parallel_coordinates_name_the_logged_config_keys():
    from shunted_lab.sweeps.wandb_report import config_key

    config = {"attention": {"name": "vit"}, "optim": {"lr": 1e-3}, "seed": 0}
    assert config_key("attention", config) == "attention.name"  # a group choice: its name
    assert config_key("optim.lr", config) == config_key("+optim.lr", config) == "optim.lr"
    assert config_key("seed", config) == "seed"
    assert config_key("optim", config) is None  # a group without a name has no one column


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_counts_every_validation_image_once(tmp_path):
    # 33 validation images over 2 ranks: a padding sampler would count one of them twice.
    cfg = compose_cfg(tmp_path, "trainer=ddp_cpu", "data.num_val=33", "data.batch_size=8")
    train(cfg)
    metrics = read_metrics(cfg)
    module = ImageClassifier.load_from_checkpoint(
        metrics["best_checkpoint"], model=__import__("timm").create_model("shunted_nano"), weights_only=True
    ).eval()
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    data.setup()
    images = torch.stack([data.val_set[i][0] for i in range(33)])
    labels = torch.tensor([data.val_set[i][1] for i in range(33)])
    with torch.no_grad():
        correct = (module(images).argmax(-1) == labels).sum().item()
    assert metrics["val/top1"] == pytest.approx(correct / 33)
    assert metrics["config"]["trainer"]["devices"] == 2
    # Each rank counts into its own metric states (spawned processes must not share them).
    for split, size in (("val", 33), ("test", cfg.data.num_test)):
        assert sum(metrics[f"{split}/count_{g}"] for g in ("small", "medium", "large")) == size, split


@pytest.mark.slow
def test_a_job_failing_mid_fit_does_not_leak_its_wandb_run_into_the_next(tmp_path):
    write_image_folder(tmp_path / "images")
    write_broken_image(tmp_path / "images")
    data = ["data=imagefolder", f"data.root={tmp_path}/images", "data.image_size=32", "data.num_workers=0"]
    proc = multirun(tmp_path, *data, "data.batch_size=4", "data.skip_bad_images=false,true")
    assert proc.returncode != 0  # the first job failed reading the broken image, mid-fit
    failed, done = sorted((tmp_path / "sweep").glob("[0-9]_*"))
    assert "cannot read image" in json.loads((failed / "failed.json").read_text())["error"]
    run = json.loads((done / "metrics.json").read_text())["wandb"]
    failed_id = (failed / "wandb_run_id").read_text()
    assert run["id"] != failed_id and run["group"] == "shunted_nano-imagefolder-shunted-detail_specific"
    # Each job wrote its own offline run; the second job's metrics landed in its own.
    failed_run = list(failed.glob(f"wandb/offline-run-*-{failed_id}"))
    assert len(failed_run) == 1
    # W&B marks the failed run failed: it was finished with exit code 1 (wandb's own log says so).
    assert "got exitcode: 1" in (failed_run[0] / "logs" / "debug.log").read_text()
    assert "got exitcode: 0" in next(done.glob(f"wandb/offline-run-*-{run['id']}/logs/debug.log")).read_text()
    record = next(done.glob(f"wandb/offline-run-*-{run['id']}/*.wandb")).read_bytes()
    assert run["group"].encode() in record and b"val/top1" in record
    assert not list(done.glob(f"wandb/offline-run-*-{failed_id}"))
