"""Semantic segmentation on the pyramid backbone: the Semantic FPN head that PVT and Shunted used on
ADE20K (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019; mmsegmentation's FPN neck
and FPNHead).

- FPN: a 1x1 lateral conv per stage to `fpn_dim` channels, a top-down pathway that upsamples each
  coarser level (nearest) and adds it to the next finer lateral, then a 3x3 conv per level.
- Head: each level is brought to stride 4 by a chain of 3x3 conv-GN-ReLU blocks (`channels` wide),
  each followed by a 2x bilinear upsampling, as many as the level is coarser than stride 4 (one
  block, no upsampling, at stride 4); the levels are summed, and a 1x1 conv classifies every
  pixel. The logits are upsampled bilinearly to the input size.

The backbone is the same PyramidTransformer as in classification, every mixer, FFN and preset, with
its classifier removed: its stage outputs (strides 4, 8, 16, 32, `forward_intermediates`, timm's
features contract) feed the FPN, and its weights keep the classification names, so an ImageNet
checkpoint loads into `backbone` unchanged.
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv_gn_relu(in_dim: int, out_dim: int, groups: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, out_dim), out_dim),
        nn.ReLU(inplace=True),
    )


class FeaturePyramid(nn.Module):
    """Lateral 1x1 convs, the top-down sum, a 3x3 conv per level: `fpn_dim` channels at every stride."""

    def __init__(self, in_dims: list[int], fpn_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(d, fpn_dim, 1) for d in in_dims)
        self.output = nn.ModuleList(nn.Conv2d(fpn_dim, fpn_dim, 3, padding=1) for _ in in_dims)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + F.interpolate(levels[i], size=levels[i - 1].shape[-2:], mode="nearest")
        return [conv(level) for conv, level in zip(self.output, levels, strict=True)]


class ScaleHead(nn.Sequential):
    """One pyramid level to stride 4: `steps` conv-GN-ReLU + 2x upsampling blocks (one conv at stride 4)."""

    def __init__(self, in_dim: int, channels: int, steps: int):
        blocks = []
        for i in range(max(1, steps)):
            blocks.append(conv_gn_relu(in_dim if i == 0 else channels, channels))
            if steps > 0:
                blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        super().__init__(*blocks)


class SemanticFPN(nn.Module):
    def __init__(self, in_dims: list[int], strides: list[int], num_classes: int, fpn_dim: int, channels: int):
        super().__init__()
        self.fpn = FeaturePyramid(in_dims, fpn_dim)
        finest = strides[0]
        self.scale_heads = nn.ModuleList(ScaleHead(fpn_dim, channels, (s // finest).bit_length() - 1) for s in strides)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = self.fpn(features)
        size = levels[0].shape[-2:]
        out = self.scale_heads[0](levels[0])
        for head, level in zip(self.scale_heads[1:], levels[1:], strict=True):
            # Inputs whose side is no multiple of 32 give maps a pixel off 2x: align them to stride 4.
            out = out + F.interpolate(head(level), size=size, mode="bilinear", align_corners=False)
        return self.classifier(out)


class SegmentationModel(nn.Module):
    """backbone (a PyramidTransformer without its classifier) -> SemanticFPN -> per-pixel logits at input size."""

    def __init__(self, backbone: nn.Module, num_classes: int, fpn_dim: int | None = None, channels: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.feature_info = backbone.feature_info
        # The published widths (FPN 256, head 128 on 512-wide Shunted/PVT backbones), in proportion to
        # the backbone: half its last stage's width, and half that.
        fpn_dim = fpn_dim or self.feature_info[-1]["num_chs"] // 2
        channels = channels or fpn_dim // 2
        self.decode_head = SemanticFPN(
            [f["num_chs"] for f in self.feature_info],
            [f["reduction"] for f in self.feature_info],
            num_classes,
            fpn_dim,
            channels,
        )

    def compile_blocks(self, **compile_kwargs) -> None:
        self.backbone.compile_blocks(**compile_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(x, intermediates_only=True)
        logits = self.decode_head(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
