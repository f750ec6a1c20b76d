"""Checks on the image batch that reaches the network.

Skipped while the model is being exported: there the sizes are symbolic and a data-dependent test
(isfinite over the values) would either fail the export or become a guard that pins the sizes.
"""

from __future__ import annotations

import torch

from models.scaling import MIN_SIDE
from runtime.errors import UserError


def is_exporting() -> bool:
    return bool(
        torch.compiler.is_exporting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
    )


def check_image_batch(x: torch.Tensor) -> None:
    if is_exporting():
        return
    if not isinstance(x, torch.Tensor):
        raise UserError(f"input must be a torch.Tensor [B, 3, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"input must be [B, 3, H, W] (RGB batch), got shape {list(x.shape)}")
    height, width = x.shape[-2:]
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UserError(
            f"input is {height}x{width}; height and width must be at least {MIN_SIDE} "
            "(the backbone's stride-32 level needs one pixel); resize the image up"
        )
    if not x.is_floating_point():
        raise UserError(f"input must be a floating-point tensor, got {x.dtype}; normalise the image first")
    if not bool(torch.isfinite(x).all()):
        raise UserError("input contains NaN or Inf values; check the preprocessing (division by zero?)")
