"""The timm model contract, walked for every registered model and every mixer/FFN combination,
as timm's own model tests check it: pretrained_cfg, classifier and pooling, features, FX tracing."""

import itertools

import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import FeatureGraphNet
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from shunted_lab.models import FFNS, MIXERS

PRESETS = ["shunted_nano", "shunted_t", "shunted_s", "shunted_b"]
MODELS = [(name, {}) for name in PRESETS] + [
    ("shunted_nano", dict(attention=a, mlp=m)) for a, m in itertools.product(MIXERS, FFNS)
]
IDS = [f"{name}-{kw.get('attention', 'default')}-{kw.get('mlp', 'default')}" for name, kw in MODELS]


def small_input(model) -> torch.Tensor:
    # The presets run at 64 px here (2 images), nano at its own 64: the contract does not depend on size.
    return torch.randn(2, model.pretrained_cfg["input_size"][0], 64, 64)


@pytest.fixture(params=MODELS, ids=IDS)
def model(request):
    name, kwargs = request.param
    return timm.create_model(name, **kwargs).eval()


def test_contract_pretrained_cfg_names_real_modules(model):
    cfg = model.pretrained_cfg
    first_conv = model.get_submodule(cfg["first_conv"])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg["input_size"][0]
    classifier = model.get_submodule(cfg["classifier"])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg["num_classes"] == model.num_classes
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        features = model.forward_features(x)
    assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"])
    assert features.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    for info in model.feature_info:
        model.get_submodule(info["module"])


def test_contract_head_and_reset_classifier(model):
    x = small_input(model)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_classes)
        features = model.forward_features(x)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, global_pool="")
        assert model(x).shape == features.shape


def test_contract_intermediates_and_grad_checkpointing(model):
    x = small_input(model)
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        assert len(stages) == 4 and torch.equal(final, stages[-1])
        for info, out in zip(model.feature_info, stages, strict=True):
            assert out.shape[1] == info["num_chs"] and out.shape[-1] == 64 // info["reduction"]
        only = model.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
        assert len(only) == 2 and all(torch.equal(a, b) for a, b in zip(only, stages[2:], strict=True))
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        assert len(early) == 1 and torch.equal(early[0], stages[0])
    model.train()
    torch.manual_seed(0)
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    model(x).sum().backward()
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", MODELS[:1] + MODELS[4:], ids=IDS[:1] + IDS[4:])
def test_contract_features_only_with_out_indices(name, kwargs):
    model = timm.create_model(name, features_only=True, out_indices=(1, 3), **kwargs).eval()
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 64, 64))
    assert model.feature_info.channels() == [64, 256] and model.feature_info.reduction() == [8, 32]
    assert [tuple(m.shape) for m in maps] == [(2, 64, 8, 8), (2, 256, 2, 2)]


def test_contract_fx_traces_forward_and_backward(model):
    # As timm's test_model_forward_fx / test_model_backward_fx: torchvision's extractor with the leaf
    # modules and functions timm registers (ours: StageBlocks), traced to the output node, then run.
    tracer_kwargs = dict(leaf_modules=list(get_notrace_modules()), autowrap_functions=list(get_notrace_functions()))
    x = small_input(model)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    fx = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx.eval()(x).values())), model(x))
    fx.train()
    next(iter(fx(x).values())).sum().backward()
    assert all(p.grad is not None for p in fx.parameters())
    # timm's FX feature extraction (features_only with feature_cls="fx") builds on the same trace.
    stages = FeatureGraphNet(model.eval(), out_indices=(1, 3))
    with torch.no_grad():
        maps = stages(x)
    assert [m.shape[1] for m in maps] == [model.feature_info[1]["num_chs"], model.feature_info[3]["num_chs"]]
