"""Grad-CAM (Selvaraju et al., ICCV 2017) on the last stage's NCHW features.

The model has no CLS token, so the class evidence is read where it is pooled: the gradient of the
predicted class's logit, averaged over each channel's map, weights that channel.
"""

import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, W) maps in [0, 1] at the input's size, predicted classes, and their softmax confidence."""
    features = model.forward_features(images)
    logits = model.forward_head(features)
    predicted = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, predicted[:, None]).sum(), features)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    confidence = logits.softmax(dim=1).gather(1, predicted[:, None])[:, 0]
    return cam.detach(), predicted, confidence.detach()
