"""Decoder over the fused pyramid and the mask head.

After the original repository's earlier decoder (docs/architecture.md): from the deepest
level up, upsample to the skip's size, concatenate the skip, two Conv3x3+BN+ReLU blocks; each stage
ends at its skip's channels, so the last stage has the stride-4 channels (64 for pvt_v2_b2). The
original upsampled x2 and then resized when sizes differed; we resize straight to the skip's size,
which is the same operation when the sizes are exactly double and avoids a shape test in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class DecoderStage(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.block = nn.Sequential(*_conv_bn_relu(in_ch + skip_ch, out_ch), *_conv_bn_relu(out_ch, out_ch))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class PyramidDecoder(nn.Module):
    """Fused [f1 (stride 4), f2, f3, f4 (stride 32)] -> one stride-4 map with f1's channels."""

    def __init__(self, channels_list: Sequence[int]):
        super().__init__()
        channels = list(channels_list)
        stages = []
        in_ch = channels[-1]
        for skip_ch in reversed(channels[:-1]):
            stages.append(DecoderStage(in_ch, skip_ch, skip_ch))
            in_ch = skip_ch
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_ch

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            x = stage(x, skip)
        return x


class MaskHead(nn.Module):
    """Conv3x3(C -> C/2) + BN + ReLU + Conv1x1(-> 1), upsampled to the input size, clamped to +-15."""

    def __init__(self, in_ch: int, clamp: float = 15.0):
        super().__init__()
        hidden = max(in_ch // 2, 1)
        self.block = nn.Sequential(*_conv_bn_relu(in_ch, hidden), nn.Conv2d(hidden, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        logits = F.interpolate(self.block(x), size=size, mode="bilinear", align_corners=False)
        return logits.clamp(-self.clamp, self.clamp)
