"""Export-time rewrites: the same arithmetic in a form ONNX Runtime and TensorRT run faster.

They act on a copy of the network (the original stays the parity reference, so every export checks
that the rewritten graph still computes what the user's model computes) and share no state with it.

- `channels_first_mlp`: timm's PVT v2 MLP runs fc1 and fc2 on [B, N, C] tokens and transposes the
  wide hidden tensor (8x the block's width in stage 1) to [B, C, H, W] and back around its depthwise
  conv. As 1x1 convolutions on the map, the whole MLP stays channels-first and only the narrow block
  input and output are transposed. On pvt_v2_b2 at 352 the Transposes were about a quarter of ONNX
  Runtime's CPU time before this (docs/results/int8-cpu-pvt_v2_b2.md).
- `explicit_scale_softmax`: ABSI's softmax runs over the scale axis of a [B, S, S, heads, H, W]
  tensor; ONNX Runtime computes Softmax on an inner axis by transposing it to the end and back, which
  cost more than the rest of the attention at the first level. Written out, it stays element-wise.
- `fold_batchnorm`: a bias-free Conv followed by BatchNorm exports with a computed zero bias
  (Expand/CastLike), which keeps onnxslim from folding the BatchNorm and keeps onnxruntime's INT8
  fusion from turning the Conv into a QLinearConv. Folding it in PyTorch gives a plain Conv.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ChannelsFirstMlp(nn.Module):
    """timm's MlpWithDepthwiseConv on [B, C, H, W] maps: fc1 and fc2 as 1x1 convolutions.
    Holds the original's submodules, so parameters and results are the same. Inference only: the
    original's dropout (identity in eval mode) is left out."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.fc1, self.relu, self.dwconv, self.act, self.fc2 = mlp.fc1, mlp.relu, mlp.dwconv, mlp.act, mlp.fc2

    def forward(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, feat_size[0], feat_size[1])
        x = F.conv2d(x, self.fc1.weight[:, :, None, None], self.fc1.bias)
        x = self.act(self.dwconv(self.relu(x)))
        x = F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)
        return x.flatten(2).transpose(1, 2)


def _is_timm_depthwise_mlp(module: nn.Module) -> bool:
    """The class by name and the parts ChannelsFirstMlp uses, so a timm release that changes the
    MLP is left alone instead of rewritten wrongly (parity would catch it; this avoids the failure)."""
    return (
        type(module).__name__ == "MlpWithDepthwiseConv"
        and isinstance(getattr(module, "fc1", None), nn.Linear)
        and isinstance(getattr(module, "fc2", None), nn.Linear)
        and isinstance(getattr(module, "dwconv", None), nn.Conv2d)
        and all(isinstance(getattr(module, name, None), nn.Module) for name in ("relu", "act"))
    )


def channels_first_mlp(net: nn.Module) -> int:
    """Replace every PVT v2 MLP in `net` (in place) by ChannelsFirstMlp; returns how many."""
    targets = [(name, m) for name, m in net.named_modules() if _is_timm_depthwise_mlp(m)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, child, ChannelsFirstMlp(module))
    return len(targets)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d right before it in an nn.Sequential (in
    place; the BatchNorm becomes Identity); returns how many."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    count = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
                count += 1
    return count


def explicit_scale_softmax(net: nn.Module) -> int:
    """ABSI's softmax over the scale axis written out (max, exp, sum, divide), in place."""
    from models.fusion.absi import ScaleAttention

    targets = [m for m in net.modules() if isinstance(m, ScaleAttention)]
    for module in targets:
        module.explicit_softmax = True
    return len(targets)


REWRITES: dict[str, Callable[[nn.Module], int]] = {
    "channels_first_mlp": channels_first_mlp,
    "fold_batchnorm": fold_batchnorm,
    "explicit_scale_softmax": explicit_scale_softmax,
}


def rewrite_for_export(net: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """An eval-mode copy of `net` with every rewrite applied, and how often each one applied."""
    rewritten = copy.deepcopy(net).eval()
    applied = {name: rewrite(rewritten) for name, rewrite in REWRITES.items()}
    return rewritten, {name: n for name, n in applied.items() if n}
