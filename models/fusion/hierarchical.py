"""Hierarchical scale integration: coarse+standard first, then the fine scale (exactly three scales)."""

from __future__ import annotations

import torch
from torch import nn

from models.fusion.common import conv_bn_gelu, resize_to_target
from runtime.errors import UserError


def _channel_attention(channels: int) -> nn.Sequential:
    hidden = max(channels // 4, 1)
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
    )


def _integration(channels: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_gelu(2 * channels, channels, 1), *conv_bn_gelu(channels, channels, 3))


class HierarchicalScaleIntegration(nn.Module):
    """stage1 = attend(conv(cat[f0.5, f1.0])); stage2 = attend(conv(cat[stage1, f1.5])); out = stage2 + f1.0.

    Both stages share one spatial-attention module, as in the original.
    """

    def __init__(self, channels: int, num_scales: int = 3):
        super().__init__()
        if num_scales != 3:
            raise UserError(
                f"hierarchical fusion is defined for exactly three scales (coarse, 1.0, fine), "
                f"got {num_scales}; use fusion 'absi', 'concat' or 'average' for other scale lists"
            )
        self.channels = channels
        self.stage1_integration = _integration(channels)
        self.stage2_integration = _integration(channels)
        self.stage1_channel_attn = _channel_attention(channels)
        self.stage2_channel_attn = _channel_attention(channels)
        self.spatial_attn = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3), nn.Sigmoid())

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * self.spatial_attn(pooled)

    def _stage(self, a: torch.Tensor, b: torch.Tensor, integrate: nn.Module, channel_attn: nn.Module):
        x = integrate(torch.cat([a, b], dim=1))
        x = x * channel_attn(x)
        return self._spatial(x)

    def forward(self, features: list[torch.Tensor], target_index: int = 1) -> torch.Tensor:
        coarse, standard, fine = resize_to_target(features, target_index)
        stage1 = self._stage(coarse, standard, self.stage1_integration, self.stage1_channel_attn)
        stage2 = self._stage(stage1, fine, self.stage2_integration, self.stage2_channel_attn)
        return stage2 + standard
