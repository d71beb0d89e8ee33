"""The analysis: ERF by hand, Grad-CAM and attention statistics on a model, and the task end to end."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, read_metrics, write_image_folder
from torch import nn

from shunted_lab.analysis.cam import grad_cam
from shunted_lab.analysis.erf import area_ratio, effective_receptive_fields, input_centre
from shunted_lab.analysis.inputs import from_folder, from_split
from shunted_lab.analysis.suite import attention_statistics
from shunted_lab.checkpoints.sources import architecture, find_sources, load_model
from shunted_lab.checkpoints.tasks import analyze_checkpoints as analyze
from shunted_lab.data import ShapesData


def test_erf_of_a_depthwise_conv_stack_is_its_receptive_field():
    """Three 3x3 depth-wise convs with positive weights: the central output sees exactly a 7x7 square."""
    stack = nn.Sequential(*(nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False) for _ in range(3)))
    for conv in stack:
        nn.init.constant_(conv.weight, 1 / 9)
    [erf] = effective_receptive_fields(lambda x: [stack(x)], torch.randn(2, 3, 15, 15))
    support = (erf > 0).nonzero()
    assert support.min(0).values.tolist() == [4, 4] and support.max(0).values.tolist() == [10, 10]
    assert area_ratio(erf, (7, 7), 1.0) == (49 / 225, 7)
    # The centre tap alone carries 7^2 * 3 paths of 27 ... in 1D: (1 3 6 7 6 3 1) / 27 per axis, so the
    # central pixel holds (7/27)^2 = 6.7% of the mass and the 3x3 square (19/27)^2 = 49.5%.
    assert area_ratio(erf, (7, 7), 0.06)[1] == 1
    assert area_ratio(erf, (7, 7), 0.49)[1] == 3 and area_ratio(erf, (7, 7), 0.5)[1] == 5


def test_input_centre_of_a_strided_output():
    assert input_centre((2, 2), (64, 64)) == (48, 48)  # stage 4 of a 64 px image: the second of two 32 px cells
    assert input_centre((15, 15), (15, 15)) == (7, 7)


@pytest.fixture
def run_dir(trained_run) -> Path:
    return trained_run


def test_analysis_after_training_writes_its_files_and_numbers(run_dir):
    result = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert result["images"] == 8 and result["query_points"] == "object centre"
    for name in ("attention_0.png", "attention_1.png", "erf.png", "gradcam.png", "attention_distance.png"):
        assert (run_dir / "analysis" / name).stat().st_size > 0
    summary = result["summary"]
    # nano: sr_ratios 4, 2, 1, 1 -> shunted's groups at rates 4 | 2 and 2 | 1, then one group.
    assert {"mad_px_s1_rate4", "mad_px_s1_rate2", "mad_px_s2_rate2", "mad_px_s2_rate1", "mad_px_s4"} <= set(summary)
    assert "mad_px_s3_rate1" not in summary
    for stage in range(1, 5):
        assert 0 < summary[f"erf20_s{stage}"] <= summary[f"erf50_s{stage}"] <= summary[f"erf99_s{stage}"] <= 1
    assert json.loads((run_dir / "metrics.json").read_text())["analysis"] == summary


def test_attention_statistics_keep_rows_of_the_drawn_images_only(run_dir, tmp_path):
    [source] = find_sources(run_dir)
    data = ShapesData(name="shapes", num_train=4, num_val=12, num_test=4, root=str(tmp_path))
    model = load_model(source, architecture(source, None), data.num_classes)
    inputs = from_split(data, "val", 12)
    distances, drawn = attention_statistics(model, inputs, show=3, batch_size=5)
    assert sorted({image for calls in drawn.values() for image, _ in calls}) == [0, 1, 2]
    first = distances["stages.0.blocks.0.attn"]
    assert set(first) == {"rate 4", "rate 2"} and all(len(heads) == 1 for heads in first.values())
    # Distances are means over images: the same with other batch sizes (and CPU chunking of the blocks).
    again, _ = attention_statistics(model, inputs, show=0, batch_size=12)
    for name, groups in distances.items():
        for group, heads in groups.items():
            assert again[name][group] == pytest.approx(heads, rel=1e-4)

    cams, predicted, confidence = grad_cam(model, inputs.images[:4])
    assert cams.shape == (4, 64, 64) and cams.min() >= 0 and cams.amax(dim=(1, 2)).tolist() == pytest.approx([1.0] * 4)
    assert ((0 < confidence) & (confidence <= 1)).all() and predicted.shape == (4,)


def test_analysis_of_a_folder_of_images(run_dir, tmp_path):
    write_image_folder(tmp_path / "images", per_class=1, size=50)
    data = ShapesData(name="shapes", num_train=4, num_val=4, num_test=4, root=str(tmp_path))
    inputs = from_folder(tmp_path / "images" / "val" / "cat", data, 10)
    assert inputs.images.shape == (1, 3, 64, 64) and inputs.labels.tolist() == [-1]
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        from_folder(tmp_path, data, 10)


def test_analyze_task_on_a_sweep_extends_the_report(run_dir, tmp_path):
    sweep = tmp_path / "sweep"
    for num, (attention, seed) in enumerate((("shunted", 0), ("shunted", 1))):
        job = sweep / f"{num}_{attention}-seed{seed}"
        shutil.copytree(run_dir, job, ignore=shutil.ignore_patterns("analysis"))
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text(f"- attention={attention}\n- seed={seed}\n")
    overrides = ["analysis.num_images=4", "analysis.show=1"]
    done = analyze(compose_cfg(tmp_path, "task=analyze", f"ckpt_path={sweep}", *overrides), overrides)
    assert sorted(done) == ["0_shunted-seed0", "1_shunted-seed1"]
    for name in done:
        assert json.loads((sweep / name / "analysis" / "analysis.json").read_text())["images"] == 4
    summary = (sweep / "summary.md").read_text()
    assert "`analysis:mad_px_s1_rate4`" in summary and "`analysis:erf50_s4`" in summary
    assert (sweep / "erf_by_cell.png").stat().st_size > 0
    assert read_metrics(compose_cfg(tmp_path))["task"] == "analyze"
