"""`msdeploy params` and `msdeploy demo`: the PyTorch model side (needs the [export] extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from msdeploy.output import console, millions, print_table


def show_params(backbone: str, scales: Sequence[float], as_json: bool = False) -> None:
    from models.params import parameter_table

    rows = parameter_table(backbone, scales)
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    print_table(
        f"Parameter count ({backbone}, scales {', '.join(map(str, scales))})",
        ["component", "parameters", "measured", "guide claims"],
        ((r.component, f"{r.params:,}", millions(r.params), r.guide or "-") for r in rows),
        right=(1, 2),
    )


def output_shapes(backbone: str, fusion: str, sizes: Sequence[int]) -> list[tuple[int, list[tuple], tuple]]:
    """(size, fused feature shapes, mask shape) per square size, for batch 1."""
    import torch

    from models import build_model

    model = build_model(backbone, fusion)
    out = []
    with torch.inference_mode():
        for size in sizes:
            logits, feats = model.forward_features(torch.randn(1, 3, size, size))
            out.append((size, [tuple(f.shape) for f in feats], tuple(logits.shape)))
    return out


def _shape(shape: tuple) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def run_demo(backbone: str, fusions: Sequence[str], sizes: Sequence[int]) -> None:
    from models.scaling import DEFAULT_SCALES, scaled_size

    show_params(backbone, DEFAULT_SCALES)
    print_table(
        "Scaled inputs (0.5x / 1.0x / 1.5x)",
        ["input", *(f"{s}x" for s in DEFAULT_SCALES)],
        ((f"{n}x{n}", *("x".join(map(str, scaled_size(n, n, s))) for s in DEFAULT_SCALES)) for n in sizes),
    )
    for fusion in fusions:
        print_table(
            f"Output shapes, {backbone}, {fusion} fusion (batch 1)",
            ["input", *(f"level {i}" for i in range(1, 5)), "mask logits"],
            (
                (f"{n}x{n}", *(_shape(s) for s in feats), _shape(mask))
                for n, feats, mask in output_shapes(backbone, fusion, sizes)
            ),
            caption="shapes are [B, C, H, W]; levels 1-4 are the fused maps at strides 4, 8, 16, 32",
        )
