"""Checkpoints at another resolution or class count: evaluation at a new image size, swin's resized
bias tables, and fine-tuning from our checkpoints and the official release files."""

import numpy as np
import pytest
import timm
import torch
from helpers import compose_cfg, official_state_dict
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple

from shunted_lab.checkpoints.sources import architecture, find_sources
from shunted_lab.checkpoints.tasks import evaluate_checkpoints as evaluate
from shunted_lab.config import check_config
from shunted_lab.exits import ConfigError
from shunted_lab.models import build_model
from shunted_lab.models.mixers.swin import resize_bias_table
from shunted_lab.models.weights import read_state
from shunted_lab.training.classifier import ImageClassifier
from shunted_lab.training.fit import train


def best_checkpoint(run_dir):
    return next((run_dir / "checkpoints").glob("epoch*.ckpt"))


def lightning_file(path, model):
    """A checkpoint in the layout this project's runs write (the module holds the net as `model`)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"pytorch-lightning_version": "2", "state_dict": state}, path)
    return path


def test_resized_bias_table_by_hand():
    heads = 2
    one = torch.tensor([[1.5, -2.0]])  # window 1: a single offset per head
    assert torch.allclose(resize_bias_table(one, 2), one.expand(9, heads), atol=1e-6)  # every offset takes it
    table = torch.randn(9, heads)  # window 2: offsets -1..1 per side
    bigger = resize_bias_table(table, 3).view(5, 5, heads)
    # Output offset i samples source position 0.6 i - 0.2: i = 2 lands on the source centre, the zero
    # offset, where the bicubic kernel's weights are (0, 1, 0, 0): its value is kept.
    assert torch.allclose(bigger[2, 2], table.view(3, 3, heads)[1, 1], atol=1e-6)
    constant = torch.full((49, heads), 0.25)  # window 7 -> 12, as at 384 px: a constant stays constant
    assert torch.allclose(resize_bias_table(constant, 12), torch.full((23 * 23, heads), 0.25))
    assert torch.equal(resize_bias_table(table, 2), table)
    reference = resize_rel_pos_bias_table_simple(table, (3, 3), (25, heads))  # timm's, independently
    assert torch.allclose(resize_bias_table(table, 3), reference, atol=1e-6)


def test_eval_at_another_resolution_equals_a_fresh_model_at_that_resolution(trained_run, tmp_path):
    [scored] = evaluate(compose_cfg(tmp_path, "task=eval", f"ckpt_path={trained_run}", "data.image_size=96"),
                        ["data.image_size=96"]).values()  # fmt: skip
    assert scored["data"]["image_size"] == 96 and scored["gmacs"] > 0
    source = find_sources(trained_run)[0]
    model = build_model(architecture(source, None), 10).eval()  # the run's variant, built anew
    model.load_state_dict(read_state(source.checkpoint, "ckpt_path")[0])
    data = instantiate({**source.run_config["data"], "image_size": 96})
    data.setup("validate")
    images, labels, groups = (
        torch.stack(t) if i == 0 else torch.tensor(t) for i, t in enumerate(zip(*data.val_set, strict=True))
    )
    assert images.shape[-1] == 96
    with torch.no_grad():
        hits = (model(images).argmax(-1) == labels).float()
    assert scored["val/top1"] == pytest.approx(hits.mean().item(), abs=1e-6)
    small = groups == 0
    assert scored["val/count_small"] == small.sum().item()
    if small.any():
        assert scored["val/top1_small"] == pytest.approx(hits[small].mean().item(), abs=1e-6)


def test_eval_refuses_a_resolution_too_small_for_the_rates(trained_run, tmp_path):
    cfg = compose_cfg(tmp_path, "task=eval", f"ckpt_path={trained_run}", "data.image_size=8")
    with pytest.raises(ConfigError, match=r"data.image_size=8: token map .* is smaller than sr_ratio=4"):
        evaluate(cfg, ["data.image_size=8"])


def test_new_swin_windows_take_the_old_tables_resized(tmp_path):
    old = timm.create_model("shunted_nano", attention="swin")  # windows 4, 4, 4, 2
    path = lightning_file(tmp_path / "swin.ckpt", old)
    cfg = compose_cfg(tmp_path, "attention=swin", "model.window_sizes=[6,6,6,3]", f"model.checkpoint={path}")
    new = build_model(cfg, 10)
    for name, table in old.state_dict().items():
        loaded = new.state_dict()[name]
        if name.endswith("relative_position_bias_table"):
            window = new.get_submodule(name.rsplit(".", 1)[0]).window_size
            assert torch.equal(loaded, resize_bias_table(table, window)) and loaded.shape != table.shape
        else:
            assert torch.equal(loaded, table), name
    with torch.no_grad():
        assert new(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_finetuning_keeps_the_head_for_the_same_classes_and_starts_it_fresh_for_others(trained_run, tmp_path):
    ckpt = best_checkpoint(trained_run)
    saved, _ = read_state(ckpt, "ckpt_path")
    cfg = compose_cfg(tmp_path, "experiment=finetune", f"model.checkpoint={ckpt}")
    check_config(cfg)
    same = build_model(cfg, 10).state_dict()
    assert all(torch.equal(same[k], v) for k, v in saved.items())
    other = build_model(cfg, 3).state_dict()
    assert other["head.weight"].shape == (3, saved["head.weight"].shape[1])
    assert all(torch.equal(other[k], v) for k, v in saved.items() if not k.startswith("head."))


def test_finetuning_from_an_official_release_file_maps_its_keys(tmp_path):
    official = official_state_dict("shunted_t")
    torch.save({"model": official}, tmp_path / "ckpt_T.pth")
    cfg = compose_cfg(tmp_path, "experiment=finetune", "model=shunted_t", f"model.checkpoint={tmp_path}/ckpt_T.pth")
    model = build_model(cfg, 10)
    assert torch.equal(model.stages[2].blocks[3].attn.q.weight, official["block3.3.attn.q.weight"])
    assert model.head.weight.shape == (10, 512)


def test_finetuning_from_a_checkpoint_of_another_variant_fails_in_one_line(trained_run, tmp_path):
    ckpt = best_checkpoint(trained_run)  # a shunted run
    cfg = compose_cfg(tmp_path, "experiment=finetune", f"model.checkpoint={ckpt}", "attention=pvt")
    with pytest.raises(ConfigError) as error:
        train(cfg)  # run.py prints a ConfigError as its one error line and exits with 2
    message = str(error.value)
    assert "\n" not in message and "model.checkpoint=" in message
    assert "does not fit model=shunted_nano attention=pvt mlp=detail_specific: " in message and "missing" in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_finetune_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"model.checkpoint must be set"):
        check_config(compose_cfg(tmp_path, "experiment=finetune"))


def test_finetune_384_composes_the_stated_recipe_and_loads_a_224_swin_checkpoint(tmp_path):
    at_224 = timm.create_model("shunted_t", attention="swin")  # windows of 7
    path = lightning_file(tmp_path / "swin_224.ckpt", at_224)
    cfg = compose_cfg(tmp_path, "experiment=finetune_384", "model=shunted_t", "attention=swin",
                      f"model.checkpoint={path}", "data.root=/imagenet", tiny=False)  # fmt: skip
    assert cfg.data.image_size == 384 and cfg.data.crop_pct == 1.0 and cfg.trainer.max_epochs == 30
    assert cfg.optim.lr == cfg.optim.min_lr == 5e-6 and cfg.optim.warmup_epochs == 0
    assert cfg.data.batch_size * cfg.trainer.devices == 512
    model = build_model(cfg, 1000)
    # The recipe mixes its batches: images blended or cut into each other, and soft targets over two classes.
    module = ImageClassifier(model, 1000, **OmegaConf.to_container(cfg.optim, resolve=True))
    np.random.seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    mixed, targets = module.inputs_and_targets((x.clone(), y))
    assert not torch.equal(mixed, x) and targets.shape == (4, 1000)
    assert ((targets > 0.05).sum(-1) == 2).all()
    table = model.stages[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (23 * 23, 2)
    expected = resize_bias_table(at_224.stages[0].blocks[0].attn.relative_position_bias_table.detach(), 12)
    assert torch.equal(table.detach(), expected)
    assert torch.equal(model.head.weight, at_224.head.weight)  # the same 1000 classes: the head carries over
