"""The exported models a benchmark times, made on demand in a work folder through the variants
pipeline (export.variants): FP32 ONNX per fusion, its FP16 copy, and INT8 in the CPU Q/DQ layout
calibrated on synthetic images. A second run reuses them (the INT8 calibration cache too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bench.file_rows import ModelFile, describe_folder


def ensure_models(
    backbone: str,
    fusions: Sequence[str],
    precisions: Sequence[str],
    work: str | Path,
    weights: str | None = None,
    say: Callable[[str], None] = print,
) -> list[ModelFile]:
    from export.variants import Int8Settings, export_fp32, make_variants

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    for fusion in fusions:
        fp32 = export_fp32(work / f"{backbone}_{fusion}.onnx", backbone, fusion, weights, say=say)
        wanted = [p for p in precisions if p != "fp32"]
        make_variants(fp32, wanted, weights=weights, int8=Int8Settings(target="cpu"), work=work, say=say)
    return describe_folder(work)
