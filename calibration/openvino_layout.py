"""Graph passes that make a Q/DQ model compile well in OpenVINO's CPU plugin (the `openvino` layout).

OpenVINO turns each Q/DQ pair into a FakeQuantize and its low-precision transformations then fuse
the dequantization into the int8 kernel that reads it. Two spots of our graphs defeat that, both
where the PVT blocks switch between token layout [B, N, C] and maps [B, C, H, W]:

- `hoist_qdq_pairs`: the quantizer puts Q/DQ right before the Conv or MatMul, after the Transpose
  and Reshape that turn tokens into a map. OpenVINO then runs the transpose as a separate float
  kernel (it cannot fold it into the reorder it otherwise becomes) and the quantization as a
  separate pass. With the pair moved above the data movement, the LayerNorm writes int8 and the
  transpose becomes a free reorder. A per-tensor scale commutes with a transpose or reshape, so
  the arithmetic is unchanged.
- `flatten_after_transpose`: a Conv whose output goes back to tokens as Reshape [B, C, H*W] then
  Transpose(0, 2, 1). OpenVINO moves the Conv's dequantization (a per-channel multiply) past the
  Reshape, where it no longer fuses into the Conv, and the Transpose after it runs as a float
  kernel. Written as Transpose(0, 2, 3, 1) then Reshape [B, H*W, C], the same values in the same
  order, the multiply stays in the Conv and the transpose becomes a free reorder of its NHWC output.

Both passes were measured with OpenVINO's per-layer counters and `benchmarks/bench_openvino.py`
(docs/openvino.md).

One kind of Conv stays float in this layout, `amx_int8_conv_hazards`: those OpenVINO 2026.4's AMX INT8
convolution computed wrongly (runtime.openvino_backend.amx_int8_conv_hazard: 16-63 input channels, a
4x4 or larger kernel, as in pvt_v2_b0's stage-1 spatial reduction).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from runtime.openvino_backend import amx_int8_conv_hazard

DATA_MOVEMENT = ("Transpose", "Reshape")  # ops a per-tensor quantization commutes with


def amx_int8_conv_hazards(graph) -> list[str]:
    """Names of the Convs to leave float (before quantization: their weights are initializers)."""
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    found = []
    for node in graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if shape is None or len(shape) != 4:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1 and amx_int8_conv_hazard(shape[1], shape[2:]):
            found.append(node.name)
    return found


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> dict[str, list]:
    found: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            found[name].append(node)
    return found


def _is_scalar(graph, name: str) -> bool:
    from onnx import numpy_helper

    init = next((i for i in graph.initializer if i.name == name), None)
    return init is not None and numpy_helper.to_array(init).size == 1


def _sort(model) -> None:
    """Topological order again after rewiring, with the quantizer's own sort (int8.py uses it too)."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    ONNXModel(model).topological_sort()


def hoist_qdq_pairs(model) -> int:
    """Move each per-tensor Q/DQ pair above the Transposes and Reshapes between the tensor's producer
    and the quantized op, when nothing else reads the tensors in between. Returns how many moved."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    producers, consumers = _producers(graph), _consumers(graph)  # kept up to date below
    moved = 0
    for quant in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        readers = consumers[quant.output[0]]
        if len(readers) != 1 or readers[0].op_type != "DequantizeLinear" or quant.output[0] in outputs:
            continue
        dequant = readers[0]
        if dequant.output[0] in outputs or not all(_is_scalar(graph, n.input[1]) for n in (quant, dequant)):
            continue  # a graph output keeps its tensor; a per-axis scale would move with the data
        chain, source = [], quant.input[0]
        while (
            source in producers
            and producers[source].op_type in DATA_MOVEMENT
            and len(consumers[source]) == 1
            and source not in outputs
        ):
            chain.append(producers[source])
            source = producers[source].input[0]
        if not chain:
            continue
        top, bottom = chain[-1], chain[0]
        dequantized_readers = consumers[dequant.output[0]]
        for reader in dequantized_readers:
            reader.input[:] = [bottom.output[0] if name == dequant.output[0] else name for name in reader.input]
        quant.input[0] = source
        top.input[0] = dequant.output[0]
        consumers[bottom.output[0]] = dequantized_readers  # was [quant]
        consumers[source] = [quant if reader is top else reader for reader in consumers[source]]
        consumers[dequant.output[0]] = [top]
        moved += 1
    if moved:
        _sort(model)
    return moved


def _shapes(model) -> dict[str, list]:
    """Known dims (int, or the symbol's name) of every tensor the model's shape inference can tell."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # data_prop: computed Reshape shapes
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in v.type.tensor_type.shape.dim]
        for v in values
        if v.type.tensor_type.HasField("shape")
    }


def _names(graph) -> set[str]:
    """Every node, tensor and initializer name in use."""
    names = {i.name for i in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
    for node in graph.node:
        names.update((node.name, *node.input, *node.output))
    return names


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`... if taken; the result is marked taken."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _drop_unread_initializer(graph, name: str) -> None:
    if not any(name in node.input for node in graph.node):
        for init in [i for i in graph.initializer if i.name == name]:
            graph.initializer.remove(init)


def _perm(node) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _out_channels(graph, conv, producers) -> int | None:
    """Conv output channels from its weight (an initializer, or the DequantizeLinear of one)."""
    name = conv.input[1]
    if name in producers and producers[name].op_type == "DequantizeLinear":
        name = producers[name].input[0]
    init = next((i for i in graph.initializer if i.name == name), None)
    return int(init.dims[0]) if init is not None else None


def flatten_after_transpose(model) -> int:
    """Conv -> Reshape [B, C, H*W] -> Transpose(0, 2, 1) becomes Conv -> Transpose(0, 2, 3, 1) ->
    Reshape [B, H*W, C] (the same tensor). Only where shape inference shows the Reshape keeps the
    batch and channel axes. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _shapes(model)
    producers, consumers = _producers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    taken = _names(graph)
    rewritten = 0
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        out = conv.output[0]
        readers = [r for r in consumers[out] if r.op_type != "Shape"]  # a Shape reader is unaffected
        if len(readers) != 1 or out in outputs:
            continue
        reshape = readers[0]
        if reshape.op_type != "Reshape" or reshape.input[0] != out or len(consumers[reshape.output[0]]) != 1:
            continue
        transpose = consumers[reshape.output[0]][0]
        if transpose.op_type != "Transpose" or _perm(transpose) != [0, 2, 1] or reshape.output[0] in outputs:
            continue
        channels = _out_channels(graph, conv, producers)
        before, after = shapes.get(out), shapes.get(reshape.output[0])
        if channels is None or before is None or after is None or len(before) != 4 or len(after) != 3:
            continue
        if before[0] is None or after[0] != before[0] or after[1] != channels:
            continue
        base = reshape.name or out
        nhwc, shape = _unique(f"{base}_nhwc", taken), _unique(f"{base}_tokens_shape", taken)
        graph.initializer.append(numpy_helper.from_array(np.array([0, -1, channels], np.int64), shape))
        graph.node.extend(
            [
                helper.make_node("Transpose", [out], [nhwc], name=_unique(f"{base}_to_nhwc", taken), perm=[0, 2, 3, 1]),
                helper.make_node(
                    "Reshape", [nhwc, shape], [transpose.output[0]], name=_unique(f"{base}_to_tokens", taken)
                ),
            ]
        )
        graph.node.remove(reshape)
        graph.node.remove(transpose)
        _drop_unread_initializer(graph, reshape.input[1])
        rewritten += 1
    if rewritten:
        _sort(model)
    return rewritten
