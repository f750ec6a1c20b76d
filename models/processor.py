"""MultiScaleInputProcessor: scaled copies -> one shared backbone -> per-level fusion -> refinement.

Module and parameter names follow the original implementation so its checkpoints load
(docs/architecture.md, "Checkpoints"); the original builds ABSI and hierarchical units
side by side, we build only the mode in use (`feature_fusion.<mode>_units`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import backbone_channels
from models.fusion import fusion_class
from models.fusion.common import conv_bn_gelu
from models.scaling import MultiScaleInputGenerator, validate_scales
from models.validation import check_image_batch
from runtime.errors import UserError


def _refinement(channels: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_gelu(channels, channels, 3), nn.Conv2d(channels, channels, 1))


def _prediction_head(channels: int) -> nn.Sequential:
    hidden = max(channels // 2, 1)
    return nn.Sequential(*conv_bn_gelu(channels, hidden, 3), nn.Conv2d(hidden, 1, 1))


class MultiScaleFeatureFusion(nn.Module):
    """One fusion unit and one refinement block per pyramid level."""

    def __init__(self, channels_list: Sequence[int], num_scales: int, fusion: str):
        super().__init__()
        unit = fusion_class(fusion)
        self.fusion = fusion
        self.units_name = f"{fusion}_units"
        self.add_module(self.units_name, nn.ModuleList(unit(c, num_scales) for c in channels_list))
        self.refinement = nn.ModuleList(_refinement(c) for c in channels_list)

    @property
    def units(self) -> nn.ModuleList:
        return getattr(self, self.units_name)

    def forward(self, pyramids: list[list[torch.Tensor]], target_index: int) -> list[torch.Tensor]:
        """`pyramids[scale][level]` -> one fused map per level, at the 1.0x map's size."""
        fused = []
        for level, (unit, refine) in enumerate(zip(self.units, self.refinement)):
            fused.append(refine(unit([p[level] for p in pyramids], target_index)))
        return fused

    def refine_only(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        """Single-scale warm-up: the 1.0x features go straight to the refinement blocks."""
        return [refine(f) for refine, f in zip(self.refinement, pyramid)]


class ScaleAwareLoss(nn.Module):
    """Weighted sum of one criterion per scale; the weights live in the buffer `scale_weights`."""

    def __init__(self, scale_weights: Sequence[float]):
        super().__init__()
        self.register_buffer("scale_weights", torch.tensor([float(w) for w in scale_weights]))

    def forward(
        self,
        predictions: Sequence[torch.Tensor],
        target: torch.Tensor,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scale_indices: Sequence[int],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        report: dict[str, float] = {}
        for i, pred in zip(scale_indices, predictions):
            resized = target
            if target.shape[-2:] != pred.shape[-2:]:
                resized = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=False)
            loss = criterion(pred, resized)
            weighted = self.scale_weights[i] * loss
            total = weighted if total is None else total + weighted
            report[f"loss_scale_{i}"] = float(loss.detach())
            report[f"weighted_loss_scale_{i}"] = float(weighted.detach())
        report["total_loss"] = float(total.detach())
        return total, report


def default_scale_weights(scales: Sequence[float]) -> list[float]:
    """1.0 for the 1.0x scale, 0.5 for every other (the guide's and the original's rule)."""
    return [1.0 if s == 1.0 else 0.5 for s in scales]


class MultiScaleInputProcessor(nn.Module):
    """Three (or more) scaled copies of the image through one shared backbone, fused per level.

    Args:
        backbone: returns a list of four feature maps (strides 4..32) for an image batch.
        channels_list: channels of those maps; read from the backbone when None.
        scales: scale factors, must contain 1.0.
        use_hierarchical: hierarchical fusion if True, else ABSI (the original's switch).
        fusion: 'hierarchical', 'absi', 'concat' or 'average'; overrides `use_hierarchical`.
        scale_weights: loss weight per scale; default 1.0 for 1.0x and 0.5 otherwise.
        multi_scale: False starts in single-scale warm-up (see `enable_multi_scale`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        channels_list: Sequence[int] | None = None,
        scales: Sequence[float] = (0.5, 1.0, 1.5),
        use_hierarchical: bool = True,
        fusion: str | None = None,
        *,
        scale_weights: Sequence[float] | None = None,
        multi_scale: bool = True,
    ):
        super().__init__()
        scales = validate_scales(scales)
        fusion = fusion or ("hierarchical" if use_hierarchical else "absi")
        if fusion == "hierarchical" and not (len(scales) == 3 and scales[0] < 1.0 == scales[1] < scales[2]):
            raise UserError(
                f"hierarchical fusion needs exactly three scales ordered coarse, 1.0, fine "
                f"(e.g. 0.5,1.0,1.5), got {list(scales)}; use fusion 'absi', 'concat' or 'average' otherwise"
            )
        channels = tuple(channels_list) if channels_list is not None else backbone_channels(backbone)
        if len(channels) != 4:
            raise UserError(f"channels_list needs four entries (one per pyramid level), got {list(channels)}")
        if scale_weights is None:
            scale_weights = default_scale_weights(scales)
        if len(scale_weights) != len(scales):
            raise UserError(f"scale_weights has {len(scale_weights)} entries for {len(scales)} scales")

        self.backbone = backbone
        self.channels_list = channels
        self.scales = scales
        self.num_scales = len(scales)
        self.target_index = scales.index(1.0)
        self.fusion = fusion
        self.use_hierarchical = fusion == "hierarchical"
        self.multi_scale_enabled = multi_scale

        self.input_generator = MultiScaleInputGenerator(scales)
        self.feature_fusion = MultiScaleFeatureFusion(channels, self.num_scales, fusion)
        self.loss_module = ScaleAwareLoss(scale_weights)
        self.prediction_heads = nn.ModuleList(_prediction_head(channels[0]) for _ in scales)

    def enable_multi_scale(self) -> None:
        """End the single-scale warm-up: from now on every scale goes through the backbone."""
        self.multi_scale_enabled = True

    def disable_multi_scale(self) -> None:
        """Single-scale warm-up: only the 1.0x copy is processed; fusion is skipped."""
        self.multi_scale_enabled = False

    @property
    def active_scale_indices(self) -> list[int]:
        return list(range(self.num_scales)) if self.multi_scale_enabled else [self.target_index]

    def forward(self, x: torch.Tensor, return_multi_scale: bool = False, return_loss_inputs: bool = False):
        """Returns the fused pyramid; with `return_multi_scale` also the per-scale pyramids, with
        `return_loss_inputs` also the per-scale predictions (in that order, as the original)."""
        check_image_batch(x)
        if self.multi_scale_enabled:
            pyramids = [list(self.backbone(xs)) for xs in self.input_generator(x)]
            fused = self.feature_fusion(pyramids, self.target_index)
        else:
            pyramids = [list(self.backbone(x))]
            fused = self.feature_fusion.refine_only(pyramids[0])

        outputs: tuple = (fused,)
        if return_multi_scale:
            outputs += (pyramids,)
        if return_loss_inputs:
            heads = [self.prediction_heads[i] for i in self.active_scale_indices]
            outputs += ([head(p[0]) for head, p in zip(heads, pyramids)],)
        return outputs[0] if len(outputs) == 1 else outputs

    def compute_loss(
        self,
        scale_predictions: Sequence[torch.Tensor],
        target: torch.Tensor,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted per-scale loss. Keys: loss_scale_<i>, weighted_loss_scale_<i>, total_loss."""
        indices = self.active_scale_indices
        if len(scale_predictions) != len(indices):
            raise UserError(
                f"got {len(scale_predictions)} scale predictions, expected {len(indices)} "
                f"({'multi' if self.multi_scale_enabled else 'single'}-scale mode)"
            )
        if target.dim() != 4 or target.shape[1] != 1:
            raise UserError(f"target must be [B, 1, H, W], got {list(target.shape)}")
        return self.loss_module(scale_predictions, target, criterion, indices)
