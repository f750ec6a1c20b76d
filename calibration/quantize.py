"""`msdeploy quantize --precision int8`: calibration data -> cached ranges -> Q/DQ model -> verified write.

The INT8 model is checked before it is written against the FP32 model (itself verified against
PyTorch when it was exported) on real calibration images: INT8 error on random noise says nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.cache import CalibrationSettings, cache_key, default_cache_path, load_cache, save_cache
from calibration.data import load_calibration_set
from calibration.int8 import (
    CALIBRATED_OPS,
    CALIBRATED_OUTPUTS,
    LAYOUTS,
    METHODS,
    calibrate,
    quantize_model,
    quantized_node_count,
    tensorrt_qdq_problems,
)
from calibration.verified import fp32_source, write_verified_model
from runtime.backends import open_runner
from runtime.compare import ParityReport
from runtime.errors import UserError, VerificationError
from runtime.metadata import ModelMetadata, check_model_output, model_sha256, sidecar_path, variant_path

log = logging.getLogger("msdeploy")

VERIFY_IMAGES = 4  # calibration images the written model is checked on
# One set of calibration defaults for every caller: the CLI, the demo, the bundle, the self-test, the
# benchmark and the scripts. Percentile was the best of the three methods on both demo models.
CALIBRATION_METHOD = "percentile"
CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 0


@dataclass
class Int8Options:
    model: Path
    calib_data: Path | None
    method: str = CALIBRATION_METHOD
    target: str = "tensorrt"
    calib_count: int | None = CALIBRATION_IMAGES
    seed: int = CALIBRATION_SEED
    size: tuple[int, int] | None = None  # default: the model's default size
    exclude: tuple[str, ...] = ()
    quantize_attention: bool | None = None  # None: the target's default (float attention in both)
    float_precision: str | None = None  # the unquantized layers: None, the target's default (LAYOUTS)
    output: Path | None = None
    calib_cache: Path | None = None
    recalibrate: bool = False
    # replace the default cache when it was made for an earlier export of this file (the variants
    # pipeline re-exports when the weights change); a cache for other settings is still refused
    replace_cache_of_old_export: bool = False
    force: bool = False


@dataclass
class Int8Result:
    path: Path
    sidecar: Path
    metadata: ModelMetadata
    parity: ParityReport
    size_bytes: int
    cache: Path
    cache_reused: bool
    calibration_images: int
    skipped: list[tuple[Path, str]]
    quantized_nodes: dict[str, int]  # compute nodes by op type that read a DequantizeLinear


def default_int8_output(model_path: Path, target: str) -> Path:
    return variant_path(model_path, "int8" if target == "tensorrt" else f"int8-{target}")


def quantize_int8(
    options: Int8Options,
    progress: Callable[[str], None] | None = None,
    calib_progress: Callable[[int, int], None] | None = None,
) -> Int8Result:
    import onnx

    say = progress or log.info
    if options.method not in METHODS:
        raise UserError(f"unknown calibration method {options.method!r}; choose one of {', '.join(METHODS)}")
    if options.target not in LAYOUTS:
        raise UserError(f"unknown target {options.target!r}; choose one of {', '.join(LAYOUTS)}")
    model_path = Path(options.model)
    meta = fp32_source(model_path)
    output = check_model_output(options.output or default_int8_output(model_path, options.target), options.force)
    if options.calib_data is None:
        raise UserError("INT8 needs calibration images: pass --calib-data DIR (msdeploy data synth DIR makes some)")
    size = tuple(meta.static_size or options.size or meta.default_size)

    settings = CalibrationSettings(
        method=options.method,
        count=options.calib_count,
        seed=options.seed,
        size=size,
        calibrated_ops=CALIBRATED_OPS,
        calibrated_outputs=CALIBRATED_OUTPUTS,
    )
    key, files = cache_key(model_sha256(model_path), settings, options.calib_data)
    cache = Path(options.calib_cache or default_cache_path(model_path, options.method))
    replace_old = options.replace_cache_of_old_export and options.calib_cache is None
    ranges = None if options.recalibrate else load_cache(cache, key, replace_old, say)
    reused = ranges is not None
    calib_set = None
    if reused:
        say(f"reusing calibration cache {cache} ({len(ranges)} tensors; no image read, no calibration run)")
    else:
        calib_set = load_calibration_set(
            options.calib_data, meta, count=options.calib_count, seed=options.seed, size=size
        )
        say(f"calibrating ({options.method}) on {len(calib_set)} images at {size[0]}x{size[1]}")
        ranges = calibrate(model_path, calib_set, settings, progress=calib_progress)
        save_cache(cache, key, ranges)
        say(f"saved calibration cache {cache}")

    say(f"writing Q/DQ nodes for target {options.target}")
    model = quantize_model(
        model_path,
        ranges,
        options.target,
        options.exclude,
        options.method,
        options.quantize_attention,
        options.float_precision,
    )
    if options.target == "tensorrt":
        problems = tensorrt_qdq_problems(model)
        if problems:
            raise VerificationError("the Q/DQ graph is not TensorRT-ready: " + "; ".join(problems[:5]))
    onnx.checker.check_model(model, full_check=True)
    quantized_nodes = quantized_node_count(model)
    if not quantized_nodes:
        raise UserError("no node was quantized (nothing was written); check --exclude")

    # the subset's first images, whether or not calibration ran: the gate must not depend on the cache
    verify_feeds = load_calibration_set(
        options.calib_data, meta, count=options.calib_count, seed=options.seed, size=size, first=VERIFY_IMAGES
    ).feeds
    reference = open_runner(model_path, "onnxruntime-cpu")
    int8_meta = dataclasses.replace(meta, precision="int8", parity={})
    say(f"verifying against the FP32 model on {len(verify_feeds)} calibration images (INT8 tolerance)")
    with reference:
        parity, size_bytes = write_verified_model(
            model,
            int8_meta,
            output,
            reference,
            (),
            inputs=[np.asarray(f[meta.input_name]) for f in verify_feeds],
            sidecar_extra=lambda: {
                "derived_from": {"file": model_path.name, "sha256": key.model_sha256},
                "int8": {
                    "target": options.target,
                    "method": options.method,
                    "exclude": list(options.exclude),
                    "quantize_attention": options.quantize_attention,
                    "float_precision": options.float_precision or LAYOUTS[options.target].float_precision,
                    "calibration": key.as_dict(),
                    "cache": cache.name,
                    "layout": dataclasses.asdict(LAYOUTS[options.target]),
                },
                "parity_reference": "the FP32 ONNX model in ONNX Runtime, on calibration images",
            },
        )
    say(f"wrote {output} ({size_bytes / 1e6:.1f} MB)")
    return Int8Result(
        output,
        sidecar_path(output),
        int8_meta,
        parity,
        size_bytes,
        cache,
        reused,
        len(files),
        list(calib_set.skipped) if calib_set else [],
        quantized_nodes,
    )
