"""A four-stage pyramid vision transformer whose token mixer and FFN are chosen by name.

With attention="shunted" and mlp="detail_specific" it is the Shunted Transformer (Ren et al.,
CVPR 2022); presets shunted_t/s/b reproduce the published models parameter for parameter and load
the official checkpoints. Every other mixer/FFN runs in the same backbone, so a comparison
changes one thing only.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._features_fx import register_notrace_module
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import check_choice
from .ffn import FFNS
from .layers import DropPath, resolve_variant, to_tokens
from .mixers import build_mixer

BLOCK_NORM_EPS = 1e-6  # inside blocks and after each stage; stem and patch embeddings keep 1e-5


class ConvStem(nn.Module):
    """The official stage-1 input: 7x7/2 conv-BN-ReLU, num_conv x (3x3 conv-BN-ReLU), 2x2/2 conv, LayerNorm."""

    def __init__(self, in_chans: int, dim: int, num_conv: int = 0, width: int = 64):
        super().__init__()
        layers = [nn.Conv2d(in_chans, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, dim, 2, 2))
        self.conv = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.conv(x)
        return self.norm(to_tokens(x)), x.shape[-2:]


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps neighbouring patches, then LayerNorm (PVTv2)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 3, stride: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return self.norm(to_tokens(x)), x.shape[-2:]


class Block(nn.Module):
    """Pre-norm residual block. `drop_path` None: no stochastic depth (an Identity)."""

    def __init__(self, dim: int, mixer: nn.Module, ffn: nn.Module, drop_path: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = mixer
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = ffn
        self.drop_path = nn.Identity() if drop_path is None else DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


@register_notrace_module  # torch.fx: runs as one leaf; the blocks compute with the map's sizes, which must be concrete
class StageBlocks(nn.ModuleList):
    """A stage's blocks, run in order over (B, N, C) tokens of an H x W map."""

    def __init__(self, blocks: list[Block]):
        super().__init__(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for block in self:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, hw, use_reentrant=False)
            else:
                x = block(x, hw)
        return x


class PyramidStage(nn.Module):
    """Downsample (stem or patch embedding) -> blocks -> LayerNorm; NCHW in and out. It builds its own
    parts from its arguments, as timm's stages do: the first stage's downsample is the stem (`stem`:
    `conv`, the official ConvStem, or `overlap`, PVTv2's 7x7/4 patch embedding), a later stage's a
    3x3/2 overlapping patch embedding. Block j's mixer gets `shift` = j odd (swin)."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        *,
        first: bool,
        stem: str,
        num_conv: int,
        attention: str,
        attention_kwargs: dict,
        num_heads: int,
        sr_ratio: int,
        window_size: int,
        qkv_bias: bool,
        attn_drop: float,
        ffn_cls: type[nn.Module],
        mlp_ratio: float,
        proj_drop: float,
        ffn_recompute: bool,
        drop_paths: list[float | None],
    ):
        super().__init__()
        if not first:
            self.downsample = OverlapPatchEmbed(in_dim, dim)
        elif stem == "conv":
            self.downsample = ConvStem(in_dim, dim, num_conv)
        else:
            self.downsample = OverlapPatchEmbed(in_dim, dim, patch_size=7, stride=4)
        hidden_dim = int(dim * mlp_ratio)
        blocks = [
            Block(
                dim,
                build_mixer(
                    attention,
                    dim,
                    num_heads,
                    dict(sr_ratio=sr_ratio, window_size=window_size, shift=j % 2 == 1),
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop,
                    proj_drop=proj_drop,
                    **attention_kwargs,
                ),
                ffn_cls(dim, hidden_dim, drop=proj_drop, recompute=ffn_recompute),
                drop_paths[j],
            )
            for j in range(depth)
        ]
        self.blocks = StageBlocks(blocks)
        self.norm = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last convs are faster (oneDNN on CPU, cuDNN on GPU) and their output is already
        # token-major, so the LayerNorm reads it without a copy. Later stages get it as a free view.
        x, hw = self.downsample(x.contiguous(memory_format=torch.channels_last))
        x = self.blocks(x, hw)
        return self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1])


def _per_stage(name: str, value, num_stages: int) -> tuple:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * num_stages
    if len(values) != num_stages:
        raise ValueError(f"{name} has {len(values)} entries; expected {num_stages} (one per stage) or a single value")
    return values


class PyramidTransformer(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (1, 2, 4, 1),
        num_heads: Sequence[int] | int = (2, 4, 8, 16),
        mlp_ratios: Sequence[float] | float = (8, 8, 4, 4),
        sr_ratios: Sequence[int] | int = (8, 4, 2, 1),
        window_sizes: Sequence[int] | int = 7,
        attention: str = "shunted",
        mlp: str = "detail_specific",
        attention_kwargs: dict | None = None,
        stem: str = "conv",
        num_conv: int = 0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        ffn_recompute: bool = False,
    ):
        super().__init__()
        num_stages = len(depths)
        embed_dims = _per_stage("embed_dims", embed_dims, num_stages)
        num_heads = _per_stage("num_heads", num_heads, num_stages)
        mlp_ratios = _per_stage("mlp_ratios", mlp_ratios, num_stages)
        sr_ratios = _per_stage("sr_ratios", sr_ratios, num_stages)
        window_sizes = _per_stage("window_sizes", window_sizes, num_stages)
        check_choice("stem", stem, ("conv", "overlap"))
        check_choice("global_pool", global_pool, ("avg", ""))
        ffn_cls = resolve_variant("mlp", mlp, FFNS)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate} is not allowed; expected 0 <= value < 1")
        if ffn_recompute not in (True, False):
            raise ValueError(f"ffn_recompute={ffn_recompute!r} is not allowed; expected true or false")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.attention, self.mlp = attention, mlp
        self.feature_info = []
        # One DropPath per block whenever the model has any, the first block's at rate 0: blocks of a
        # stage then share one structure, and so one compiled graph (see compile_blocks).
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths)).tolist() if drop_path_rate else [None] * sum(depths)
        stages, prev_dim = [], in_chans
        for i, (dim, depth) in enumerate(zip(embed_dims, depths, strict=True)):
            stage = PyramidStage(
                prev_dim,
                dim,
                depth,
                first=i == 0,
                stem=stem,
                num_conv=num_conv,
                attention=attention,
                attention_kwargs=attention_kwargs or {},
                num_heads=num_heads[i],
                sr_ratio=sr_ratios[i],
                window_size=window_sizes[i],
                qkv_bias=qkv_bias,
                attn_drop=attn_drop_rate,
                ffn_cls=ffn_cls,
                mlp_ratio=mlp_ratios[i],
                proj_drop=proj_drop_rate,
                ffn_recompute=ffn_recompute,
                drop_paths=drop_paths[sum(depths[:i]) : sum(depths[: i + 1])],
            )
            stages.append(stage)
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
            prev_dim = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stages\.0\.downsample", blocks=r"^stages\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.blocks.grad_checkpointing = enable

    def compile_blocks(self, **compile_kwargs) -> None:
        """Regional compilation: each Block is compiled in place, and the blocks of a stage share one
        graph (parameters are graph inputs, drop-path rates are buffers, shapes are static), so a
        stage compiles once, not once per block. Stems, patch embeddings and the head stay eager.
        A graph per stage, per shift setting (swin) and per train/eval mode exceeds dynamo's default
        of 8 recompiles of Block.forward, hence the higher limit.
        """
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for stage in self.stages:
            for block in stage.blocks:
                block.compile(dynamic=False, **compile_kwargs)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            check_choice("global_pool", global_pool, ("avg", ""))
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (already layer-normed, so `norm` changes nothing), NCHW at strides 4/8/16/32."""
        check_choice("output_fmt", output_fmt, ("NCHW",))
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if pruned:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool:
            x = x.mean(dim=(-2, -1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    """The official initialisation (LayerNorm and BatchNorm keep PyTorch's 1/0 defaults)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_OFFICIAL_KEY_RULES = (
    (r"^patch_embed1\.", "stages.0.downsample."),
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
)


def checkpoint_filter_fn(state_dict: dict, model: PyramidTransformer) -> dict:
    """Official release keys (patch_embedN / blockN.i / normN) -> this model's; fail on any mismatch.

    The classifier is left to timm, which drops it when num_classes differs from the checkpoint's.
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _OFFICIAL_KEY_RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    expected = {k for k in model.state_dict() if not k.startswith("head.")}
    given = {k for k in out if not k.startswith("head.")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not match {type(model).__name__}(attention={model.attention!r}, mlp={model.mlp!r}): "
            f"missing keys {missing}; unexpected keys {unexpected}"
        )
    return out


def _create(variant: str, pretrained: bool = False, **kwargs) -> PyramidTransformer:
    pretrained_file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
    if pretrained and pretrained_file and not Path(pretrained_file).is_file():
        raise FileNotFoundError(f"pretrained_cfg_overlay.file={pretrained_file!r} does not exist")
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        PyramidTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stages.0.downsample.conv.0",
        "classifier": "head",
        "fixed_input_size": False,
        "paper_ids": "arXiv:2111.15193",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "shunted_t.in1k": _cfg(),
        "shunted_s.in1k": _cfg(),
        "shunted_b.in1k": _cfg(),
        # Trained from scratch only: 64x64 inputs, 4 blocks, seconds per epoch on two CPU cores.
        "shunted_nano": _cfg(
            input_size=(3, 64, 64), pool_size=(2, 2), num_classes=10, first_conv="stages.0.downsample.proj"
        ),
    }
)

# Published hyperparameters (paper Table 1 and the official release).
SHUNTED_COMMON = dict(
    embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1)
)


@register_model
def shunted_t(pretrained: bool = False, **kwargs) -> PyramidTransformer:
    args = dict(SHUNTED_COMMON, depths=(1, 2, 4, 1), num_conv=0, drop_path_rate=0.1)
    return _create("shunted_t", pretrained, **dict(args, **kwargs))


@register_model
def shunted_s(pretrained: bool = False, **kwargs) -> PyramidTransformer:
    args = dict(SHUNTED_COMMON, depths=(2, 4, 12, 1), num_conv=1, drop_path_rate=0.2)
    return _create("shunted_s", pretrained, **dict(args, **kwargs))


@register_model
def shunted_b(pretrained: bool = False, **kwargs) -> PyramidTransformer:
    args = dict(SHUNTED_COMMON, depths=(3, 4, 24, 2), num_conv=2, drop_path_rate=0.3)
    return _create("shunted_b", pretrained, **dict(args, **kwargs))


@register_model
def shunted_nano(pretrained: bool = False, **kwargs) -> PyramidTransformer:
    # Stage maps at 64x64 input are 16, 8, 4, 2: rates 4, 2, 1, 1 keep every aggregated map >= 2x2,
    # and windows of 4 give swin several windows in the first stage.
    args = dict(
        embed_dims=(32, 64, 128, 256),
        depths=(1, 1, 1, 1),
        num_heads=(2, 2, 4, 8),
        mlp_ratios=(4, 4, 4, 4),
        sr_ratios=(4, 2, 1, 1),
        window_sizes=(4, 4, 4, 2),
        stem="overlap",
        drop_path_rate=0.0,
        num_classes=10,
    )
    return _create("shunted_nano", pretrained, **dict(args, **kwargs))
