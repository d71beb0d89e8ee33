"""objective=segmentation: the SHAPES scenes, the Semantic FPN on every preset, the scores against hand
computations, the folder layouts, a run end to end with eval and analysis, and a sweep's report."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import ROOT, TINY, compose_cfg
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from shunted_lab.checkpoints.tasks import analyze_checkpoints as analyze
from shunted_lab.checkpoints.tasks import evaluate_checkpoints as evaluate
from shunted_lab.data.scenes import ShapesScenesData, generate_scenes
from shunted_lab.exits import ConfigError, DataError
from shunted_lab.models.factory import build_model
from shunted_lab.models.segmentation import SegmentationModel
from shunted_lab.training.fit import train
from shunted_lab.training.metrics import SegmentationScores

SCENES_TINY = ["objective=segmentation", "data.num_train=32", "data.num_val=16", "data.num_test=16"]


# --- scores -------------------------------------------------------------------------------------------


def test_iou_per_size_bin_matches_a_hand_computation():
    # 0 background, 1 and 2 object classes; bins: 0 small, 1 large, -1 off any object.
    target = torch.tensor([[0, 1, 1, 0], [0, 2, 2, 2], [0, 0, 2, 2]])
    preds = torch.tensor([[0, 1, 0, 1], [0, 2, 1, 2], [1, 0, 2, 2]])
    bins = torch.tensor([[-1, 0, 0, -1], [-1, 1, 1, 1], [-1, -1, 1, 1]])
    scores = SegmentationScores(["bg", "a", "b"], ignore_index=255, bin_names=["small", "large"])
    scores.update(preds[None], target[None], bins[None])
    out = scores.compute()
    # small: pixels (0,1) a->a, (0,2) a->bg. Class a: TP 1, FP 0, FN 1 -> 1/2; only a has labels there.
    assert out["miou_small"].item() == pytest.approx(1 / 2)
    # large: b pixels (1,1) b->b, (1,2) b->a, (1,3) b->b, (2,2) b->b, (2,3) b->b. Class b: TP 4, FN 1 -> 4/5;
    # a has no label in the bin, so its false positive lowers b only through the miss.
    assert out["miou_large"].item() == pytest.approx(4 / 5)
    assert out["pixels_small"].item() == 2 and out["pixels_large"].item() == 5
    # Whole image: bg TP 3 FP 1 FN 2 -> 3/6; a TP 1 FP 3 FN 1 -> 1/5; b TP 4 FP 0 FN 1 -> 4/5.
    assert out["miou"].item() == pytest.approx((3 / 6 + 1 / 5 + 4 / 5) / 3)
    assert out["pixel_acc"].item() == pytest.approx(8 / 12)
    assert out["iou_a"].item() == pytest.approx(1 / 5)


def test_scores_match_an_explicit_loop_and_skip_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 9, 7), generator=gen)
    target[0, :2] = 255
    preds = torch.randint(0, 4, (3, 9, 7), generator=gen)
    scores = SegmentationScores(list("wxyz"), ignore_index=255)
    for i in range(3):  # batches add up
        scores.update(preds[i : i + 1], target[i : i + 1])
    out = scores.compute()
    keep = target != 255
    ious = []
    for c in range(4):
        t, p = (target == c) & keep, (preds == c) & keep
        ious.append((t & p).sum().item() / (t | p).sum().item())
        assert out[f"iou_{'wxyz'[c]}"].item() == pytest.approx(ious[-1])
    assert out["miou"].item() == pytest.approx(np.mean(ious))
    assert out["pixel_acc"].item() == pytest.approx(((preds == target) & keep).sum().item() / keep.sum().item())


def _score_a_half(rank: int, port: int, preds, target, bins, out) -> None:
    """One of two gloo processes: its half of the batch, then the synced scores."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    scores = SegmentationScores(["bg", "a", "b"], ignore_index=255, bin_names=["small", "large"])
    scores.update(preds[rank::2], target[rank::2], bins[rank::2])
    out[rank] = {k: v.item() for k, v in scores.compute().items()}
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_scores_over_two_processes_equal_those_over_the_whole_batch():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (6, 8, 8), generator=gen)
    preds = torch.randint(0, 3, (6, 8, 8), generator=gen)
    bins = torch.where(target > 0, torch.randint(0, 2, (6, 8, 8), generator=gen), -1)
    whole = SegmentationScores(["bg", "a", "b"], ignore_index=255, bin_names=["small", "large"])
    whole.update(preds, target, bins)
    expected = {k: v.item() for k, v in whole.compute().items()}
    with torch.multiprocessing.Manager() as manager:
        out = manager.dict()
        port = 29000 + int(torch.randint(0, 1000, ()))
        torch.multiprocessing.spawn(_score_a_half, args=(port, preds, target, bins, out), nprocs=2)
        for rank in (0, 1):
            assert out[rank] == pytest.approx(expected), rank


def test_a_class_absent_from_labels_and_predictions_has_no_iou():
    scores = SegmentationScores(["bg", "a", "b"], ignore_index=255)
    scores.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    out = scores.compute()
    assert "iou_b" not in out and out["miou"].item() == 1.0


# --- SHAPES scenes -----------------------------------------------------------------------------------


def test_scenes_are_deterministic_and_their_objects_span_the_sizes():
    images, labels, sides = generate_scenes(40, seed=3, split="val", size=64)
    again = generate_scenes(40, seed=3, split="val", size=64)
    assert all(torch.equal(a, b) for a, b in zip((images, labels, sides), again, strict=True))
    assert not torch.equal(generate_scenes(40, seed=3, split="test", size=64)[1], labels)
    assert images.shape == (40, 3, 64, 64) and labels.shape == sides.shape == (40, 64, 64)
    on_object = labels > 0
    assert torch.equal(on_object, sides > 0)  # a size exactly where an object is
    assert set(labels.unique().tolist()) == set(range(11))
    fraction = sides[on_object] / 64
    assert fraction.min() >= 1 / 16 - 1e-6 and fraction.max() <= 1 / 2 + 1e-6
    assert fraction.min() < 1 / 8 and fraction.max() > 1 / 4  # every octave bin occurs


def test_size_bins_partition_the_objects_and_respect_their_ranges(tmp_path):
    data = ShapesScenesData(
        num_train=8, num_val=24, num_test=8, scale_bins={"small": 0.125, "medium": 0.25, "large": 1.0}, name="s"
    )
    _, labels, sides = data.split("val")
    bins = data.size_bins(sides)
    assert torch.equal(bins >= 0, labels > 0)  # every object pixel is in exactly one bin, the background in none
    fraction = sides / 64
    assert (fraction[bins == 0] < 0.125).all()
    assert ((fraction[bins == 1] >= 0.125) & (fraction[bins == 1] < 0.25)).all()
    assert (fraction[bins == 2] >= 0.25).all()
    for b in range(3):
        assert (bins == b).any()


def test_train_and_test_scales_apart():
    data = ShapesScenesData(
        num_train=16, num_val=8, num_test=16, train_scales=[0.25, 0.5], test_scales=[0.0625, 0.125], name="s"
    )
    train_sides, test_sides = data.split("train")[2], data.split("test")[2]
    assert (train_sides[train_sides > 0] >= 16 - 1e-4).all()
    assert (test_sides[test_sides > 0] <= 8 + 1e-4).all()


# --- the model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["shunted_nano", "shunted_t", "shunted_s", "shunted_b"])
def test_the_head_gives_a_logit_per_pixel_for_every_preset_at_non_square_inputs(preset):
    cfg = OmegaConf.create(
        {
            "model": {"name": preset, "checkpoint": None},
            "attention": {"name": "shunted", "kwargs": {}},
            "mlp": {"name": "detail_specific"},
            "objective": {"name": "segmentation", "head": {"fpn_dim": None, "channels": None}},
        }
    )
    model = build_model(cfg, 11).eval()
    assert isinstance(model, SegmentationModel)
    assert model.decode_head.fpn.lateral[0].out_channels == model.feature_info[-1]["num_chs"] // 2
    for hw in [(64, 96), (96, 72)]:
        with torch.no_grad():
            assert model(torch.randn(1, 3, *hw)).shape == (1, 11, *hw)


@pytest.mark.parametrize("attention", ["vit", "pvt", "swin"])
def test_every_mixer_segments_at_non_square_inputs(attention):
    cfg = compose_cfg(Path("/tmp"), "objective=segmentation", f"attention={attention}", "mlp=plain")
    model = build_model(cfg, 11).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 80)).shape == (2, 11, 48, 80)


def test_the_backbone_takes_a_classifiers_weights_without_its_head(tmp_path):
    classifier = timm.create_model("shunted_nano", num_classes=10)
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    cfg = compose_cfg(tmp_path, "objective=segmentation", f"model.checkpoint={path}")
    model = build_model(cfg, 11)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[key]), key


# --- folder layouts ---------------------------------------------------------------------------------


def write_segmentation_folder(root: Path, classes=("bg", "road", "car"), per_split: int = 4, ade20k=False):
    """The segfolder layout (images/, masks/, classes.txt) or ADE20K's (ADEChallengeData2016/...)."""
    rng = np.random.default_rng(0)
    splits = {"train": "training", "val": "validation"} if ade20k else {"train": "train", "val": "val"}
    base = root / "ADEChallengeData2016" if ade20k else root
    for split in splits.values():
        images = base / "images" / split
        masks = base / ("annotations" if ade20k else "masks") / split
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for i in range(per_split):
            h, w = 40 + 8 * i, 56
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.jpg")
            labels = rng.integers(0, len(classes) + int(ade20k), (h, w), dtype=np.uint8)
            Image.fromarray(labels).save(masks / f"img{i}.png")
    if not ade20k:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")


def segfolder_cfg(tmp_path: Path, *overrides: str, data: str = "segfolder"):
    return compose_cfg(
        tmp_path,
        "objective=segmentation",
        f"data={data}",
        f"data.root={tmp_path}/seg",
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        *overrides,
    )


def test_a_segfolder_loads_with_its_classes_and_pads_evaluation_batches(tmp_path):
    write_segmentation_folder(tmp_path / "seg")
    data = instantiate(segfolder_cfg(tmp_path).data)
    data.setup("fit")
    assert data.class_names == ["bg", "road", "car"] and data.num_classes == 3
    image, mask = data.train_set[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.max() < 3
    images, masks = next(iter(data.val_dataloader()))
    assert images.shape[-2:] == masks.shape[-2:] and images.shape[-1] % 32 == 0
    assert (masks == 255).any()  # the padding is ignored


def test_the_ade20k_layout_loads_with_label_0_ignored(tmp_path):
    write_segmentation_folder(tmp_path / "seg", ade20k=True)
    cfg = segfolder_cfg(tmp_path, data="ade20k")
    data = instantiate(cfg.data)
    data.setup("validate")
    assert data.num_classes == 150 and data.class_names[:3] == ["wall", "building", "sky"]
    _, mask = data.val_set[0]
    raw = np.array(Image.open(tmp_path / "seg/ADEChallengeData2016/annotations/validation/img0.png"))
    assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
    assert ((mask == 255).float().mean() - (raw == 0).mean()).abs() < 0.05  # 0 -> ignored, resized


def test_a_missing_mask_is_refused_in_one_line(tmp_path):
    write_segmentation_folder(tmp_path / "seg")
    (tmp_path / "seg/masks/train/img2.png").unlink()
    with pytest.raises(InstantiationException, match=r"have no mask .* img2.jpg needs img2.png"):
        instantiate(segfolder_cfg(tmp_path).data)
    # What run.py prints in one line (exit 2) before anything trains.
    with pytest.raises(ConfigError, match=r"^data: .*\(e.g. img2.jpg needs img2.png\)$"):
        train(segfolder_cfg(tmp_path))


def test_a_label_out_of_range_is_refused_naming_the_file(tmp_path):
    write_segmentation_folder(tmp_path / "seg")
    Image.fromarray(np.full((40, 56), 7, dtype=np.uint8)).save(tmp_path / "seg/masks/val/img0.png")
    data = instantiate(segfolder_cfg(tmp_path).data)
    data.setup("validate")
    with pytest.raises(DataError, match=r"img0.png holds label 7, which is no class: expected 0..2 or 255"):
        data.val_set[0]


@pytest.mark.parametrize(("side", "expected"), [(8, 32), (32, 32), (300, 224)])
def test_a_segfolder_without_image_size_fits_its_images(tmp_path, side, expected):
    root = tmp_path / "seg"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (side, side)).save(root / "images" / split / f"{i}.png")
            Image.new("L", (side, side)).save(root / "masks" / split / f"{i}.png")
    (root / "classes.txt").write_text("bg\nthing\n")
    data = instantiate(segfolder_cfg(tmp_path, "data.image_size=null").data)
    assert data.image_size == expected


# --- configs ----------------------------------------------------------------------------------------


def test_the_ade20k_recipe_composes():
    cfg = compose_cfg(Path("/tmp"), "experiment=ade20k_semfpn_shunted_s", tiny=False)
    assert cfg.objective.name == "segmentation" and cfg.data.name == "ade20k"
    assert cfg.model.name == "shunted_s" and cfg.data.image_size == 512
    assert cfg.optim.schedule == "poly" and cfg.optim.poly_power == 0.9 and cfg.optim.lr == 1e-4
    assert cfg.trainer.max_steps == 80000 and cfg.trainer.devices * cfg.data.batch_size == 16
    assert cfg.optimized_metric == "val/miou" and cfg.callbacks.model_checkpoint.monitor == "val/miou"


def test_classification_data_under_the_segmentation_objective_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"data=shapes is classification data but objective=segmentation"):
        train(compose_cfg(tmp_path, "objective=segmentation", "data=shapes"))


def test_mixup_is_refused_for_segmentation(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.mixup=0.8.*segmentation needs both 0"):
        train(compose_cfg(tmp_path, *SCENES_TINY, "optim=official"))


# --- end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("segmentation")
    train(compose_cfg(tmp, *SCENES_TINY, "logger=csv", "trainer.max_epochs=2"))
    return tmp / "out"


def test_a_segmentation_run_writes_its_scores_and_masks(segmentation_run):
    metrics = json.loads((segmentation_run / "metrics.json").read_text())
    assert metrics["objective"] == "segmentation"
    for split in ("val", "test"):
        assert 0 < metrics[f"{split}/miou"] <= 1 and 0 < metrics[f"{split}/pixel_acc"] <= 1
        for size in ("small", "medium", "large"):
            assert f"{split}/miou_{size}" in metrics and metrics[f"{split}/pixels_{size}"] > 0
        assert f"{split}/iou_background" in metrics
    assert "miou" in Path(metrics["best_checkpoint"]).name
    assert (segmentation_run / "val_masks.png").stat().st_size > 1000
    with open(segmentation_run / "csv" / "metrics.csv") as f:
        assert "val/miou" in next(csv.reader(f))


def test_eval_of_a_segmentation_run_reproduces_its_scores(segmentation_run, tmp_path):
    trained = json.loads((segmentation_run / "metrics.json").read_text())
    cfg = compose_cfg(tmp_path, "task=eval", f"ckpt_path={segmentation_run}")  # the default objective: the run's wins
    [scored] = evaluate(cfg, []).values()
    for key in ("val/miou", "test/miou", "val/pixel_acc", "val/miou_small", "val/loss"):
        assert abs(scored[key] - trained[key]) <= 1e-6, key


def test_analyze_a_segmentation_checkpoint_without_gradcam(segmentation_run, tmp_path):
    cfg = compose_cfg(
        tmp_path, "task=analyze", f"ckpt_path={segmentation_run}", "analysis.num_images=4", "analysis.show=1"
    )
    [summary] = analyze(cfg, []).values()
    out = tmp_path / "out" / "analysis"
    assert (out / "erf.png").is_file() and (out / "attention_0.png").is_file()
    assert not (out / "gradcam.png").exists()
    assert summary["erf50_s1"] > 0 and summary["mad_px_s1"] > 0


@pytest.mark.slow
def test_a_two_cell_segmentation_sweep_reports_miou_per_size(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            f"hydra.sweep.dir={tmp_path}/sweep",
            *TINY,
            *SCENES_TINY,
            "attention=pvt,shunted",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    columns = ("val/miou_mean", "test/miou_std", "val/pixel_acc_mean", "val/miou_small_mean", "test/miou_large_mean")
    for column in columns:
        assert all(row[column] != "" for row in rows), column
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "val mIoU" in summary and "## mIoU per group" in summary
    assert (tmp_path / "sweep" / "miou_by_group.png").is_file() and (tmp_path / "sweep" / "miou_vs_gmacs.png").is_file()
    assert "val/miou" in proc.stdout + proc.stderr
