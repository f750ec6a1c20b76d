"""The openvino layout's graph passes on small hand-built graphs: where they apply, where they must
not, and that the rewritten graph computes exactly what the original did (ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.openvino_layout import flatten_after_transpose, hoist_qdq_pairs


def _run(model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()  # the graph as written: no Q/DQ propagation or fusion of ONNX Runtime's
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    return model


def _tokens_to_map_qdq(
    scale: np.ndarray, axis: int | None = None, extra_reader: bool = False, dq_readers: int = 1, dq_output: bool = False
):
    """x [1, N=6, C=4] -> Transpose -> Reshape [1, 4, 2, 3] -> Q -> DQ -> Conv 1x1 -> y, the shape
    of a PVT block's LayerNorm output feeding its MLP."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([1, 4, 2, 3], np.int64), "map_shape"),
        numpy_helper.from_array(scale.astype(np.float32), "s"),
        numpy_helper.from_array(np.zeros(scale.shape, np.int8), "zp"),
        numpy_helper.from_array(rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "w"),
    ]
    q_attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_channels", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "map_shape"], ["m"], name="to_map"),
        helper.make_node("QuantizeLinear", ["m", "s", "zp"], ["q"], name="q", **q_attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq", **q_attrs),
        helper.make_node("Conv", ["dq", "w"], ["y"], name="conv"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 2, 3])]
    for i in range(1, dq_readers):  # more quantized ops reading the same dequantized tensor
        nodes.append(helper.make_node("Conv", ["dq", "w"], [f"y{i}"], name=f"conv{i}"))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 5, 2, 3]))
    if dq_output:
        outputs.append(helper.make_tensor_value_info("dq", TensorProto.FLOAT, [1, 4, 2, 3]))
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["t"], ["r"], name="other_reader"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 6]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])]
    return _model(nodes, inputs, outputs, inits)


def test_qdq_pair_moves_above_the_transpose_and_reshape_and_computes_the_same():
    model = _tokens_to_map_qdq(np.array(0.05))
    x = {"x": np.random.default_rng(1).standard_normal((1, 6, 4)).astype(np.float32)}
    before = _run(model, x)
    assert hoist_qdq_pairs(model) == 1
    onnx.checker.check_model(model)
    node = {n.name: n for n in model.graph.node}
    assert node["q"].input[0] == "x" and node["to_channels"].input[0] == "dq" and node["conv"].input[0] == "m"
    order = [n.name for n in model.graph.node]
    assert order.index("dq") < order.index("to_channels") < order.index("to_map") < order.index("conv")
    np.testing.assert_equal(_run(model, x), before)  # rounding commutes with moving data


def test_every_reader_of_a_moved_pair_gets_the_moved_data():
    model = _tokens_to_map_qdq(np.array(0.05), dq_readers=3)
    x = {"x": np.random.default_rng(1).standard_normal((1, 6, 4)).astype(np.float32)}
    before = _run(model, x)
    assert hoist_qdq_pairs(model) == 1
    assert all(n.input[0] == "m" for n in model.graph.node if n.op_type == "Conv")
    np.testing.assert_equal(_run(model, x), before)


def test_a_dequantized_graph_output_keeps_its_pair():
    model = _tokens_to_map_qdq(np.array(0.05), dq_output=True)
    assert hoist_qdq_pairs(model) == 0


def test_a_per_channel_pair_stays_where_it_is():
    model = _tokens_to_map_qdq(np.full(4, 0.05), axis=1)  # the axis would move with the transpose
    assert hoist_qdq_pairs(model) == 0
    assert next(n for n in model.graph.node if n.name == "q").input[0] == "m"


def test_a_tensor_with_another_reader_keeps_the_float_value_for_it():
    model = _tokens_to_map_qdq(np.array(0.05), extra_reader=True)
    x = {"x": np.random.default_rng(1).standard_normal((1, 6, 4)).astype(np.float32)}
    before = _run(model, x)
    assert hoist_qdq_pairs(model) == 1  # above the Reshape only: the Transpose's output is read twice
    node = {n.name: n for n in model.graph.node}
    assert node["q"].input[0] == "t" and node["to_map"].input[0] == "dq" and node["other_reader"].input[0] == "t"
    np.testing.assert_equal(_run(model, x), before)


def _conv_to_tokens(shape: list[int] | None, reshape_name: str = "flatten"):
    """x [B, 4, 2, 3] -> Conv 1x1 (5 channels) -> Reshape `shape` -> Transpose(0, 2, 1) -> y. With
    `shape` None the Reshape's shape is computed from the Conv output, as a dynamic export writes it:
    [B, 5, H*W] from Shape, Gather and Concat."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv")]
    if shape is None:
        inits += [
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([5, -1], np.int64), "rest"),
        ]
        nodes += [
            helper.make_node("Shape", ["c"], ["c_shape"], name="shape"),
            # named as the pass would name its own nodes and tensors: they must not collide
            helper.make_node("Gather", ["c_shape", "zero"], ["flatten_nhwc"], name="flatten_to_nhwc"),
            helper.make_node("Concat", ["flatten_nhwc", "rest"], ["flat_shape"], name="flat_shape", axis=0),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), "flat_shape"))
    nodes += [
        helper.make_node("Reshape", ["c", "flat_shape"], ["f"], name=reshape_name),
        helper.make_node("Transpose", ["f"], ["y"], name="to_tokens", perm=[0, 2, 1]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 2, 3])]
    tokens = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n", "c"])
    return _model(nodes, inputs, [tokens], inits)


def test_conv_output_goes_to_tokens_through_an_nhwc_transpose():
    model = _conv_to_tokens([0, 5, -1])
    x = {"x": np.random.default_rng(2).standard_normal((2, 4, 2, 3)).astype(np.float32)}
    before = _run(model, x)
    assert flatten_after_transpose(model) == 1
    onnx.checker.check_model(model)
    ops = [(n.op_type, [list(a.ints) for a in n.attribute]) for n in model.graph.node]
    assert ops == [("Conv", []), ("Transpose", [[0, 2, 3, 1]]), ("Reshape", [])]
    assert model.graph.node[-1].output[0] == "y"  # the readers of the old output are untouched
    np.testing.assert_equal(_run(model, x), before)


@pytest.mark.parametrize("reshape_name", ["flatten", ""])
def test_a_computed_flatten_shape_and_awkward_names_are_handled(reshape_name):
    model = _conv_to_tokens(None, reshape_name)
    x = {"x": np.random.default_rng(3).standard_normal((3, 4, 2, 3)).astype(np.float32)}
    before = _run(model, x)
    assert flatten_after_transpose(model) == 1
    onnx.checker.check_model(model)
    nodes, tensors = [n.name for n in model.graph.node], [o for n in model.graph.node for o in n.output]
    assert len(nodes) == len(set(nodes)) and len(tensors) == len(set(tensors))
    np.testing.assert_equal(_run(model, x), before)


def test_a_reshape_that_is_not_the_channel_flatten_is_left_alone():
    model = _conv_to_tokens([0, 10, -1])  # splits the channels: [B, 2C, HW/2] is another tensor
    assert flatten_after_transpose(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv", "Reshape", "Transpose"]
