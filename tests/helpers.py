"""Helpers shared by the tests (the fixtures are in conftest.py; the recording TensorRT fake is in
fake_tensorrt.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository
SMALL_BACKBONE = "pvt_v2_b0"
EXPORTED_FUSIONS = ("hierarchical", "absi")
# hierarchical carries the packaged demo checkpoint (real masks, and the export-from-weights path);
# absi is random-init seed 0 (the path without weights)
DEMO_WEIGHTS = ROOT / "models" / "weights" / f"{SMALL_BACKBONE}_hierarchical.safetensors"
EXPORT_WEIGHTS: dict[str, Path | None] = {"hierarchical": DEMO_WEIGHTS, "absi": None}


def make_processor(fusion: str = "hierarchical", scales=(0.5, 1.0, 1.5), backbone=None, **kwargs):
    from models import MultiScaleInputProcessor, create_backbone

    bb = backbone if backbone is not None else create_backbone(SMALL_BACKBONE)
    return MultiScaleInputProcessor(bb, bb.channels, scales, fusion=fusion, **kwargs)


def randomize_bn(module) -> None:
    """Give BatchNorm layers non-trivial running statistics so eval-mode comparisons mean something."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def copy_model(source: Path, target: Path) -> Path:
    """A model file and its `.json` sidecar, copied together (tests that write beside a model)."""
    for suffix in ("", ".json"):
        shutil.copy(str(source) + suffix, str(target) + suffix)
    return target


def original_rule(side: int, scale: float) -> int:
    """The original implementation's float size rule (int(H * s) // 32 * 32): what a naive port writes."""
    return side if scale == 1.0 else max(32, int(side * scale) // 32 * 32)
