"""The one pipeline from a network to its deployable files: FP32 ONNX -> FP16 -> INT8.

Every caller (the demo, the Jetson bundle, the GPU self-test, the benchmark's work folder and the
scripts in benchmarks/) makes its models here, so they share the calibration defaults
(calibration.quantize) and one reuse check: a file is made again only when its sidecar does not
match what is asked (the network and weights for FP32; the exact FP32 source, layout and
calibration for FP16 and INT8).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from calibration.cache import chosen_images
from calibration.quantize import (
    CALIBRATION_IMAGES,
    CALIBRATION_METHOD,
    CALIBRATION_SEED,
    Int8Options,
    default_int8_output,
)
from runtime.errors import UserError
from runtime.files import sha256_file
from runtime.metadata import model_sha256, read_model_metadata, read_sidecar, variant_path

log = logging.getLogger("msdeploy")


@dataclass(frozen=True)
class Variant:
    path: Path
    detail: str = ""  # INT8: whether the calibration cache was reused


@dataclass(frozen=True)
class Int8Settings:
    """How INT8 variants are calibrated; the defaults are the project's one set."""

    target: str = "tensorrt"  # Q/DQ layout (calibration.int8.LAYOUTS): "tensorrt", "cpu" or "openvino"
    method: str = CALIBRATION_METHOD
    images: int = CALIBRATION_IMAGES
    calib_data: Path | None = None  # a folder of images; None: the synthetic set in the work folder
    float_precision: str | None = None  # the unquantized layers; None: the layout's default


def export_fp32(
    path: Path,
    backbone: str,
    fusion: str,
    weights: str | Path | None = None,
    *,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> Path:
    """The FP32 export at `path`, reused when its sidecar names the same network and weights."""
    from export.onnx_export import ExportOptions, export_onnx

    wanted = (backbone, fusion, sha256_file(weights) if weights else None)
    try:
        meta, _ = read_model_metadata(path)
        found = (meta.backbone, meta.fusion, meta.weights.get("file_sha256"))
    except UserError:  # missing, or not ours
        found = None
    if found == wanted and not force:
        say(f"reusing {path} (pass --force to export again)")
        return path
    say(f"exporting {path.name}")
    # a stale export (other network or weights) is replaced: the caller's folder is its own
    export_onnx(ExportOptions(backbone=backbone, fusion=fusion, weights=weights, output=path, force=True), progress=say)
    return path


def made_from(
    candidate: Path, source: Path, precision: str, int8: Int8Settings | None = None, calib: Path | None = None
) -> bool:
    """Whether `candidate` is the `precision` variant of exactly `source` (and, for INT8, with the same
    layout, method, image count and, where `calib` is given, the same calibration images, nothing
    excluded). Its parity was checked when it was written."""
    side = read_sidecar(candidate) if candidate.is_file() else None
    if not side or side.get("precision") != precision:
        return False
    if side.get("derived_from", {}).get("sha256") != model_sha256(source):
        return False
    if precision == "int8" and int8 is not None:
        done = side.get("int8") or {}
        from calibration.int8 import LAYOUTS

        default = LAYOUTS[int8.target].float_precision if int8.target in LAYOUTS else None
        wanted = (int8.target, int8.method, int8.float_precision or default, int8.images, [], None)
        calibration = done.get("calibration") or {}
        found = (done.get("target"), done.get("method"), done.get("float_precision"))
        found += ((calibration.get("settings") or {}).get("count"), done.get("exclude"), done.get("quantize_attention"))
        if found != wanted:
            return False
        return (
            calib is None
            or calibration.get("data_fingerprint") == chosen_images(calib, int8.images, CALIBRATION_SEED)[0]
        )
    return True


def variant_output(fp32: Path, precision: str, int8: Int8Settings = Int8Settings()) -> Path:
    """Where a variant of `fp32` is written: model.fp16.onnx, model.int8.onnx, model.int8-cpu.onnx, and
    model.int8-fp32.onnx for INT8 whose unquantized layers were asked to stay FP32."""
    if precision != "int8":
        return variant_path(fp32, precision)
    path = default_int8_output(fp32, int8.target)
    return path.with_name(path.name.replace(".onnx", f"-{int8.float_precision}.onnx")) if int8.float_precision else path


def make_variant(
    fp32: Path,
    precision: str,
    *,
    weights: str | Path | None = None,
    int8: Int8Settings = Int8Settings(),
    work: Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> Variant:
    """The FP16 or INT8 variant of `fp32` beside it, reused when it was made from this very file.
    INT8 without `int8.calib_data` calibrates on the synthetic set in `work` (default: beside fp32)."""
    output = variant_output(fp32, precision, int8)
    calib = None
    if precision == "int8":
        from calibration.synthetic import synthetic_calibration_images

        calib = int8.calib_data or synthetic_calibration_images((work or fp32.parent) / "calibration", int8.images)
    if not force and made_from(output, fp32, precision, int8, calib):
        say(f"reusing {output.name} (made from this {fp32.name})")
        return Variant(output)
    if precision == "fp16":
        from export.precision import convert_fp16

        return Variant(convert_fp16(fp32, output, weights=weights, force=True, progress=say).path)
    if precision != "int8":
        raise ValueError(f"no variant {precision!r}; choose fp16 or int8")
    from calibration.quantize import quantize_int8

    options = Int8Options(
        model=fp32,
        calib_data=calib,
        method=int8.method,
        target=int8.target,
        calib_count=int8.images,
        float_precision=int8.float_precision,
        output=output,
        force=True,
        replace_cache_of_old_export=True,  # export_fp32 re-exports beside it when the weights change
    )
    result = quantize_int8(options, progress=say)
    cache = "reused (no calibration run)" if result.cache_reused else f"written ({result.calibration_images} images)"
    return Variant(result.path, detail=f"calibration cache {result.cache.name} {cache}")


def make_variants(
    fp32: Path,
    precisions: Sequence[str],
    *,
    weights: str | Path | None = None,
    int8: Int8Settings = Int8Settings(),
    work: Path | None = None,
    say: Callable[[str], None] = log.info,
) -> dict[str, Path]:
    """{precision: file} for `precisions`, FP32 being `fp32` itself."""
    return {
        p: fp32 if p == "fp32" else make_variant(fp32, p, weights=weights, int8=int8, work=work, say=say).path
        for p in precisions
    }
