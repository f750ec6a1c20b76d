"""Shared backbones: timm `features_only` models giving four feature maps at strides 4, 8, 16, 32.

The registry is data: each entry names the timm model and which of its feature stages are the
stride-4..32 pyramid (ResNets expose a stride-2 stem feature first, so their indices start at 1).
Channels are read from the built model, never typed here, so a new timm release cannot make them
drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from runtime.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    out_indices: tuple[int, ...]
    family: str


def _family(prefix: str, names: list[str], out_indices: tuple[int, ...]) -> dict[str, BackboneSpec]:
    return {n: BackboneSpec(n, out_indices, prefix) for n in names}


BACKBONES: dict[str, BackboneSpec] = {
    **_family("pvt_v2", [f"pvt_v2_b{i}" for i in range(6)], (0, 1, 2, 3)),
    **_family("edgenext", ["edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_base"], (0, 1, 2, 3)),
    **_family("resnet", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"], (1, 2, 3, 4)),
}

DEFAULT_BACKBONE = "pvt_v2_b2"  # the original implementation's choice
EXPECTED_REDUCTIONS = (4, 8, 16, 32)


def backbone_names() -> list[str]:
    return list(BACKBONES)


def create_backbone(
    name: str, pretrained: bool = False, weights: str | Path | None = None, *, exportable: bool = False
) -> nn.Module:
    """Build a timm feature backbone returning a list of four maps (strides 4, 8, 16, 32).

    `weights` is a local timm-format checkpoint of the classification model (the head is dropped
    by timm's own filter). Nothing is downloaded: `pretrained=True` without `weights` is an error.
    `exportable=True` switches off timm's fused attention, which the ONNX exporter handles badly.
    The returned module carries `channels` and `reductions` read from timm's feature_info.
    """
    import timm
    from timm.layers import set_layer_config

    spec = BACKBONES.get(name)
    if spec is None:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    if pretrained and weights is None:
        raise UserError(
            f"pretrained=True needs a local weights file for {name!r} (this tool never downloads); "
            "pass weights=PATH to a timm checkpoint of that model"
        )
    kwargs: dict = {"features_only": True, "out_indices": spec.out_indices}
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"backbone weights file not found: {path}")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    with set_layer_config(exportable=exportable):
        try:
            model = timm.create_model(name, **kwargs)
        except RuntimeError as exc:  # size mismatches from a checkpoint of another model
            raise UserError(f"weights file {weights} does not fit backbone {name!r}: {exc}") from exc

    reductions = tuple(model.feature_info.reduction())
    if reductions != EXPECTED_REDUCTIONS:  # guards the registry against a timm change
        raise RuntimeError(f"{name}: feature strides {reductions}, expected {EXPECTED_REDUCTIONS}")
    model.channels = tuple(model.feature_info.channels())
    model.reductions = reductions
    model.backbone_name = name
    return model


def backbone_channels(backbone: nn.Module) -> tuple[int, ...]:
    """Channels of a backbone built by `create_backbone`, or probed with a small forward pass."""
    channels = getattr(backbone, "channels", None)
    if channels is not None:
        return tuple(channels)
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 64))
    return tuple(f.shape[1] for f in feats)
