"""The full network (the guide's "Example 4"): processor -> decoder -> mask head, and `build_model`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models.backbones import DEFAULT_BACKBONE, create_backbone
from models.decoder import MaskHead, PyramidDecoder
from models.processor import MultiScaleInputProcessor
from models.scaling import DEFAULT_SCALES

DEFAULT_FUSION = "hierarchical"


class MultiScaleCODNet(nn.Module):
    """Camouflaged-object detector over multi-scale fused features.

    forward(x) in eval mode returns mask logits [B, 1, H, W] at the input size. In training mode it
    returns (logits, multi-scale loss or None), the loss computed with BCE-with-logits when a target
    [B, 1, H, W] is given (as the guide's Example 4).
    """

    def __init__(self, processor: MultiScaleInputProcessor):
        super().__init__()
        self.multi_scale_processor = processor
        self.decoder = PyramidDecoder(processor.channels_list)
        self.head = MaskHead(self.decoder.out_channels)
        self.criterion = nn.BCEWithLogitsLoss()

    @property
    def backbone(self) -> nn.Module:
        return self.multi_scale_processor.backbone

    @property
    def fusion(self) -> str:
        return self.multi_scale_processor.fusion

    @property
    def scales(self) -> tuple[float, ...]:
        return self.multi_scale_processor.scales

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        size = x.shape[-2:]
        ms_loss = None
        if self.training and target is not None:
            features, scale_preds = self.multi_scale_processor(x, return_loss_inputs=True)
            ms_loss, _ = self.multi_scale_processor.compute_loss(scale_preds, target, self.criterion)
        else:
            features = self.multi_scale_processor(x)
        logits = self.head(self.decoder(features), size)
        if self.training:
            return logits, ms_loss
        return logits

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mask logits and the four fused feature maps (used by feature-level exports and parity)."""
        features = self.multi_scale_processor(x)
        return self.head(self.decoder(features), x.shape[-2:]), features


# The name used in the user's guide.
CamoXpertMultiScale = MultiScaleCODNet


def build_model(
    backbone: str = DEFAULT_BACKBONE,
    fusion: str = DEFAULT_FUSION,
    scales: Sequence[float] = DEFAULT_SCALES,
    weights: str | Path | dict | None = None,
    *,
    backbone_weights: str | Path | None = None,
    scale_weights: Sequence[float] | None = None,
    exportable: bool = False,
    eval_mode: bool = True,
) -> MultiScaleCODNet:
    """The one factory: build the full network and optionally load a checkpoint into it.

    `weights` is a checkpoint of the whole network (ours or the original layout, see
    `load_checkpoint`); `backbone_weights` a timm checkpoint for the backbone alone.
    `exportable=True` builds layers the ONNX exporter handles (no fused attention).
    """
    from models.checkpoint import load_checkpoint

    bb = create_backbone(backbone, weights=backbone_weights, exportable=exportable)
    processor = MultiScaleInputProcessor(bb, bb.channels, scales, fusion=fusion, scale_weights=scale_weights)
    model = MultiScaleCODNet(processor)
    if weights is not None:
        load_checkpoint(model, weights)
    return model.eval() if eval_mode else model
