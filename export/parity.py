"""Parity against PyTorch: an exported model and the network it came from, on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.runner import torch_runner_for
from runtime.backends import AUTO, load
from runtime.compare import ParityReport, run_parity
from runtime.errors import UserError


def reference_probability(net: nn.Module, image: np.ndarray, metadata) -> np.ndarray:
    """PyTorch's probabilities for one RGB uint8 image at its own size: the model's preprocessing,
    the network, logits resized by torch (antialiased bilinear), then the sigmoid. What runtime
    masks (`runtime.Predictor`, `msdeploy infer`, served models) are compared with."""
    import torch.nn.functional as F

    from runtime.preprocess import preprocess

    with torch.inference_mode():
        logits = net(torch.from_numpy(preprocess(image, metadata)))
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False, antialias=True)
    return torch.sigmoid(logits)[0, 0].numpy()


def parity_shapes(sizes: Sequence[tuple[int, int]], batches: Sequence[int], static: Sequence[int] | None):
    if static:
        sizes = [tuple(static)]
    return [(b, 3, h, w) for h, w in sizes for b in batches]


def check_model_parity(
    model_path: str | Path,
    sizes: Sequence[tuple[int, int]] = ((256, 256), (320, 320), (352, 352), (416, 416)),
    batches: Sequence[int] = (1, 2),
    weights: str | Path | None = None,
    backend: str = AUTO,
    inference_precision: str | None = None,
) -> ParityReport:
    """`msdeploy parity`: the model (on `backend`, default by file type) against PyTorch. A model run
    in BF16 (openvino-cpu) is judged with the BF16 tolerance."""
    with load(model_path, backend, inference_precision=inference_precision) as runner:
        meta = runner.require_metadata()
        for h, w in sizes:
            if min(h, w) < meta.min_size:
                raise UserError(f"size {h}x{w} is below the model's minimum {meta.min_size}x{meta.min_size}")
        # the metadata the file itself carries: a sidecar may be missing or stale
        with torch_runner_for(meta, weights) as reference:
            shapes = parity_shapes(sizes, batches, meta.static_size)
            # floats run in BF16 (openvino-cpu): an FP32 or FP16 file is judged with the BF16 tolerance
            bf16 = getattr(runner, "inference_precision", None) == "bf16" and meta.precision in ("fp32", "fp16")
            return run_parity(runner, reference, shapes, precision="bf16" if bf16 else meta.precision)
