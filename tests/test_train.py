"""End to end through the real configs: every variant trains, data loaders, loggers, resume, validation."""

import csv
import itertools
import time
import warnings
from pathlib import Path

import pytest
import timm
import torch
from helpers import compose_cfg, image_folder_cfg, read_metrics, write_cifar10, write_image_folder

from shunted_lab.data import ImageFolderData
from shunted_lab.exits import ConfigError
from shunted_lab.models import FFNS, MIXERS
from shunted_lab.models.factory import build_model
from shunted_lab.models.stats import count_params
from shunted_lab.training.classifier import ImageClassifier
from shunted_lab.training.fit import train

# One epoch over a few SHAPES batches: enough to write a checkpoint and its metrics.
SMALL_RUN = ("data.num_train=128", "data.num_val=64", "data.num_test=64", "trainer.max_epochs=1")


@pytest.mark.parametrize("attention,mlp", itertools.product(MIXERS, FFNS))
def test_every_variants_config_builds_its_model_and_takes_a_step(tmp_path, attention, mlp):
    # The training code does not depend on the mixer: every variant is built from its real config
    # and takes one step here, and one variant runs the whole fit below.
    cfg = compose_cfg(tmp_path, f"attention={attention}", f"mlp={mlp}")
    model = build_model(cfg, num_classes=10)
    block = model.stages[0].blocks[0]
    assert type(block.attn) is MIXERS[attention] and type(block.mlp) is FFNS[mlp]
    model(torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size)).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_variant_trains_a_few_steps_and_writes_its_metrics(tmp_path):
    cfg = compose_cfg(tmp_path, "attention=swin", "mlp=dwconv", "+trainer.fast_dev_run=2")
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["attention"] == "swin" and metrics["mlp"] == "dwconv"
    assert 0.0 <= metrics["val/top1"] <= metrics["val/top5"] <= 1.0
    assert 0.0 <= metrics["test/top1"] <= 1.0
    # The model trained is the swin x dwconv variant (its parameters are not the default variant's count).
    trained = count_params(timm.create_model("shunted_nano", attention="swin", mlp="dwconv", num_classes=10))
    default = count_params(timm.create_model("shunted_nano", num_classes=10))
    assert metrics["params"] == trained != default and metrics["gmacs"] > 0


@pytest.mark.slow
def test_short_run_on_shapes_learns(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        "data.num_train=2000",
        "data.num_val=500",
        "data.num_test=500",
        "data.batch_size=64",
        "optim.lr=1.6e-2",  # 2e-3 at batch 64
        "trainer.max_epochs=4",
    )
    result = train(cfg)
    metrics = read_metrics(cfg)
    assert result == metrics["val/top1"] > 0.3  # chance is 0.1
    assert metrics["test/top1"] > 0.3
    assert metrics["train/images_per_sec"] > 0
    assert Path(metrics["best_checkpoint"]).is_file()


def test_same_seed_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = compose_cfg(tmp_path / name, "trainer.max_epochs=2", "seed=3")
        train(cfg)
        runs.append(read_metrics(cfg))
    for key in ("val/top1", "val/loss", "test/top1", "test/loss"):
        assert runs[0][key] == runs[1][key], key


@pytest.mark.parametrize("fused", [True, False])
def test_optimizer_is_one_fused_adamw_unless_turned_off(tmp_path, fused):
    cfg = compose_cfg(tmp_path, *SMALL_RUN, f"optim.fused={fused}")
    train(cfg)
    checkpoint = torch.load(read_metrics(cfg)["best_checkpoint"], weights_only=False)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and {g["weight_decay"] for g in groups} == {0.0, 0.05}  # no decay on 1-D parameters
    assert all(g["fused"] is fused for g in groups)


def test_cifar10_from_python_batches(tmp_path):
    write_cifar10(tmp_path / "cifar")
    cfg = compose_cfg(
        tmp_path, "data=cifar10", f"data.root={tmp_path}/cifar", "data.num_workers=0", "data.batch_size=8"
    )
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["data"] == "cifar10" and metrics["gmacs"] > 0


def test_cifar_missing_files_name_the_path(tmp_path):
    cfg = compose_cfg(tmp_path, "data=cifar100", f"data.root={tmp_path}/nowhere")
    with pytest.raises(ConfigError, match=r"data.root=.*nowhere.* has no CIFAR-100 files .*data.download=true"):
        train(cfg)


def test_image_folder(tmp_path):
    write_image_folder(tmp_path / "images")
    cfg = image_folder_cfg(tmp_path)
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["data"] == "imagefolder" and metrics["global_step"] == 3  # 12 images / batch 4
    assert metrics["config"]["data"]["image_size"] == 32


def test_imagenet_preset_uses_the_official_augmentation(tmp_path):
    write_image_folder(tmp_path / "imagenet")
    cfg = compose_cfg(tmp_path, "data=imagenet", f"data.root={tmp_path}/imagenet")
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    text = repr(dm.train_tf)
    assert "RandAugment" in text and "RandomErasing" in text and "BICUBIC" in text.upper()
    assert "CenterCrop(size=(224, 224)" in repr(dm.eval_tf) and "256" in repr(dm.eval_tf)


def test_wandb_goes_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_cfg(tmp_path, "logger=csv_wandb", "+trainer.fast_dev_run=1")
    train(cfg)
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_resume_from_last_checkpoint_continues_the_global_step(tmp_path):
    first = compose_cfg(tmp_path / "a", "trainer.max_epochs=1")
    train(first)
    steps_per_epoch = read_metrics(first)["global_step"]
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert steps_per_epoch == 4 and last.is_file()
    second = compose_cfg(tmp_path / "b", "trainer.max_epochs=2", f"ckpt_path={last}")
    train(second)
    assert read_metrics(second)["global_step"] == 2 * steps_per_epoch


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data.batch_size=0"], r"data.batch_size=0 is not allowed; expected a positive integer"),
        (["data.num_workers=-1"], r"data.num_workers=-1 is not allowed; expected an integer >= 0"),
        (["data.image_size=ten"], r"data.image_size='ten' is not allowed; expected an integer >= 8"),
        (["trainer.precision=8-mixed"], r"trainer.precision='8-mixed' is not allowed; expected one of"),
        (["trainer.precision=16-mixed"], r"trainer.precision=16-mixed needs a GPU"),
        (["trainer.max_epochs=0"], r"trainer.max_epochs=0 is not allowed"),
        (["optim.lr=-1"], r"optim.lr=-1 is not allowed; expected a number > 0"),
        (["optim.label_smoothing=1.5"], r"optim.label_smoothing=1.5 is not allowed; expected a number in \[0, 1\)"),
        (["optim.ema_decay=2"], r"optim.ema_decay=2 is not allowed"),
        (["optim.fused=maybe"], r"optim.fused='maybe' is not allowed; expected true or false"),
        (["model.drop_path_rate=1.0"], r"model.drop_path_rate=1.0 is not allowed"),
        (["logger=wandb", "logger.wandb.predictions=-1"], r"logger.wandb.predictions=-1 is not allowed"),
        (["logger=wandb", "logger.wandb.log_model=all"], r"logger.wandb.log_model='all' is not allowed; expected null"),
        (["ckpt_path=/no/such.ckpt"], r"ckpt_path='/no/such.ckpt' does not exist"),
        (["model.checkpoint=/no/such.pth"], r"model.checkpoint='/no/such.pth' does not exist"),
        (["ckpt_path=last"], r"ckpt_path=last: no .*checkpoints/last.ckpt; point hydra.run.dir at the run"),
        (["data=imagefolder"], r"data.root must be set"),
        (["data=imagefolder", "data.root=/no/such/dir"], r"data: data.root='/no/such/dir' has no train/ folder"),
        (["+model.num_heads=[2,3,4,8]"], r"model: num_heads=3 must be >= 1 and divide dim=64"),
        (["+model.num_heads=[1,2,4,8]"], r"model: num_heads=1 is not allowed for shunted attention.*even"),
        (
            ["+model.sr_ratios=[3,2,1,1]"],
            r"model: sr_ratio=3 is not allowed for shunted attention; expected 1 or an even",
        ),
        (["attention.name=linformer"], r"model: attention='linformer' is not allowed; expected one of"),
        (["attention=pvt", "+attention.kwargs.linaer=true"], r"attention option\(s\) \['linaer'\] not accepted"),
        (["data.image_size=12"], r"data.image_size=12: token map 3x3 is smaller than sr_ratio=4"),
        # torch.compile's per-block CUDA graphs, and what one captured step per batch on one device cannot do
        (["compile=reduce-overhead"], r"compile='reduce-overhead' is not allowed; expected true, false or one of"),
        (
            ["compile=cudagraphs", "trainer.accumulate_grad_batches=2"],
            r"trainer.accumulate_grad_batches=2 is not supported with compile=cudagraphs",
        ),
        (
            ["compile=cudagraphs-eager", "+trainer.gradient_clip_algorithm=value"],
            r"trainer.gradient_clip_algorithm=value is not supported with compile=cudagraphs-eager",
        ),
        (
            ["compile=cudagraphs", "trainer=ddp_cpu"],
            r"trainer.devices=2, trainer.num_nodes=1: compile=cudagraphs runs on",
        ),
        (
            ["compile=cudagraphs", "trainer.precision=16-mixed"],
            r"trainer.precision=16-mixed is not supported with compile=cudagraphs: the loss scaler",
        ),
        (
            ["compile=cudagraphs-eager", "model.ffn_recompute=true"],
            r"model.ffn_recompute=True is not supported with compile=cudagraphs-eager: recomputation reads",
        ),
    ],
)
def test_config_rules_fail_with_one_line_naming_the_key(tmp_path, overrides, match):
    cfg = compose_cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=match) as error:
        train(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_recipe_switches_train(tmp_path, monkeypatch):
    batches = []  # (the images, the labels, what the step trained on), per training step
    original = ImageClassifier.inputs_and_targets

    def spy(module, batch):
        images, labels = batch[0].clone(), batch[1].clone()  # Mixup mixes in place
        mixed, targets = original(module, batch)
        batches.append((images, labels, mixed, targets))
        return mixed, targets

    monkeypatch.setattr(ImageClassifier, "inputs_and_targets", spy)
    cfg = compose_cfg(
        tmp_path,
        "optim=official",  # Mixup 0.8 / CutMix 1.0 with soft-target loss
        "optim.ema_decay=0.9",
        "trainer.precision=bf16-mixed",
        "channels_last=true",
        "trainer.max_epochs=1",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert not [w for w in caught if "in eval mode" in str(w.message)]  # the EMA copy is not a stray eval module
    metrics = read_metrics(cfg)
    assert 0.0 <= metrics["val_ema/top1"] <= 1.0 and "val_ema/loss" in metrics
    assert metrics["global_step"] == 4 == len(batches)
    # Mixup/CutMix ran: every step trained on blended images and soft targets, not the batch as drawn.
    for images, labels, mixed, targets in batches:
        assert targets.shape == (len(labels), 10) and not torch.equal(mixed, images)
        assert torch.allclose(targets.sum(1), torch.ones(len(labels))) and targets.max() < 1


def test_ema_copy_is_evaluated_in_eval_mode(tmp_path):
    # A decay this small makes the EMA the model's own weights; with drop path on, they can only score
    # alike if validation runs the copy without its stochastic layers.
    cfg = compose_cfg(tmp_path, *SMALL_RUN, "optim.ema_decay=1e-9", "model.drop_path_rate=0.5")
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["val_ema/top1"] == metrics["val/top1"]
    assert abs(metrics["val_ema/loss"] - metrics["val/loss"]) < 1e-5


def test_sweeper_and_launcher_presets_compose():
    from helpers import CONF_DIR
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        optuna = compose("config", overrides=["hparams_search=optuna"], return_hydra_config=True)
        slurm = compose(
            "config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8"], return_hydra_config=True
        )
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(optuna.hydra.sweeper.params) == {"optim.lr", "model.drop_path_rate"}
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.tasks_per_node == slurm.hydra.launcher.gpus_per_node == 8


def test_small_source_images_get_an_image_size_hint(tmp_path, caplog):
    write_image_folder(tmp_path / "images", size=40)  # 40 x 48 px
    hint = "data.image_size=224 but the training images are about 40 px"
    ImageFolderData(name="imagefolder", root=str(tmp_path / "images"), image_size=224).setup()
    assert hint in caplog.text and "data=imagefolder_small" in caplog.text
    caplog.clear()
    ImageFolderData(name="imagefolder", root=str(tmp_path / "images"), image_size=96).setup()
    assert "data.image_size=" not in caplog.text


@pytest.mark.parametrize("side,size", [(8, 32), (32, 32), (100, 128), (300, 224)])
def test_an_image_folder_without_an_image_size_fits_it_to_its_images(tmp_path, caplog, side, size):
    """The median short side rounded up to a multiple of 32, in [32, 224] (conf/data/imagefolder.yaml)."""
    write_image_folder(tmp_path / "images", per_class=2, size=side)  # side x (side + 8) px
    caplog.set_level("INFO")
    data = ImageFolderData(name="imagefolder", root=str(tmp_path / "images"))
    assert data.image_size == size
    assert f"data.image_size={size}: the training images are about {side} px on their short side" in caplog.text
    data.setup()
    assert data.train_set[0][0].shape[-2:] == (size, size)
    assert ImageFolderData(name="imagefolder", root=str(tmp_path / "images"), image_size=64).image_size == 64


def test_only_image_folders_fit_the_image_size_to_their_images(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^data.image_size=null fits the size to the images, which only image folders"
    ):
        train(compose_cfg(tmp_path, "data.image_size=null"))


@pytest.mark.parametrize(
    "compile",
    [
        "false",
        # The graph mode queues a step's replay and returns: the host then waits for the loader, which the measure sees.
        pytest.param(
            "cudagraphs",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU"),
        ),
    ],
)
def test_a_run_that_waits_for_its_data_logs_the_share_per_epoch_and_says_what_to_try(
    tmp_path, caplog, monkeypatch, compile
):
    from shunted_lab.data.base import TensorImages

    item = TensorImages.__getitem__

    def slow_item(self, i):
        time.sleep(0.015)  # 240 ms a batch of 16: several times the tiny model's step, even on a busy machine
        return item(self, i)

    monkeypatch.setattr(TensorImages, "__getitem__", slow_item)
    device = ["trainer.accelerator=gpu", "trainer.devices=1"] if compile != "false" else []
    cfg = compose_cfg(
        tmp_path, "data.num_train=96", "trainer.max_epochs=2", "data.num_workers=0", f"compile={compile}", *device
    )
    train(cfg)
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        shares = [float(row["train/data_wait_share"]) for row in csv.DictReader(f) if row.get("train/data_wait_share")]
    assert len(shares) == 2 and all(share > 0.3 for share in shares)  # one per epoch; without the sleep ~0.05
    warnings_ = [r.getMessage() for r in caplog.records if "waited for data" in r.getMessage()]
    assert (
        len(warnings_) == 1
        and "of epoch 0's training time; try more loader workers (data.num_workers=0 now)" in warnings_[0]
    )
    assert read_metrics(cfg)["train/data_wait_share"] > 0.3


def test_the_waiting_hint_offers_the_device_pipeline_only_to_an_image_folder_decoding_in_the_workers():
    from types import SimpleNamespace

    from timm.data import create_transform

    from shunted_lab.data.pipelines import create_pipeline
    from shunted_lab.training.callbacks import waiting_line

    transform = create_transform(32, is_training=True)

    def hint(pipeline) -> str:
        data = SimpleNamespace(num_workers=2, **({} if pipeline is None else {"pipeline": pipeline}))
        cpu = SimpleNamespace(root_device=torch.device("cpu"))
        return waiting_line(0.4, SimpleNamespace(strategy=cpu, datamodule=data, current_epoch=1))

    offer = "data.pipeline=device"
    assert offer in hint(create_pipeline("workers", transform, False))
    assert offer not in hint(create_pipeline("device", transform, False)) and offer not in hint(None)
    assert (
        hint(None)
        == "the CPU waited for data 40% of epoch 1's training time; try more loader workers (data.num_workers=2 now)"
    )
