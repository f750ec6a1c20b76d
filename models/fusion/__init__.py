"""Per-level fusion units, one module per mode, and the registry that drives CLI choices and tests.

Every unit is built as `Unit(channels, num_scales)` and called as `unit(features, target_index)`,
where `features` holds one map per scale and `target_index` is the position of the 1.0x scale.
"""

from __future__ import annotations

from torch import nn

from models.fusion.absi import AttentionBasedScaleIntegration, ScaleAttention
from models.fusion.baselines import AverageFusion, ConcatFusion
from models.fusion.hierarchical import HierarchicalScaleIntegration
from runtime.errors import UserError

FUSIONS: dict[str, type[nn.Module]] = {
    "hierarchical": HierarchicalScaleIntegration,
    "absi": AttentionBasedScaleIntegration,
    "concat": ConcatFusion,
    "average": AverageFusion,
}


def fusion_names() -> list[str]:
    return list(FUSIONS)


def fusion_class(name: str) -> type[nn.Module]:
    try:
        return FUSIONS[name]
    except KeyError:
        raise UserError(f"unknown fusion {name!r}; choose one of: {', '.join(FUSIONS)}") from None


__all__ = [
    "FUSIONS",
    "AttentionBasedScaleIntegration",
    "AverageFusion",
    "ConcatFusion",
    "HierarchicalScaleIntegration",
    "ScaleAttention",
    "fusion_class",
    "fusion_names",
]
