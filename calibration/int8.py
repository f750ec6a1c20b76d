"""Calibrated INT8: Q/DQ nodes written into the ONNX graph with onnxruntime.quantization.

One calibration (tensor ranges from real images, cached) serves three layouts:

- `tensorrt` (default): what TensorRT's explicit quantization wants. Symmetric INT8 activations and
  weights (every zero-point 0), per-channel weight scales, Q/DQ only on the inputs of Conv, MatMul
  and Gemm (where TensorRT fuses them), biases left in FP32, no quantized graph outputs. The layers
  left unquantized run in FP16 (the FP16 conversion's rules: normalisations, softmax and the like
  stay FP32): a strongly typed builder runs every float layer in the type the graph gives it, so
  float islands left FP32 ran in FP32, kept attention out of the builder's fused FP16 kernels and
  took as much activation memory as the FP32 engine (seen with the real TensorRT-RTX builder:
  docs/tensorrt.md). This is what TensorRT 10's weakly typed INT8 + FP16 build did.
- `cpu`: what ONNX Runtime's CPU kernels run fastest (u8 x s8 integer GEMMs with VNNI): asymmetric
  UINT8 activations, per-channel INT8 weights, INT32 biases, Conv outputs quantized (so DQ-Conv-Q
  fuses into QLinearConv and chains of convolutions stay in INT8); attention MatMuls stay float, as
  in the TensorRT layout, unless asked for.
- `openvino`: what OpenVINO's CPU plugin compiles into the fewest conversions: the TensorRT layout's
  quantization (symmetric INT8, Q/DQ on Conv/MatMul/Gemm inputs, float biases), float layers left
  FP32 (OpenVINO runs them in its inference precision, BF16 where native), and two exact graph
  passes (calibration/openvino_layout.py) so the token/map transposes of the PVT blocks stay free.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from calibration.cache import CalibrationSettings
from calibration.openvino_layout import (
    DATA_MOVEMENT,  # what the openvino layout leaves between a DequantizeLinear and its op
    amx_int8_conv_hazards,
    flatten_after_transpose,
    hoist_qdq_pairs,
)
from runtime.errors import UserError

log = logging.getLogger("msdeploy")

METHODS = ("entropy", "max", "percentile")
FLOAT_PRECISIONS = ("fp16", "fp32")  # what the unquantized layers of an INT8 graph run in
TENSORRT_OPS = ("Conv", "MatMul", "Gemm")
# CPU: the same op types; the layout differs in activations, biases and which outputs are quantized
# (LAYOUTS). The element-wise ops between them stay FP32: the Softmax's QLinear kernel ran 6x slower
# than the FP32 one here, and ONNX Runtime has no INT8 kernel for Gelu or LayerNormalization.
CPU_OPS = (*TENSORRT_OPS,)
CALIBRATED_OPS = tuple(dict.fromkeys((*TENSORRT_OPS, *CPU_OPS)))  # one calibration covers both targets


@dataclass(frozen=True)
class TargetLayout:
    op_types: tuple[str, ...]
    activation: str  # "int8" (symmetric) or "uint8" (asymmetric)
    unquantized_outputs: tuple[str, ...]  # op types whose outputs stay FP32
    quantize_bias: bool
    quantize_attention: bool  # MatMuls of two activations (Q.K^T, attention.V)
    float_precision: str = "fp32"  # what the unquantized layers run in: "fp16" or "fp32"
    openvino_passes: bool = False  # calibration/openvino_layout.py after the Q/DQ are written

    @property
    def dq_only_into_quantized_ops(self) -> bool:
        return set(self.op_types) <= set(self.unquantized_outputs)


LAYOUTS = {
    # Attention MatMuls (both inputs activations) stay in float by default in both layouts:
    # quantizing them cost the trained demo models most of their mask agreement with FP32
    # (benchmarks/bench_accuracy.py: below the 0.98 mask IoU bound in the CPU layout), for a few
    # percent of CPU speed; TensorRT runs attention in its own fused FP16 kernels anyway.
    "tensorrt": TargetLayout(
        TENSORRT_OPS,
        "int8",
        unquantized_outputs=TENSORRT_OPS,
        quantize_bias=False,
        quantize_attention=False,
        float_precision="fp16",
    ),
    # Conv outputs quantized: ONNX Runtime fuses DQ-Conv-Q into QLinearConv only then. MatMul outputs
    # FP32: DQ-MatMul becomes MatMulIntegerToFloat, whose float result the reshapes, the float
    # attention and the residual Adds after it read directly.
    "cpu": TargetLayout(
        CPU_OPS, "uint8", unquantized_outputs=("MatMul", "Gemm"), quantize_bias=True, quantize_attention=False
    ),
    # OpenVINO fuses symmetric int8 Q/DQ into its VNNI/AMX kernels; the passes keep its fusions
    # across the PVT blocks' transposes (docs/openvino.md has the measurements)
    "openvino": TargetLayout(
        TENSORRT_OPS,
        "int8",
        unquantized_outputs=TENSORRT_OPS,
        quantize_bias=False,
        quantize_attention=False,
        openvino_passes=True,
    ),
}


# Outputs that some layout quantizes (the cpu layout's Conv outputs): they need a range too. The other
# outputs of calibrated ops (MatMul before its bias) never get Q/DQ, so their ranges are not taken.
CALIBRATED_OUTPUTS = tuple(
    dict.fromkeys(op for layout in LAYOUTS.values() for op in layout.op_types if op not in layout.unquantized_outputs)
)


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return {
        "entropy": CalibrationMethod.Entropy,
        "max": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def calibrate(
    model_path: str | Path,
    feeds: Iterable[dict[str, np.ndarray]],
    settings: CalibrationSettings,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Run the FP32 model over `feeds` (read one at a time) and return (low, high) per calibrated
    tensor: statistics computed inside the graph (calibration.statistics), so the time per image stays
    near plain inference and the memory does not grow with the number of images."""
    import onnx
    import onnxruntime as ort

    from calibration.statistics import SAMPLE_POSITIONS, RangeCollector, calibrated_tensors, statistics_model

    model = onnx.load(str(model_path))
    tensors = calibrated_tensors(model, settings.calibrated_ops, settings.calibrated_outputs)
    exact = settings.method == "max"  # the histogram methods read samples; max needs the true extremes
    samples = 0 if exact else settings.samples_per_tensor
    options = ort.SessionOptions()
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # frees each activation once its statistics are taken
    options.log_severity_level = 3
    session = ort.InferenceSession(
        statistics_model(model, tensors, samples, extremes=exact).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    del model
    collector = RangeCollector(tensors, settings.num_bins)
    rng = np.random.default_rng(settings.seed)
    total = len(feeds) if isinstance(feeds, Sized) else 0
    for done, feed in enumerate(feeds, 1):
        if samples:
            collector.add(samples=session.run(None, {**feed, SAMPLE_POSITIONS: np.sort(rng.random(samples))})[0])
        else:
            collector.add(*session.run(None, feed))
        if progress:
            progress(done, max(total, done))
    return collector.ranges(settings.method, settings.percentile)


def _private_weights(model, stays_float: Callable[[object], bool]) -> None:
    """Give the nodes that stay float one FP32 copy of each initializer they share with a quantized
    node. onnxruntime quantizes a shared initializer and points every reader at its dequantized
    value, so the float node would read rounded weights, and its DequantizeLinear, not being part of
    a fused op, would run on every inference. Sharing comes from the backbone running once per scale
    (an excluded layer reads the same weights as the quantized copies) and from onnxslim merging
    equal initializers (a LayerNorm bias of zeros and a Linear bias of zeros in a fresh model)."""
    inits = {i.name: i for i in model.graph.initializer}
    quantized_reads = {
        name for node in model.graph.node if not stays_float(node) for name in node.input if name in inits
    }
    copies: dict[str, str] = {}
    for node in model.graph.node:
        if not stays_float(node):
            continue
        for i, name in enumerate(node.input):
            if name not in quantized_reads:
                continue
            if name not in copies:
                copy = model.graph.initializer.add()
                copy.CopyFrom(inits[name])
                copy.name = copies[name] = f"{name}__fp32"
            node.input[i] = copies[name]


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs routine notes (biases that are not initializers) as root warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def select_excluded(node_names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """Node names matching any of the glob patterns (e.g. 'head*', '/decoder/*'); a pattern that
    matches nothing is an error, so a typo does not silently quantize a layer the user excluded."""
    names = list(node_names)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            raise UserError(f"--exclude {pattern!r} matches no node of the model (node names look like {names[0]!r})")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def attention_matmuls(graph) -> list[str]:
    """MatMul nodes whose inputs are both activations (no initializer or Constant): in this network,
    the attention score and context products of every transformer block."""
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in graph.node if n.op_type == "MatMul" and not constants.intersection(n.input)]


def quantize_model(
    model_path: str | Path,
    ranges: dict[str, tuple[float, float]],
    target: str = "tensorrt",
    exclude: Sequence[str] = (),
    method: str = "entropy",
    quantize_attention: bool | None = None,
    float_precision: str | None = None,
):
    """The Q/DQ model (onnx.ModelProto) for `target` from calibrated `ranges`. `quantize_attention`
    and `float_precision` None: the target's default (see LAYOUTS)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    if target not in LAYOUTS:
        raise UserError(f"unknown target {target!r}; choose one of {', '.join(LAYOUTS)}")
    if float_precision not in (None, *FLOAT_PRECISIONS):
        raise UserError(f"unknown float precision {float_precision!r}; choose one of {', '.join(FLOAT_PRECISIONS)}")
    layout = LAYOUTS[target]
    if target != "tensorrt" and float_precision == "fp16":
        # Casts between the Q/DQ pairs would keep ONNX Runtime and OpenVINO from fusing them into
        # their integer kernels; OpenVINO picks the float layers' precision itself (BF16 where native)
        raise UserError(f"the {target} INT8 layout keeps its unquantized layers FP32; drop --high-precision fp16")
    model = load_model_with_shape_infer(Path(model_path))
    excluded = select_excluded((n.name for n in model.graph.node), exclude)
    if not (layout.quantize_attention if quantize_attention is None else quantize_attention):
        excluded += [n for n in attention_matmuls(model.graph) if n not in excluded]
    if layout.openvino_passes:
        excluded += [n for n in amx_int8_conv_hazards(model.graph) if n not in excluded]
    excluded_set = set(excluded)
    _private_weights(model, lambda n: n.name in excluded_set or n.op_type not in layout.op_types)
    ranges_np = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
    activation = QuantType.QInt8 if layout.activation == "int8" else QuantType.QUInt8
    extra = {
        "ActivationSymmetric": layout.activation == "int8",
        "WeightSymmetric": True,
        "QuantizeBias": layout.quantize_bias,
        "OpTypesToExcludeOutputQuantization": list(layout.unquantized_outputs),
        # MatMul weights [K, N]: one scale per output column, as Conv has one per output channel
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        # one Q/DQ pair per quantized consumer: Shape, Resize and the like keep reading the FP32 tensor
        "DedicatedQDQPair": layout.dq_only_into_quantized_ops,
    }
    quantizer = QDQQuantizer(
        model,
        True,  # per-channel weights
        False,  # reduce_range: not needed with VNNI, and TensorRT wants the full range
        QuantType.QInt8,
        activation,
        TensorsData(_ort_method(method), ranges_np),
        None,
        excluded,
        list(layout.op_types),
        extra,
    )
    with _quiet_root_logger():
        quantizer.quantize_model()
    quantizer.model.topological_sort()
    out = quantizer.model.model
    if layout.dq_only_into_quantized_ops:
        _only_quantized_ops_read_dq(out, layout.op_types)
    if layout.openvino_passes:
        flatten_after_transpose(out)
        hoist_qdq_pairs(out)
        _drop_dead_nodes(out)  # the shape computations of the replaced Reshapes
    if (float_precision or layout.float_precision) == "fp16":
        from calibration.fp16 import fp16_graph

        out = fp16_graph(out, keep_fp32=("QuantizeLinear", "DequantizeLinear"))
    onnx.checker.check_model(out)
    return out


def _only_quantized_ops_read_dq(model, op_types: Sequence[str]) -> None:
    """onnxruntime rewires every reader of a quantized tensor to the DequantizeLinear output (Shape,
    Resize, Transpose, residual Adds...). Point the readers that are not quantized ops back at the
    FP32 tensor, so Q/DQ sits only where TensorRT fuses it and nothing else sees rounded values."""
    q_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_source = {
        n.output[0]: q_source[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_source
    }
    for node in model.graph.node:
        if node.op_type in op_types or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        node.input[:] = [dq_source.get(name, name) for name in node.input]
    _drop_dead_nodes(model)


def _drop_dead_nodes(model) -> None:
    """Remove nodes none of whose outputs is read (Q/DQ pairs left without readers)."""
    while True:
        read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


def tensorrt_qdq_problems(model) -> list[str]:
    """What TensorRT's explicit quantization would reject or mis-fuse in a Q/DQ graph; [] when fine."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in model.graph.node for out in node.output}
    outputs = {o.name for o in model.graph.output}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if np.any(zp != 0):
                problems.append(f"{node.name}: non-zero zero-point")
            if zp.dtype != np.int8:
                problems.append(f"{node.name}: zero-point type {zp.dtype}, TensorRT wants int8")
        if node.op_type == "DequantizeLinear":
            if node.output[0] in outputs:
                problems.append(f"{node.name}: a quantized graph output")
            for user in consumers.get(node.output[0], []):
                # in an FP16 graph the FP32 DQ output reaches the op through a Cast, which TensorRT folds
                readers = consumers.get(user.output[0], []) if user.op_type == "Cast" else [user]
                for reader in readers:
                    if reader.op_type not in TENSORRT_OPS:
                        problems.append(f"{node.name}: feeds {reader.op_type} {reader.name}, not Conv/MatMul/Gemm")
            if node.input[0] in inits and node.input[0] not in {p for p in producers}:
                scale = numpy_helper.to_array(inits[node.input[1]])
                weight = numpy_helper.to_array(inits[node.input[0]])
                if weight.ndim >= 2 and scale.size == 1 and weight.shape[0] > 1:
                    problems.append(f"{node.name}: per-tensor weight scale (per-channel wanted)")
    return problems


def dequantized_tensors(model) -> set[str]:
    """Tensors a DequantizeLinear gives, also through the Cast an FP16 graph puts after it, and
    through the Transposes and Reshapes the openvino layout leaves between a DequantizeLinear and
    the quantized op (only on the way to one: in the cpu layout a Reshape after a DQ leads elsewhere)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in model.graph.node for out in node.output}

    def dequantized_second_input(name: str) -> bool:  # through a Cast, Transposes, Reshapes
        node = producers.get(name)
        while node is not None and node.op_type in ("Cast", *DATA_MOVEMENT):
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    def leads_to_quantized_op(name: str) -> bool:
        readers = consumers.get(name, [])
        return bool(readers) and all(
            (r.op_type in CALIBRATED_OPS and len(r.input) > 1 and dequantized_second_input(r.input[1]))
            or (r.op_type in DATA_MOVEMENT and leads_to_quantized_op(r.output[0]))
            for r in readers
        )

    found = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:  # topologically sorted: a chain is followed in one sweep
        if not node.input or node.input[0] not in found:
            continue
        if node.op_type == "Cast" or (node.op_type in DATA_MOVEMENT and leads_to_quantized_op(node.output[0])):
            found.add(node.output[0])
    return found


def quantized_node_count(model) -> dict[str, int]:
    """Quantized compute nodes by type: those with a DequantizeLinear feeding an input."""
    dequantized = dequantized_tensors(model)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast") or node.output[0] in dequantized:
            continue
        if any(i in dequantized for i in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
