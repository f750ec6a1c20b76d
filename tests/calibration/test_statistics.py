"""Calibration statistics taken inside the graph, and the ranges each method reads from them."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.statistics import (
    MAXIMA,
    MINIMA,
    SAMPLE_POSITIONS,
    SAMPLES,
    RangeCollector,
    calibrated_tensors,
    statistics_model,
)


def _small_model():
    """x -> Conv -> Relu -> MatMul(W) -> y: one Conv input, one Conv output, one MatMul input."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "k"),
        numpy_helper.from_array(rng.normal(size=(8, 5)).astype(np.float32), "w"),
        numpy_helper.from_array(np.ones(5, np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_calibrated_tensors_are_inputs_of_quantized_ops_and_quantized_outputs():
    model = _small_model()
    assert calibrated_tensors(model, ("Conv", "MatMul")) == ["x", "r"]  # no weights, no outputs
    assert calibrated_tensors(model, ("Conv", "MatMul"), ("Conv",)) == ["x", "c", "r"]


@pytest.mark.parametrize("extremes, samples", [(True, 0), (False, 64)])
def test_statistics_model_reports_what_numpy_computes(extremes, samples):
    import onnxruntime as ort

    model = _small_model()
    tensors = ["x", "c", "r"]
    reference = ort.InferenceSession(_with_outputs(model, tensors).SerializeToString())
    session = ort.InferenceSession(statistics_model(model, tensors, samples, extremes).SerializeToString())
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    truth = dict(zip(tensors, reference.run(None, {"x": x})))
    feed = {"x": x}
    positions = np.sort(np.random.default_rng(2).random(samples))
    if samples:
        feed[SAMPLE_POSITIONS] = positions
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    if extremes:
        assert set(out) == {MINIMA, MAXIMA}
        np.testing.assert_array_equal(out[MINIMA], [truth[t].min() for t in tensors])
        np.testing.assert_array_equal(out[MAXIMA], [truth[t].max() for t in tensors])
    else:
        assert set(out) == {SAMPLES}
        picked = out[SAMPLES].reshape(len(tensors), samples)
        for row, name in zip(picked, tensors):
            flat = truth[name].ravel()
            # the values at the positions asked for (fraction of the tensor's size), in that order
            np.testing.assert_array_equal(row, flat[(positions * flat.size).astype(np.int64)])


def _with_outputs(model, names):
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:]
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return out


def _collect(values: list[np.ndarray], bins: int = 256) -> RangeCollector:
    collector = RangeCollector(["t"], bins)
    for v in values:
        collector.add(samples=v[None])
    return collector


def test_widening_merges_bins_exactly():
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.1, 1.0, 0.5, 7.0)]
    collector = _collect(batches)
    extent = collector.extent[0]
    assert extent >= max(np.abs(b).max() for b in batches)
    # counts equal a histogram taken at the final range in one go: nested bins lose nothing
    direct = np.zeros(256, np.int64)
    for b in batches:
        direct += np.bincount(np.clip(np.floor(b / extent * 128).astype(int) + 128, 0, 255), minlength=256)
    np.testing.assert_array_equal(collector.histograms[0], direct)
    assert collector.histograms[0].sum() == 20000 and collector.images == 4


def test_methods_pick_sensible_ranges():
    rng = np.random.default_rng(0)
    values = [rng.normal(0, 1, 20000).astype(np.float32) for _ in range(8)]
    values[3][:3] = [40.0, -35.0, 38.0]  # a few outliers
    collector = _collect(values, bins=2048)
    ranges = {m: collector.ranges(m)["t"] for m in ("max", "percentile", "entropy")}
    assert ranges["max"] == (-35.0, 40.0)
    everything = np.concatenate(values)
    low, high = np.percentile(everything, [0.005, 99.995])
    width = 2 * collector.extent[0] / 2048
    # the bins holding the tails, read outwards: within a bin of numpy's percentile
    assert low - width <= ranges["percentile"][0] <= low and high <= ranges["percentile"][1] <= high + width
    # entropy clips the outliers (far below the max) but keeps the bulk of the Gaussian
    assert 2.5 < ranges["entropy"][1] < 10 and ranges["entropy"][0] == -ranges["entropy"][1]


def test_collector_refuses_bad_use():
    with pytest.raises(ValueError, match="power of two"):
        RangeCollector(["t"], 1000)
    with pytest.raises(ValueError, match="no image"):
        RangeCollector(["t"]).ranges("max")
    with pytest.raises(ValueError, match="unknown method"):
        _collect([np.ones(4, np.float32)]).ranges("mse")


def test_zeros_nan_and_infinities_do_not_spoil_the_histogram():
    rng = np.random.default_rng(0)
    zeros = np.zeros(1000, np.float32)
    bulk = rng.normal(0, 1, 20000).astype(np.float32)
    spoiled = bulk.copy()
    spoiled[:3] = [np.nan, np.inf, -np.inf]
    collector = RangeCollector(["t"], 2048)
    collector.add(np.array([0.0]), np.array([0.0]), zeros[None])  # an all-zero first image
    collector.add(samples=spoiled[None])  # extremes from the finite samples
    assert collector.histograms.sum() == 1000 + 20000 - 3  # the non-finite values are not counted
    low, high = collector.ranges("percentile", 99.0)["t"]
    expected = np.percentile(np.concatenate([zeros, bulk[3:]]), [0.5, 99.5])
    assert abs(low - expected[0]) < 0.05 and abs(high - expected[1]) < 0.05
    assert collector.ranges("max")["t"] == (float(bulk[3:].min()), float(bulk[3:].max()))
    only_zeros = RangeCollector(["z"])
    only_zeros.add(np.array([0.0]), np.array([0.0]), zeros[None])
    assert only_zeros.ranges("percentile")["z"] == (0.0, 0.0) and only_zeros.ranges("entropy")["z"] == (0.0, 0.0)
