"""Precision in the graph: FP16 models written as ONNX, checked on the CPU, compiled as-is by TensorRT.

FP16 conversion uses onnxconverter-common's float16 converter (the converter ModelOpt's AutoCast is
built on; ModelOpt's ONNX extra pins onnx 1.21 and GPU onnxruntime, which this project cannot take).
Inputs and outputs stay FP32; normalisations, softmax, reductions, resizes and the size arithmetic
stay FP32 (FP16 LayerNorm overflows in TensorRT: NVIDIA/TensorRT issues 2564, 3657). Every converted
model is checked against PyTorch with the FP16 tolerance before it is written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from export.onnx_export import verification_shapes, write_verified_model
from export.parity import ParityReport, rebuild_reference, reference_fn
from runtime.errors import UserError
from runtime.metadata import ModelMetadata, check_model_output, model_sha256, sidecar_path

log = logging.getLogger("msdeploy")

# Kept in FP32: numerically sensitive ops (accumulations, exponentials, normalisations) and ops whose
# FP16 kernels are missing or lossy (Resize), plus onnxconverter-common's own defaults.
FP32_OPS = (
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceL2",
    "GlobalAveragePool",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Resize",
)


@dataclasses.dataclass
class PrecisionResult:
    path: Path
    sidecar: Path
    metadata: ModelMetadata
    parity: ParityReport
    size_bytes: int


def default_output(model_path: Path, precision: str) -> Path:
    """model.onnx -> model.<precision>.onnx (precision may carry a variant: 'int8-cpu')."""
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
    return model_path.with_name(f"{stem}.{precision}.onnx")


def fp32_source(model_path: Path) -> ModelMetadata:
    """The metadata of an FP32 model of ours: the only valid input of a precision conversion."""
    import runtime

    meta = runtime.load(model_path, providers=["CPUExecutionProvider"]).require_metadata()
    if meta.precision != "fp32":
        raise UserError(f"{model_path} is already {meta.precision}; convert the FP32 model instead")
    return meta


def _detach_consumed_outputs(model) -> None:
    """Give every graph output that other nodes also read its own Identity node.

    With `--features` the fused maps are graph outputs and decoder inputs at once; the converter keeps
    such a tensor FP32 (keep_io_types) while its consumers become FP16, and the graph becomes invalid
    (Concat of float and float16). After this the internal tensor converts and only the Identity's
    output stays FP32."""
    from onnx import helper

    outputs = {o.name for o in model.graph.output}
    consumed = {name for node in model.graph.node for name in node.input} & outputs
    if not consumed:
        return
    nodes = []
    for node in model.graph.node:
        node.input[:] = [f"{n}__internal" if n in consumed else n for n in node.input]
        produced = [n for n in node.output if n in consumed]
        node.output[:] = [f"{n}__internal" if n in consumed else n for n in node.output]
        nodes.append(node)
        # right after the producer, so the graph stays topologically sorted
        nodes += [helper.make_node("Identity", [f"{n}__internal"], [n], name=f"{n}__out") for n in produced]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def fp16_graph(model, keep_fp32: tuple[str, ...] = ()):
    """The graph with FP16 arithmetic: inputs and outputs stay FP32, FP32_OPS (and `keep_fp32`, e.g.
    the Q/DQ nodes of an INT8 graph) stay FP32 behind Cast nodes. Also the float parts of the
    TensorRT INT8 layout (calibration.int8), so both precisions share one conversion."""
    from onnxconverter_common import float16

    _detach_consumed_outputs(model)
    return float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS) | set(keep_fp32)),
    )


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
    output = check_model_output(output or default_output(model_path, "fp16"), force)
    net = rebuild_reference(meta, weights)  # before the slow part: wrong weights fail fast

    say(f"converting {model_path.name} to FP16 (keeping {len(FP32_OPS)} op types in FP32)")
    model = fp16_graph(onnx.load(str(model_path)))
    onnx.checker.check_model(model, full_check=True)

    fp16_meta = dataclasses.replace(meta, precision="fp16", parity={})
    say("verifying against PyTorch (FP16 tolerance)")
    source_sha = model_sha256(model_path)
    parity, size = write_verified_model(
        model,
        fp16_meta,
        output,
        reference_fn(net, features=len(meta.outputs) > 1),
        verification_shapes(meta.static_size),
        sidecar_extra=lambda: {
            "derived_from": {"file": model_path.name, "sha256": source_sha},
            "fp32_ops": list(FP32_OPS),
        },
    )
    say(f"wrote {output} ({size / 1e6:.1f} MB)")
    return PrecisionResult(output, sidecar_path(output), fp16_meta, parity, size)
