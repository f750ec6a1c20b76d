"""FP16 arithmetic written into an ONNX graph (numbers and ONNX only; no PyTorch).

onnxconverter-common's float16 converter does the conversion (the converter ModelOpt's AutoCast is
built on). Inputs and outputs stay FP32; normalisations, softmax, reductions, resizes and the size
arithmetic stay FP32 (FP16 LayerNorm overflows in TensorRT; see docs/precision.md). Used for FP16
models and for the float parts of the TensorRT INT8 layout, so both share one conversion.
"""

from __future__ import annotations

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
