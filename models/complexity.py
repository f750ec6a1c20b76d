"""Compute and memory per part of the network, measured: the guide's Computational Complexity and
Memory Usage tables with numbers instead of O() and estimates.

FLOPs come from torch's FlopCounterMode: convolutions, matrix products and attention, one
multiply-add counted as 2 FLOPs; element-wise work (activations, norms, resizes) is not counted.
Peak memory is measured per part in a fresh process (runtime.memory), on the CPU or a CUDA device.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from models.network import MultiScaleCODNet


@dataclass(frozen=True)
class PartCost:
    key: str  # "backbone@0.5", "fusion", "decoder", "total"
    part: str  # words for a table
    input: str  # "176x176"
    gflops: float

    def as_dict(self) -> dict:
        return asdict(self)


def _flops(fn) -> tuple[float, object]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops() / 1e9, out


def part_inputs(net: MultiScaleCODNet, size: Sequence[int], batch: int = 1):
    """The image, its scaled copies and their pyramids: what each part of the network reads."""
    processor = net.multi_scale_processor
    image = torch.zeros(batch, 3, *size)
    scaled = processor.input_generator(image)
    pyramids = [list(processor.backbone(xs)) for xs in scaled]
    return image, scaled, pyramids


@torch.inference_mode()
def flop_table(net: MultiScaleCODNet, size: Sequence[int] = (352, 352), batch: int = 1) -> list[PartCost]:
    """GFLOPs per backbone pass (one per scale), for the fusion with its refinement, for the decoder
    with the mask head, and for the whole network, at `size`."""
    net = net.eval()
    processor = net.multi_scale_processor
    image, scaled, pyramids = part_inputs(net, size, batch)
    rows = []
    for scale, xs in zip(processor.scales, scaled):
        gflops, _ = _flops(lambda xs=xs: processor.backbone(xs))
        rows.append(PartCost(f"backbone@{scale:g}", f"Backbone at {scale:g}x", _hw(xs), gflops))
    gflops, fused = _flops(lambda: processor.feature_fusion(pyramids, processor.target_index))
    rows.append(PartCost("fusion", "Fusion and refinement, 4 levels", "-", gflops))
    gflops, _ = _flops(lambda: net.head(net.decoder(fused), image.shape[-2:]))
    rows.append(PartCost("decoder", "Decoder and mask head", "-", gflops))
    gflops, _ = _flops(lambda: net(image))
    rows.append(PartCost("total", "Total", _hw(image), gflops))
    return rows


def _hw(x: torch.Tensor) -> str:
    return f"{x.shape[-2]}x{x.shape[-1]}"


def _probe(argv: Sequence[str]) -> None:
    """`python -m models.complexity BACKBONE FUSION BATCH H W PART DEVICE`: peak memory of one part
    (backbone@SCALE, fusion, network) in this fresh process, printed as one JSON line."""
    from models import build_model
    from runtime.memory import peak_during

    backbone, fusion, batch, height, width, part, device = argv[0], argv[1], *map(int, argv[2:5]), argv[5], argv[6]
    torch.manual_seed(0)
    net = build_model(backbone, fusion).eval().to(device)
    processor = net.multi_scale_processor
    with torch.inference_mode():
        image = torch.zeros(batch, 3, height, width, device=device)
        scaled = processor.input_generator(image)
        if part.startswith("backbone@"):
            xs = scaled[processor.scales.index(float(part.split("@")[1]))]
            fn = lambda: processor.backbone(xs)  # noqa: E731
        elif part == "fusion":
            pyramids = [list(processor.backbone(xs)) for xs in scaled]
            fn = lambda: processor.feature_fusion(pyramids, processor.target_index)  # noqa: E731
        else:
            fn = lambda: net(image)  # noqa: E731
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            result = {
                "resident_mb": before / 2**20,
                "peak_added_mb": (torch.cuda.max_memory_allocated() - before) / 2**20,
            }
        else:
            result = peak_during(fn)
    print(json.dumps({**result, "device": device, "part": part}))


if __name__ == "__main__":
    _probe(sys.argv[1:])
