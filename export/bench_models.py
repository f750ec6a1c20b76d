"""The exported models a benchmark times, made on demand and kept in a work folder: FP32 ONNX per
fusion, its FP16 copy, and INT8 in the CPU Q/DQ layout calibrated on synthetic images. A second run
reuses them (the INT8 calibration cache too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.bench_targets import ModelFile, describe_folder

CALIBRATION_IMAGES = 16


def ensure_models(
    backbone: str,
    fusions: Sequence[str],
    precisions: Sequence[str],
    work: str | Path,
    weights: str | None = None,
    say: Callable[[str], None] = print,
) -> list[ModelFile]:
    from calibration.quantize import Int8Options, quantize_int8
    from export.onnx_export import ExportOptions, export_onnx
    from export.precision import convert_fp16

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    for fusion in fusions:
        fp32 = work / f"{backbone}_{fusion}.onnx"
        if not fp32.exists():
            say(f"exporting {fp32.name} (once; later runs reuse it)")
            export_onnx(ExportOptions(backbone=backbone, fusion=fusion, weights=weights, output=fp32), progress=say)
        fp16 = fp32.with_name(f"{fp32.stem}.fp16.onnx")
        if "fp16" in precisions and not fp16.exists():
            say(f"converting {fp32.name} to FP16")
            convert_fp16(fp32, fp16, weights=weights, progress=say)
        int8 = fp32.with_name(f"{fp32.stem}.int8-cpu.onnx")
        if "int8" in precisions and not int8.exists():
            say(f"quantizing {fp32.name} to INT8 (CPU layout, {CALIBRATION_IMAGES} synthetic calibration images)")
            quantize_int8(
                Int8Options(
                    model=fp32,
                    calib_data=_calibration_images(work),
                    calib_count=CALIBRATION_IMAGES,
                    target="cpu",
                    output=int8,
                )
            )
    return describe_folder(work)


def _calibration_images(work: Path) -> Path:
    from calibration.synthetic import write_dataset

    folder = work / "calibration"
    if not (folder / "images").exists():
        write_dataset(folder, CALIBRATION_IMAGES, size=(352, 352), seed=1)
    return folder / "images"
