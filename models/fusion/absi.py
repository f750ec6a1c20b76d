"""Attention-Based Scale Integration (ABSI): attention across the scales at every pixel.

The original runs nn.MultiheadAttention on [B*H*W, S, C] tokens. Exported, that formulation bakes
sizes into the ONNX graph (pytorch issues 120075, 122321). `ScaleAttention` computes the same thing
on [B, S, C, H, W] maps with 1x1 convolutions and broadcast products, so every size stays symbolic,
and it keeps nn.MultiheadAttention's parameter names and shapes, so checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.fusion.common import conv_bn_gelu, resize_to_target
from runtime.errors import UserError


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A per-pixel linear layer (x @ W.T + b over channels) on [N, C, H, W] maps, as a 1x1 conv."""
    return F.conv2d(x, weight[:, :, None, None], bias)


class ScaleAttention(nn.Module):
    """nn.MultiheadAttention(embed_dim, num_heads, dropout, batch_first=True) applied per pixel
    across the scale axis, on [B, S, C, H, W] maps. Same parameters (`in_proj_weight`,
    `in_proj_bias`, `out_proj.weight`, `out_proj.bias`), same initialisation, same results.
    """

    def __init__(self, embed_dim: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if embed_dim % num_heads:
            raise UserError(f"ABSI needs channels divisible by {num_heads} heads, got {embed_dim}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        # export/rewrites.py sets this for ONNX: Softmax on an inner axis makes ONNX Runtime
        # transpose the tensor there and back; the same sums written out stay element-wise
        self.explicit_softmax = False
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _project_in(self, x: torch.Tensor, which: int) -> torch.Tensor:
        c = self.embed_dim
        sl = slice(which * c, (which + 1) * c)
        flat = _pointwise(x.flatten(0, 1), self.in_proj_weight[sl], self.in_proj_bias[sl])
        return flat.unflatten(0, (-1, x.shape[1])).unflatten(2, (self.num_heads, self.head_dim))

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Attention output per scale BEFORE out_proj: [B, S, C, H, W] in, [B, S, C, H, W] out."""
        q = self._project_in(query, 0) * (1.0 / math.sqrt(self.head_dim))  # [B, S, h, d, H, W]
        k = self._project_in(key, 1)
        v = self._project_in(value, 2)
        # scores[b, s, t, h] = <q[b, s, h], k[b, t, h]> over the head dimension
        scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(dim=4)  # [B, S, S, h, H, W]
        weights = F.dropout(self._softmax_over_scales(scores), p=self.dropout, training=self.training)
        out = (weights.unsqueeze(4) * v.unsqueeze(1)).sum(dim=2)  # [B, S, h, d, H, W]
        return out.flatten(2, 3)

    def _softmax_over_scales(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.explicit_softmax:
            return scores.softmax(dim=2)
        exp = (scores - scores.amax(dim=2, keepdim=True)).exp()
        return exp / exp.sum(dim=2, keepdim=True)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """out_proj on [B, C, H, W] maps."""
        return _pointwise(x, self.out_proj.weight, self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        attended = self.attend(query, key, value)
        return self.project_out(attended.flatten(0, 1)).unflatten(0, (-1, attended.shape[1]))


class AttentionBasedScaleIntegration(nn.Module):
    """Scale importance weights, per-scale Q/K/V conv projections, cross-scale attention, weighted
    sum over scales, output projection, plus the 1.0x map as residual."""

    def __init__(self, channels: int, num_scales: int = 3, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.channels = channels
        self.num_scales = num_scales

        def projections() -> nn.ModuleList:
            return nn.ModuleList(nn.Sequential(*conv_bn_gelu(channels, channels)) for _ in range(num_scales))

        self.scale_queries = projections()
        self.scale_keys = projections()
        self.scale_values = projections()
        self.scale_importance = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels * num_scales, channels, 1),
            nn.GELU(),
            nn.Conv2d(channels, num_scales, 1),
            nn.Softmax(dim=1),
        )
        self.cross_scale_attn = ScaleAttention(channels, num_heads, dropout)
        self.out_proj = nn.Sequential(*conv_bn_gelu(channels, channels, 3), nn.Conv2d(channels, channels, 1))
        # Never used in the forward pass; kept because the original has it and its checkpoints hold it.
        self.norm = nn.LayerNorm(channels)

    def forward(self, features: list[torch.Tensor], target_index: int = 1) -> torch.Tensor:
        resized = resize_to_target(features, target_index)
        weights = self.scale_importance(torch.cat(resized, dim=1))  # [B, S, 1, 1]

        def stack(projs: nn.ModuleList) -> torch.Tensor:
            return torch.stack([p(f) for p, f in zip(projs, resized)], dim=1)  # [B, S, C, H, W]

        attended = self.cross_scale_attn.attend(
            stack(self.scale_queries), stack(self.scale_keys), stack(self.scale_values)
        )
        # The original applies the attention's out_proj to each scale and then takes the weighted
        # sum. out_proj is affine and the softmax weights sum to 1, so summing first and projecting
        # once gives the same result with a third of the work.
        mixed = (attended * weights.unsqueeze(2)).sum(dim=1)
        integrated = self.cross_scale_attn.project_out(mixed)
        return self.out_proj(integrated) + resized[target_index]
