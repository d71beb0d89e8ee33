"""The benchmark runs end to end on a tiny configuration and writes valid JSON and markdown."""

import json

from shunted_lab.bench import main


def test_bench_tiny_end_to_end_with_reference(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "shunted_t", "--attention", "shunted,pvt", "--reference", "--peers", "resnet18"]
    argv += ["--batch-size", "1", "--image-size", "64", "--warmup", "1", "--iters", "1", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    results = {(r["kind"], r["attention"]): r for r in report["results"]}
    assert set(results) == {("ours", "shunted"), ("ours", "pvt"), ("reference", "shunted"), ("peer", "-")}
    reference, fast = results[("reference", "shunted")], results[("ours", "shunted")]
    assert reference["max_rel_diff_vs_fast"] < 1e-5
    assert reference["params"] == fast["params"] and abs(reference["gmacs"] - fast["gmacs"]) < 1e-9
    assert fast["vs_reference"]["train_speedup"] > 0 and fast["peak_memory_mb"] > 0
    for r in report["results"]:
        assert r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0 and 0 < r["train_flop_share_of_peak"]
    table = out.with_suffix(".md").read_text()
    assert "shunted_t shunted/detail_specific (reference)" in table and "timm resnet18" in table
    assert "| vs reference |" in table
