"""The backbone, the published presets, the timm contract and official checkpoints."""

import argparse
import itertools

import pytest
import timm
import torch
from helpers import official_key_listing, official_state_dict

from shunted_lab.models import FFNS, MIXERS, PyramidTransformer
from shunted_lab.models.ffn import PlainMlp
from shunted_lab.models.reference import reference_model
from shunted_lab.models.stats import count_gmacs

PUBLISHED = {"shunted_t": (11_553_576, 2.15), "shunted_s": (22_401_256, 4.99), "shunted_b": (39_614_376, 8.15)}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_params_and_gmacs(name):
    model = timm.create_model(name)
    params, published_gmacs = PUBLISHED[name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert round(count_gmacs(model, 224), 2) == published_gmacs


@pytest.mark.parametrize("attention,mlp", itertools.product(MIXERS, FFNS))
def test_every_variant_square_and_non_square(attention, mlp):
    model = timm.create_model("shunted_nano", attention=attention, mlp=mlp).eval()
    for hw in [(64, 64), (48, 80)]:
        assert model(torch.randn(2, 3, *hw)).shape == (2, 10)
        features = model.forward_intermediates(torch.randn(1, 3, *hw), intermediates_only=True)
        assert [f.shape[1:] for f in features] == [
            (c, -(-hw[0] // s), -(-hw[1] // s)) for c, s in zip((32, 64, 128, 256), (4, 8, 16, 32), strict=True)
        ]


@pytest.mark.parametrize("attention", list(MIXERS))
def test_every_parameter_receives_a_gradient(attention):
    model = timm.create_model("shunted_nano", attention=attention, drop_path_rate=0.1)
    model(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_shunted_t_non_square_and_non_divisible_input():
    model = timm.create_model("shunted_t", num_classes=5).eval()
    assert model(torch.randn(1, 3, 200, 168)).shape == (1, 5)  # stage-1 map 50x42: r=8 does not divide it


def test_smallest_input_runs_and_smaller_fails_clearly():
    model = timm.create_model("shunted_t", num_classes=5).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)  # stage-1 map 8x8 = r x r
    with pytest.raises(ValueError, match="smaller than sr_ratio=8"):
        model(torch.randn(1, 3, 28, 32))


def set_ffn_recompute(model, recompute):
    for ffn in model.modules():
        if isinstance(ffn, PlainMlp):
            ffn.recompute = recompute


def test_grad_checkpointing_gives_same_gradients():
    model = timm.create_model("shunted_nano")
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    set_ffn_recompute(model, True)  # block checkpoints around the FFNs' own selective ones, as on a GPU
    model(x).sum().backward()
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(model.parameters(), expected, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    # every mixer and every FFN once
    "attention,mlp",
    [("vit", "plain"), ("pvt", "dwconv"), ("swin", "detail_specific"), ("shunted", "detail_specific")],
)
def test_every_variant_compiles_as_one_graph(attention, mlp):
    # fullgraph=True fails on any graph break; aot_eager traces forward and backward like Inductor
    # does without generating code, so the check is backend-independent and takes seconds.
    torch._dynamo.reset()  # each variant's first compile, not a recompile past dynamo's limit
    torch.manual_seed(0)
    # The FFN's selective recomputation is traced too.
    model = timm.create_model("shunted_nano", attention=attention, mlp=mlp, ffn_recompute=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    compiled(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), model.eval()(x), rtol=1e-5, atol=1e-6)


def test_ffn_recompute_under_autocast_with_two_forwards_in_one_region():
    # The second forward finds the weights' low-precision copies in autocast's cache; recomputed, it casts.
    torch.manual_seed(0)
    model = timm.create_model("shunted_nano", ffn_recompute=True)
    x = torch.randn(4, 3, 64, 64)
    grads = []
    for recompute in (True, False):
        set_ffn_recompute(model, recompute)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sum(model(half).float().square().mean() for half in x.split(2))
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)  # bf16 rounding


@pytest.mark.parametrize("name", ["shunted_t", "shunted_s", "shunted_b"])
def test_official_key_listing_is_the_reference_models(name):
    expected = {k: torch.Size(s) for k, s in official_key_listing(name).items()}
    assert {k: v.shape for k, v in reference_model(name).state_dict().items()} == expected


@pytest.mark.parametrize("wrap", ["bare", "training_checkpoint"])
def test_official_checkpoint_loads_strictly_and_matches_reference(tmp_path, wrap):
    state = official_state_dict("shunted_s")
    path = tmp_path / "ckpt.pth"
    if wrap == "bare":
        torch.save(state, path)
    else:
        extra = dict(optimizer={"state": {}}, lr_scheduler={"last_epoch": 3}, epoch=299, scaler={"scale": 1.0})
        torch.save(dict(model=state, args=argparse.Namespace(model="shunted_s", lr=5e-4), **extra), path)
    model = timm.create_model("shunted_s", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    reference = reference_model("shunted_s").eval()
    reference.load_state_dict(state, strict=True)
    assert torch.equal(model.stages[3].norm.weight, state["norm4.weight"])
    assert torch.equal(model.stages[0].downsample.conv[4].running_var, state["patch_embed1.conv.4.running_var"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_checkpoint_for_a_new_head_keeps_the_backbone(tmp_path):
    state = official_state_dict("shunted_t")
    torch.save(state, tmp_path / "t.pth")
    model = timm.create_model(
        "shunted_t", pretrained=True, num_classes=10, pretrained_cfg_overlay={"file": str(tmp_path / "t.pth")}
    )
    assert model.head.out_features == 10
    assert torch.equal(model.stages[1].blocks[0].attn.kv1.weight, state["block2.0.attn.kv1.weight"])


def test_checkpoint_key_mismatch_lists_missing_and_unexpected(tmp_path):
    state = official_state_dict("shunted_t")
    del state["block3.1.attn.kv1.weight"]
    state["block3.1.attn.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match=r"missing keys \['stages.2.blocks.1.attn.kv1.weight'\].*unexpected keys"):
        timm.create_model("shunted_t", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "bad.pth")})


def test_checkpoint_for_another_variant_is_refused(tmp_path):
    torch.save(official_state_dict("shunted_t"), tmp_path / "t.pth")
    with pytest.raises(KeyError, match="attention='pvt'"):
        timm.create_model(
            "shunted_t", attention="pvt", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "t.pth")}
        )


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    torch.save({"model": official_state_dict("shunted_t"), "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(RuntimeError, match="weights_only"):
        timm.create_model("shunted_t", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "evil.pth")})


def test_missing_checkpoint_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        timm.create_model("shunted_t", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "nope.pth")})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(embed_dims=(33, 64, 128, 256)), r"num_heads=2 must be >= 1 and divide dim=33"),
        (dict(num_heads=(1, 2, 4, 8)), r"num_heads=1 is not allowed for shunted attention with sr_ratio=4.*even"),
        (dict(sr_ratios=(3, 2, 1, 1)), r"sr_ratio=3 is not allowed for shunted attention; expected 1 or an even"),
        (dict(attention="transformer"), r"attention='transformer' is not allowed; expected one of \['pvt', 'shunted'"),
        (dict(mlp="conv"), r"mlp='conv' is not allowed; expected one of \['detail_specific', 'dwconv', 'plain'\]"),
        (dict(stem="patchify"), r"stem='patchify' is not allowed; expected one of \['conv', 'overlap'\]"),
        (dict(depths=(1, 1, 1)), r"embed_dims has 4 entries; expected 3"),
        (dict(attention="swin", window_sizes=0), r"window_size=0 is not allowed for swin attention"),
        (dict(attention="pvt", sr_ratios=0), r"sr_ratio=0 is not allowed for pvt attention"),
        (
            dict(attention_kwargs=dict(linear=True)),
            r"attention option\(s\) \['linear'\] not accepted by ShuntedAttention",
        ),
        (dict(drop_path_rate=1.5), r"drop_path_rate=1.5 is not allowed"),
        (dict(ffn_recompute="yes"), r"ffn_recompute=.yes. is not allowed; expected true or false"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PyramidTransformer(**{**dict(embed_dims=(32, 64, 128, 256), sr_ratios=(4, 2, 1, 1)), **kwargs})


def test_variant_from_import_path():
    model = PyramidTransformer(depths=(1, 1, 1, 1), attention="shunted_lab.models.mixers.vit.GlobalAttention")
    assert type(model.stages[0].blocks[0].attn).__name__ == "GlobalAttention"
