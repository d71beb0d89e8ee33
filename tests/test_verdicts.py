"""Verdicts: the paired statistics against scipy and by hand, their coverage, the comparisons a sweep
makes, and a real sweep's verdicts.csv against a paired t computed here from its jobs' metrics.json."""

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_sweep import fake_job, multirun

from shunted_lab.report import main as report_main
from shunted_lab.sweeps.jobs import load_jobs
from shunted_lab.sweeps.verdicts import (
    COLUMNS,
    comparisons,
    holm,
    paired,
    seeds_needed,
    sentence,
    verdict,
    verdict_rows,
)


def test_the_t_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(20261206)
    true_difference, covered, sweeps = 0.012, 0, 2000
    for _ in range(sweeps):
        b = rng.normal(0.70, 0.05, 4)  # the seed's own luck, shared by both cells
        a = b + true_difference + rng.normal(0, 0.02, 4)
        row = paired(list(a), list(b))
        covered += row["ci_low"] <= true_difference <= row["ci_high"]
    assert 0.935 <= covered / sweeps <= 0.965


def test_the_statistics_are_scipys_and_holm_is_holms_by_hand():
    a, b = [0.71, 0.69, 0.74, 0.70], [0.68, 0.69, 0.70, 0.66]
    row = paired(a, b)
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(0.95)
    assert row["n"] == 4 and row["diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert (row["ci_low"], row["ci_high"], row["p"]) == pytest.approx((interval.low, interval.high, test.pvalue))
    assert row["sd"] == pytest.approx(np.std(np.subtract(a, b), ddof=1))
    assert row["p_a_better"] == pytest.approx((3 + 0.5) / 4)  # one tie
    # Holm on four p-values: sorted 0.004, 0.01, 0.03, 0.2 times 4, 3, 2, 1, kept non-decreasing.
    assert holm([0.03, 0.2, 0.004, 0.01]) == pytest.approx([0.06, 0.2, 0.016, 0.03])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 0.4 x 2, then max(0.8, 0.5)
    assert math.isnan(holm([math.nan, 0.01])[0]) and holm([math.nan, 0.01])[1] == pytest.approx(0.01)


def test_the_bootstrap_interval_is_seeded():
    a, b = [0.71, 0.69, 0.74, 0.70, 0.72], [0.68, 0.69, 0.70, 0.66, 0.73]
    first, second = paired(a, b), paired(a, b)
    assert (first["boot_low"], first["boot_high"]) == (second["boot_low"], second["boot_high"])
    assert first["boot_low"] < first["diff"] < first["boot_high"]


def test_seeds_needed_follows_the_power_of_the_paired_t_test():
    # One-sample t-test at 0.05, 80% power: effect 1 needs 10, 0.5 needs 34 (Cohen's tables).
    assert seeds_needed(0.01, 0.01) == 10 and seeds_needed(-0.5, 1.0) == 34
    assert seeds_needed(0.0, 0.3) is None and seeds_needed(0.02, 0.0) == 2
    n = seeds_needed(0.004, 0.01)  # check the power it claims, by simulation
    rng = np.random.default_rng(1)
    rejected = [stats.ttest_1samp(rng.normal(0.004, 0.01, n), 0).pvalue < 0.05 for _ in range(2000)]
    assert 0.77 < np.mean(rejected) < 0.86


def test_a_verdict_never_claims_a_side_when_its_interval_contains_zero():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(3, 8))
        b = rng.normal(0.7, 0.05, n)
        row = paired(list(b + rng.normal(rng.normal(0, 0.02), 0.02, n)), list(b))
        row["p_holm"] = row["p"] * rng.uniform(0.5, 1.0)  # even an adjustment that lowered p
        if row["ci_low"] <= 0 <= row["ci_high"]:
            assert verdict(row) == "not resolved"
        elif row["p"] < 0.05:
            assert verdict(row) == ("a better" if row["diff"] > 0 else "b better")
    assert verdict(dict(paired([0.9, 0.9], [0.1, 0.1]), p_holm=0.0)) == "too few seeds"


def grid(tmp_path: Path, mixers: list[str], ffns: list[str], seeds: list[int], skip: tuple = ()) -> Path:
    """A saved sweep of fake jobs: top-1 of a job is its mixer's and FFN's rank plus the seed's luck."""
    rng = np.random.default_rng(0)
    luck = rng.normal(0, 0.05, len(seeds))
    number = 0
    for m, mixer in enumerate(mixers):
        for f, ffn in enumerate(ffns):
            for s in seeds:
                overrides = [f"attention={mixer}", f"mlp={ffn}", f"seed={s}"]
                value = 0.5 + 0.01 * m + 0.1 * f + luck[s] + rng.normal(0, 0.001)
                metrics = {"val/top1": value, "test/top1": value, "train/images_per_sec": 100.0 + m}
                metrics = None if (mixer, ffn, s) in skip else metrics
                fake_job(tmp_path, f"{number}_{mixer}-{ffn}-seed{s}", overrides, metrics, None if metrics else "boom")
                number += 1
    return tmp_path


def test_every_pair_of_every_swept_axis_is_compared_with_the_others_held(tmp_path):
    jobs, common = load_jobs(grid(tmp_path, ["vit", "pvt", "swin", "shunted"], ["plain", "detail_specific"], [0, 1]))
    found = {(c.axis, c.a, c.b, c.fixed) for c in comparisons(jobs, common)}
    assert len(found) == 6 * 2 + 4  # 6 mixer pairs per FFN, one FFN pair per mixer
    assert ("attention", "shunted", "pvt", "mlp=detail_specific") in found  # the later value is a
    assert ("mlp", "detail_specific", "plain", "attention=vit") in found


def test_a_resolved_difference_is_named_and_a_missing_seed_is_not_dropped_silently(tmp_path):
    sweep = grid(tmp_path, ["pvt", "shunted"], ["plain", "detail_specific"], [0, 1, 2, 3], skip=(("pvt", "plain", 2),))
    jobs, common = load_jobs(sweep)
    rows = verdict_rows(jobs, common)
    ffn = next(r for r in rows if r["metric"] == "val/top1" and r["axis"] == "mlp" and r["fixed"] == "attention=pvt")
    assert ffn["verdict"] == "a better" and ffn["a"] == "detail_specific" and ffn["n"] == 3
    assert ffn["missing"] == "seed 2 missing in mlp=plain"
    assert "seed 2 missing in mlp=plain" in sentence(ffn) and "**detail_specific better**" in sentence(ffn)
    mixers = next(r for r in rows if r["metric"] == "val/top1" and r["axis"] == "attention" and "detail" in r["fixed"])
    assert mixers["n"] == 4 and mixers["diff"] == pytest.approx(0.01, abs=0.003) and mixers["missing"] == ""


def test_a_comparison_left_unresolved_always_needs_more_seeds_than_it_has(tmp_path):
    """Seeds are planned at the level Holm asks of the metric's comparisons, so that a count resolves."""
    rng = np.random.default_rng(5)
    for number, (mixer, seed) in enumerate((m, s) for m in ("vit", "pvt", "swin", "shunted") for s in range(4)):
        value = 0.6 + 0.02 * ("vit", "pvt", "swin", "shunted").index(mixer) + rng.normal(0, 0.02)
        metrics = {"val/top1": value, "test/top1": value}
        fake_job(tmp_path, f"{number}_{mixer}-plain-seed{seed}", [f"attention={mixer}", f"seed={seed}"], metrics)
    rows = verdict_rows(*load_jobs(tmp_path))
    unresolved = [r for r in rows if r["verdict"] == "not resolved" and r["seeds_needed"] is not None]
    assert len(unresolved) >= 3 and all(r["seeds_needed"] > r["n"] for r in unresolved)


@pytest.fixture(scope="module")
def pvt_vs_shunted(tmp_path_factory) -> Path:
    """A real sweep: attention=pvt,shunted x seed=0,1,2 at the tiny size."""
    tmp_path = tmp_path_factory.mktemp("pvt_vs_shunted")
    proc = multirun(tmp_path, "attention=pvt,shunted", "seed=0,1,2", "logger=csv", "data.num_train=32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "sweep"


def csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def expected_row(sweep: Path, metric: str, seeds: list[str]) -> tuple[int, float, float, float, float]:
    """A paired t of shunted minus pvt on `metric`, from the jobs' own metrics.json."""
    values = {}
    for path in sweep.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        values[(m["config"]["attention"]["name"], str(m["config"]["seed"]))] = m[metric]
    a, b = [values[("shunted", s)] for s in seeds], [values[("pvt", s)] for s in seeds]
    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(0.95)
    return len(a), float(np.mean(np.subtract(a, b))), interval.low, interval.high, test.pvalue


def test_a_sweeps_verdicts_are_the_paired_t_of_its_jobs(pvt_vs_shunted):
    rows = csv_rows(pvt_vs_shunted / "verdicts.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert {r["metric"] for r in rows} >= {"val/top1", "test/top1", "train/images_per_sec"}
    row = next(r for r in rows if r["metric"] == "val/top1")
    assert (row["axis"], row["a"], row["b"], row["fixed"]) == ("attention", "shunted", "pvt", "")
    n, diff, low, high, p = expected_row(pvt_vs_shunted, "val/top1", ["0", "1", "2"])
    assert int(row["n"]) == n == 3
    got = [float(row[k]) for k in ("diff", "ci_low", "ci_high", "p")]
    assert got == pytest.approx([diff, low, high, p], abs=1e-9)
    assert row["verdict"] in ("a better", "b better", "not resolved") and row["missing"] == ""
    summary = (pvt_vs_shunted / "summary.md").read_text()
    assert "## Verdicts" in summary and "- shunted vs pvt, val top-1: " in summary
    assert (pvt_vs_shunted / "verdicts.png").stat().st_size > 0


def test_a_failed_job_is_named_in_the_row_and_the_others_still_pair(pvt_vs_shunted, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(pvt_vs_shunted, sweep)
    [failed] = [p.parent for p in sweep.glob("*/metrics.json") if p.parent.name.endswith("pvt-detail_specific-seed1")]
    (failed / "metrics.json").unlink()
    (failed / "failed.json").write_text(json.dumps({"error": "RuntimeError: out of memory", "overrides": []}))
    assert report_main([str(sweep), "--seeds-for", "0.01"]) == 0
    row = next(r for r in csv_rows(sweep / "verdicts.csv") if r["metric"] == "test/top1")
    assert row["missing"] == "seed 1 missing in attention=pvt" and row["verdict"] == "too few seeds"
    n, diff, *_ = expected_row(sweep, "test/top1", ["0", "2"])
    assert int(row["n"]) == n == 2 and float(row["diff"]) == pytest.approx(diff, abs=1e-9)
    out = capsys.readouterr().out
    assert "seed 1 missing in attention=pvt" in out
    assert "## Seeds to resolve a difference of 0.01" in out and "shunted vs pvt, val top-1: " in out


def test_a_task_eval_of_the_jobs_gets_verdicts_of_its_own(tmp_path):
    """Scores that `task=eval` wrote beside each job (eval.json: the same checkpoints at another image
    size, say) are compared as the sweep's own are, and named as the evaluation's."""
    sweep = grid(tmp_path, ["pvt", "shunted"], ["plain"], [0, 1, 2])
    for job in sorted(sweep.glob("*_*")):
        shunted = "shunted" in job.name
        seed = int(job.name[-1])
        scores = {"test/top1": 0.5 + 0.1 * shunted + 0.01 * seed, "test/top1_small": 0.3 + 0.05 * seed}
        (job / "eval.json").write_text(json.dumps(scores))
    rows = {r["metric"]: r for r in verdict_rows(*load_jobs(sweep))}
    assert rows["eval:test/top1"]["diff"] == pytest.approx(0.1) and rows["eval:test/top1"]["verdict"] == "a better"
    assert rows["eval:test/top1_small"]["diff"] == pytest.approx(0.0)
    assert sentence(rows["eval:test/top1"]).startswith("shunted vs pvt, task=eval test top-1:")
