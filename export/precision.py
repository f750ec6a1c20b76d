"""`msdeploy quantize --precision fp16`: the FP16 graph (calibration.fp16), checked with the FP16
tolerance before it is written, against PyTorch where the network can be rebuilt (random init, or
--weights), else against the FP32 ONNX model; ONNX Runtime runs it on the CPU and TensorRT compiles it
as it is."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from calibration.fp16 import FP32_OPS, fp16_graph
from calibration.verified import fp32_source, write_verified_model
from export.onnx_export import verification_shapes
from models.runner import torch_runner_for
from runtime.backends import open_runner
from runtime.compare import ParityReport
from runtime.metadata import ModelMetadata, check_model_output, model_sha256, sidecar_path, variant_path

log = logging.getLogger("msdeploy")


@dataclasses.dataclass
class PrecisionResult:
    path: Path
    sidecar: Path
    metadata: ModelMetadata
    parity: ParityReport
    size_bytes: int


def convert_fp16(
    model_path: str | Path,
    output: str | Path | None = None,
    *,
    weights: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PrecisionResult:
    """FP32 ONNX (ours) -> FP16 ONNX with FP32 inputs/outputs, verified against PyTorch."""
    import onnx

    say = progress or log.info
    model_path = Path(model_path)
    meta = fp32_source(model_path)
    output = check_model_output(output or variant_path(model_path, "fp16"), force)
    # the reference, before the slow part (wrong weights fail fast): PyTorch where it can be rebuilt
    # (random init, or --weights given), else the FP32 ONNX model itself
    from_onnx = weights is None and (meta.weights or {}).get("source") != "random-init"
    reference = open_runner(model_path, "onnxruntime-cpu") if from_onnx else torch_runner_for(meta, weights)
    against = "the FP32 ONNX model (no --weights given)" if from_onnx else "PyTorch"

    say(f"converting {model_path.name} to FP16 (keeping {len(FP32_OPS)} op types in FP32)")
    model = fp16_graph(onnx.load(str(model_path)), say=say)
    onnx.checker.check_model(model, full_check=True)

    fp16_meta = dataclasses.replace(meta, precision="fp16", parity={})
    say(f"verifying against {against} (FP16 tolerance)")
    source_sha = model_sha256(model_path)
    with reference:
        parity, size = write_verified_model(
            model,
            fp16_meta,
            output,
            reference,
            verification_shapes(meta.static_size),
            sidecar_extra=lambda: {
                "derived_from": {"file": model_path.name, "sha256": source_sha},
                "fp32_ops": list(FP32_OPS),
                "parity_reference": against,
            },
        )
    say(f"wrote {output} ({size / 1e6:.1f} MB)")
    return PrecisionResult(output, sidecar_path(output), fp16_meta, parity, size)
