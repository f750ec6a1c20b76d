"""Scaled copies of the input, with the original implementation's rounding rule.

Rule (docs/architecture.md): for a scale s != 1.0, h = max(32, (int(H * s) // 32) * 32), the same
for W, resized bilinearly (align_corners=False); the 1.0x input passes through unrounded.

The rule is written in integer arithmetic on the scale as an exact fraction p/q:
floor(floor(H*p/q) / 32) == (p*H) // (32*q), so h = max(32, (p*H) // (32*q) * 32). The torch exporter
keeps integer floor division symbolic, while float arithmetic (int(H * 0.5)) is silently frozen into
the ONNX graph as a constant for the example's size (docs/onnx-export.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import UserError

ALIGN = 32
MIN_SIDE = 32
DEFAULT_SCALES = (0.5, 1.0, 1.5)


def scale_fraction(scale: float) -> Fraction:
    """The scale as a small exact fraction (0.75 -> 3/4); float noise such as 0.6 -> 3/5."""
    return Fraction(scale).limit_denominator(1000)


def validate_scales(scales: Sequence[float]) -> tuple[float, ...]:
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise UserError("scales is empty; give a list containing 1.0, e.g. 0.5,1.0,1.5")
    if any(not (s > 0) for s in scales):
        raise UserError(f"scales must be positive, got {list(scales)}")
    if 1.0 not in scales:
        raise UserError(
            f"scales {list(scales)} lack 1.0: the 1.0x copy is the fusion target and residual; "
            "add 1.0, e.g. 0.5,1.0,1.5"
        )
    if len(set(scales)) != len(scales):
        raise UserError(f"scales contain duplicates: {list(scales)}")
    return scales


def scaled_side(side, scale: float):
    """One side after scaling. Works on Python ints and on symbolic sizes during export."""
    if scale == 1.0:
        return side
    frac = scale_fraction(scale)
    # ALIGN * max(1, k) rather than max(ALIGN, ALIGN * k): the same number, but the exporter's
    # symbolic sizes stay "32 * m", so the backbone's ceil(side / stride) folds to 8m, 4m, 2m, m
    # instead of nested floor divisions (this made the export several times faster).
    blocks = (frac.numerator * side) // (ALIGN * frac.denominator)
    if isinstance(blocks, torch.Tensor):  # TorchScript tracing (openvino.convert_model): sizes are tensors
        return ALIGN * torch.clamp(blocks, min=MIN_SIDE // ALIGN)
    return ALIGN * torch.sym_max(MIN_SIDE // ALIGN, blocks)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of the copy at `scale`: scaled_size(352, 352, 0.5) == (160, 160)."""
    return int(scaled_side(height, scale)), int(scaled_side(width, scale))


class MultiScaleInputGenerator(nn.Module):
    """Turns [B, 3, H, W] into one bilinearly resized copy per scale."""

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, align_corners: bool = False):
        super().__init__()
        self.scales = validate_scales(scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = x.shape[-2], x.shape[-1]
        out = []
        for scale in self.scales:
            if scale == 1.0:
                out.append(x)
                continue
            size = (scaled_side(height, scale), scaled_side(width, scale))
            out.append(F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners))
        return out
