"""FP16 arithmetic written into an ONNX graph (numbers and ONNX only; no PyTorch).

onnxconverter-common's float16 converter does the conversion (the converter ModelOpt's AutoCast is
built on). Inputs and outputs stay FP32; normalisations, softmax, reductions, resizes and the size
arithmetic stay FP32 (FP16 LayerNorm overflows in TensorRT; see docs/precision.md). Used for FP16
models and for the float parts of the TensorRT INT8 layout, so both share one conversion.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

log = logging.getLogger("msdeploy")

# Kept in FP32: numerically sensitive ops (accumulations, exponentials, normalisations) and ops whose
# FP16 kernels are missing or lossy (Resize), plus onnxconverter-common's own defaults.
# fmt: off
FP32_OPS = (
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization", "Softmax",
    "ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2", "GlobalAveragePool", "Pow", "Sqrt", "Exp", "Log", "Resize",
)
# fmt: on


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


FP16_TINY, FP16_MAX = 1e-7, 65504.0  # the converter raises smaller magnitudes to 1e-7 and clamps larger ones


def rounding_summary(model) -> str:
    """One line instead of the converter's warning per tensor: how many FP32 weights lie outside what
    FP16 holds (raised to 1e-7 or clamped to 65504) and the largest relative change that makes."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    raised = clamped = 0
    worst = 0.0
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        magnitude = np.abs(numpy_helper.to_array(init)).ravel()
        small = magnitude[(magnitude > 0) & (magnitude < FP16_TINY)]
        large = magnitude[magnitude > FP16_MAX]
        raised, clamped = raised + small.size, clamped + large.size
        changes = [(FP16_TINY - small) / small, (large - FP16_MAX) / large]
        worst = max([worst, *(float(c.max()) for c in changes if c.size)])
    if not raised and not clamped:
        return "FP16: every weight fits FP16's range"
    return (
        f"FP16: {raised} weights below {FP16_TINY:g} raised to it, {clamped} above {FP16_MAX:g} clamped; "
        f"largest relative change {worst:.0%} (FP16 rounding elsewhere is below 0.05%)"
    )


def fp16_graph(model, keep_fp32: tuple[str, ...] = (), say: Callable[[str], None] = log.info):
    """The graph with FP16 arithmetic: inputs and outputs stay FP32, FP32_OPS (and `keep_fp32`, e.g.
    the Q/DQ nodes of an INT8 graph) stay FP32 behind Cast nodes. Also the float parts of the
    TensorRT INT8 layout (calibration.int8), so both precisions share one conversion. The converter's
    warning per out-of-range tensor becomes one line to `say`."""
    from onnxconverter_common import float16

    _detach_consumed_outputs(model)
    say(rounding_summary(model))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the float32 number")
        return float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS) | set(keep_fp32)),
        )
