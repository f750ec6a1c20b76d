"""Building blocks shared by the fusion units."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_gelu(in_ch: int, out_ch: int, kernel: int = 1) -> list[nn.Module]:
    """Conv + BN + GELU as a flat list, so Sequential indices match the original checkpoints."""
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.BatchNorm2d(out_ch), nn.GELU()]


def resize_to_target(features: list[torch.Tensor], target_index: int) -> list[torch.Tensor]:
    """Bring every scale's feature map to the size of the 1.0x map.

    The 1.0x map is the target, so it is passed through; every other map is always resized, with no
    `if sizes differ` test: a bilinear resize to the same size is the identity, and a shape test
    would become a guard that pins sizes in an ONNX export.
    """
    target = features[target_index]
    size = target.shape[-2:]
    return [
        f if i == target_index else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        for i, f in enumerate(features)
    ]
