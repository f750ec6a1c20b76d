"""The guide's comparison baselines: concatenation with a projection, and a plain average."""

from __future__ import annotations

import torch
from torch import nn

from models.fusion.common import resize_to_target


class ConcatFusion(nn.Module):
    """cat of the resized maps -> Conv1x1(S*C -> C): the projection keeps the level's channels."""

    def __init__(self, channels: int, num_scales: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(channels * num_scales, channels, 1)

    def forward(self, features: list[torch.Tensor], target_index: int = 1) -> torch.Tensor:
        return self.proj(torch.cat(resize_to_target(features, target_index), dim=1))


class AverageFusion(nn.Module):
    """Mean of the resized maps; no parameters."""

    def __init__(self, channels: int, num_scales: int = 3):
        super().__init__()

    def forward(self, features: list[torch.Tensor], target_index: int = 1) -> torch.Tensor:
        return torch.stack(resize_to_target(features, target_index), dim=0).mean(dim=0)
