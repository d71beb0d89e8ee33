"""Per-scale accuracy: object-size bins on SHAPES, groups from an image folder's file, scale-shift splits."""

import json

import lightning as L
import pytest
import torch
from helpers import compose_cfg, image_folder_cfg, write_image_folder
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from shunted_lab.data import ShapesData
from shunted_lab.exits import ConfigError
from shunted_lab.sweeps.write import write_report
from shunted_lab.training.classifier import ImageClassifier
from shunted_lab.training.fit import train


def sides(dataset, image_size):
    return 2 * dataset.objects[:, 2] / image_size


def test_the_module_reports_top1_per_group_as_counted_by_hand(tmp_path):
    # The "model" passes the logits through, so the predictions are fixed by hand.
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5]])
    labels = torch.tensor([0, 1, 1, 0, 2, 1, 2])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1])  # "a": 2 of 3 right; "b": 3 of 4 right; "c": no images
    optim = OmegaConf.to_container(compose_cfg(tmp_path).optim)
    module = ImageClassifier(nn.Identity(), 3, **optim, group_names=["a", "b", "c"])
    loader = DataLoader(list(zip(logits, labels, groups, strict=True)), batch_size=3)  # groups across batches
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    [val] = trainer.validate(module, loader, verbose=False)
    [test] = trainer.test(module, loader, verbose=False)
    for split, got in (("val", val), ("test", test)):
        assert got[f"{split}/top1_a"] == pytest.approx(2 / 3)
        assert got[f"{split}/top1_b"] == pytest.approx(3 / 4)
        assert f"{split}/top1_c" not in got  # no images: a count of 0, no accuracy
        assert [got[f"{split}/count_{g}"] for g in "abc"] == [3, 4, 0]
        assert got[f"{split}/top1"] == pytest.approx(5 / 7)


def test_scale_bins_partition_the_images_by_object_size():
    data = ShapesData(name="shapes", num_val=300, num_test=10, num_train=10, scale_bins={"s": 0.25, "m": 0.4, "l": 1.0})
    data.setup()
    side, group = sides(data.val_set, 64), data.val_set.groups
    assert sorted(group.unique().tolist()) == [0, 1, 2]
    assert ((side < 0.25) == (group == 0)).all()
    assert (((side >= 0.25) & (side < 0.4)) == (group == 1)).all()
    assert ((side >= 0.4) == (group == 2)).all()
    assert data.group_names == ["s", "m", "l"]
    assert data.train_set.groups is None and data.train_set[0][1] in range(10)  # training items stay pairs
    assert len(data.val_set[0]) == 3


def test_scale_shift_splits_draw_sizes_from_their_ranges():
    data = ShapesData(name="shapes", num_train=200, num_val=100, num_test=200, train_scales=[0.25, 0.375],
                      test_scales=[0.125, 0.2], image_size=48)  # fmt: skip
    data.setup()
    expected = {"train": (0.25, 0.375), "val": (0.25, 0.375), "test": (0.125, 0.2)}
    for split, (lo, hi) in expected.items():
        dataset = getattr(data, f"{split}_set")
        side = sides(dataset, 48)
        assert lo <= side.min() and side.max() <= hi
        assert side.max() - side.min() > 0.6 * (hi - lo)  # the whole range is drawn from
    assert data.val_set.groups is None  # no scale_bins: no groups


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.train_scales=[0.5,0.25]", r"data.train_scales=\[0.5, 0.25\] is not allowed; expected \[lo, hi\]"),
        ("data.test_scales=[0.1,1.5]", r"data.test_scales=\[0.1, 1.5\] is not allowed"),
        ("data.train_scales=0.3", r"data.train_scales=0.3 is not allowed; expected \[lo, hi\]"),
        ("data.scale_bins.large=0.9", r"data.scale_bins: the last bound is 0.9; it must be 1.0"),
        ("data.scale_bins.small=0.5", r"data.scale_bins=.* is not allowed; expected \{name: upper bound\} with rising"),
    ],
)
def test_bad_scales_fail_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_cfg(tmp_path, override))


def test_a_run_records_per_scale_metrics_and_the_report_shows_them(trained_run, tmp_path):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split, n in (("val", 32), ("test", 32)):  # the tiny run's split sizes
        counts = [metrics[f"{split}/count_{g}"] for g in ("small", "medium", "large")]
        assert sum(counts) == n
        hits = sum(
            metrics.get(f"{split}/top1_{g}", 0) * c for g, c in zip(("small", "medium", "large"), counts, strict=True)
        )
        assert hits == pytest.approx(metrics[f"{split}/top1"] * n, abs=1e-4)  # the bins add up to the whole
    job = tmp_path / "sweep" / "0_job"  # a one-job sweep around the run, for the report
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "metrics.json").write_text((trained_run / "metrics.json").read_text())
    [row] = write_report(tmp_path / "sweep")
    assert row["test/top1_small_mean"] == metrics.get("test/top1_small")
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "## Top-1 per group" in summary and "`val/top1_small` | `val/top1_medium` | `val/top1_large`" in summary
    assert (tmp_path / "sweep" / "top1_by_group.png").is_file()


def test_an_image_folder_groups_file_gives_per_group_metrics(tmp_path):
    write_image_folder(tmp_path / "images")  # 3 classes x 4 images per split
    rows = ["path,group"]
    rows += [f"val/{c}/{i}.png,{'day' if i < 3 else 'night'}" for c in ("cat", "dog", "fox") for i in range(4)]
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    cfg = image_folder_cfg(tmp_path, f"data.groups_file={tmp_path}/groups.csv")
    train(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["val/count_day"] == 9 and metrics["val/count_night"] == 3
    (tmp_path / "groups.csv").write_text("\n".join(rows[:-1]) + "\n")  # one image without a row
    data = instantiate(image_folder_cfg(tmp_path, f"data.groups_file={tmp_path}/groups.csv").data)
    with pytest.raises(ValueError, match=r"no row for 1 of 12 val images \(e.g. val/fox/3.png\)"):
        data.setup("validate")
