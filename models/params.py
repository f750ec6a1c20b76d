"""Parameter counts per component, beside the guide's published claims."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from models.backbones import create_backbone
from models.decoder import MaskHead, PyramidDecoder
from models.fusion import FUSIONS
from models.processor import MultiScaleFeatureFusion, _prediction_head
from models.scaling import DEFAULT_SCALES, validate_scales

# The guide's "Parameter Count" table (for pvt_v2_b2), quoted as the user's claims, not measured.
GUIDE_CLAIMS = {
    "backbone": "~25M",
    "absi_units": "~8M",
    "hierarchical_units": "~4M",
    "prediction_heads": "~0.5M",
    "total_original": "~38M",
}


_LABELS = {"hierarchical": "Hierarchical", "absi": "ABSI", "concat": "Concat", "average": "Average"}


@dataclass(frozen=True)
class ParamRow:
    key: str
    component: str
    params: int
    guide: str = ""


def count(module: nn.Module) -> int:
    """Parameters counted once even when a module is shared (as the backbone is across scales)."""
    return sum(p.numel() for p in module.parameters())


def parameter_table(backbone: str = "pvt_v2_b2", scales: Sequence[float] = DEFAULT_SCALES) -> list[ParamRow]:
    scales = validate_scales(scales)
    bb = create_backbone(backbone)
    channels = bb.channels
    levels = len(channels)
    rows = [ParamRow("backbone", f"Backbone {backbone} (shared by {len(scales)} scales)", count(bb))]
    units: dict[str, int] = {}
    refinement = 0
    for name in FUSIONS:
        if name == "hierarchical" and len(scales) != 3:
            continue
        fusion = MultiScaleFeatureFusion(channels, len(scales), name)
        units[name] = count(fusion.units)
        refinement = count(fusion.refinement)
        rows.append(ParamRow(f"{name}_units", f"{_LABELS[name]} units x{levels}", units[name]))
    heads = count(nn.ModuleList(_prediction_head(channels[0]) for _ in scales))
    decoder = PyramidDecoder(channels)
    mask_head = MaskHead(decoder.out_channels)
    rows += [
        ParamRow("refinement", f"Refinement x{levels}", refinement),
        ParamRow("prediction_heads", f"Prediction heads x{len(scales)} (training only)", heads),
        ParamRow("decoder", "Decoder", count(decoder)),
        ParamRow("mask_head", "Mask head", count(mask_head)),
    ]
    shared = rows[0].params + refinement + heads + count(decoder) + count(mask_head)
    for name, n in units.items():
        rows.append(ParamRow(f"total_{name}", f"Total, {name} network", shared + n))
    if "hierarchical" in units:
        original = rows[0].params + units["absi"] + units["hierarchical"] + refinement + heads
        rows.append(ParamRow("total_original", "Original processor (builds ABSI and hierarchical units)", original))
    if backbone == "pvt_v2_b2":
        rows = [ParamRow(r.key, r.component, r.params, GUIDE_CLAIMS.get(r.key, "")) for r in rows]
    return rows
