"""Calibrated INT8 in the graph: TensorRT-ready Q/DQ, the CPU layout, the calibration cache, accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import runtime
from calibration.int8 import (
    TENSORRT_OPS,
    attention_matmuls,
    dequantized_tensors,
    quantized_node_count,
    tensorrt_qdq_problems,
)
from calibration.openvino_layout import amx_int8_conv_hazards
from calibration.quantize import Int8Options, quantize_int8
from calibration.synthetic import write_dataset
from runtime.errors import UserError
from tests.helpers import copy_model

SIZE = (96, 96)


@pytest.fixture(scope="module")
def workspace(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    source = copy_model(exported["hierarchical"], folder / "hier.onnx")
    data = write_dataset(folder / "data", 6, size=SIZE, seed=3)
    return source, data


def options(workspace, **kw) -> Int8Options:
    source, data = workspace
    base = dict(model=source, calib_data=data / "images", method="max", calib_count=4, size=SIZE)
    return Int8Options(**{**base, **kw})


@pytest.fixture(scope="module")
def tensorrt_int8(workspace):
    return quantize_int8(options(workspace))


def fp16_casts(model) -> set[str]:
    """Outputs of the Cast-to-float16 nodes of a graph."""
    import onnx

    return {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
    }


def test_tensorrt_qdq_graph_properties(workspace, tensorrt_int8):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tensorrt_int8.path))
    assert tensorrt_qdq_problems(model) == []
    counts = quantized_node_count(model)
    assert counts.get("Conv", 0) > 50 and counts.get("MatMul", 0) > 50 and set(counts) <= set(TENSORRT_OPS)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:  # symmetric: every zero-point is an int8 zero
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
    dq_outputs = dequantized_tensors(model)  # a DQ's output, or the FP16 Cast of it
    producer = {out: n for n in model.graph.node for out in n.output}

    def dequantize_of(name: str):
        node = producer[name]
        return producer[node.input[0]] if node.op_type == "Cast" else node

    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in dq_outputs:  # weight comes through a DequantizeLinear
            dq = dequantize_of(node.input[1])
            weight, scale = inits[dq.input[0]], inits[dq.input[1]]
            assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],)  # per output channel
        if len(node.input) > 2 and node.op_type == "Conv":
            assert node.input[2] not in dq_outputs  # the bias stays float
    assert not dq_outputs & {o.name for o in model.graph.output}  # no quantized graph output
    for name in dq_outputs:
        assert {c.op_type for c in consumers[name]} <= {*TENSORRT_OPS, "Cast"}
    # the unquantized layers run in FP16 (TensorRT's INT8 + FP16): each dequantized tensor reaches its
    # Conv/MatMul through a Cast to float16, and the sidecar says so
    assert fp16_casts(model) & dq_outputs
    assert json.loads(tensorrt_int8.sidecar.read_text())["int8"]["float_precision"] == "fp16"
    # attention MatMuls (two activations) stay float by default for TensorRT: 2 per block, 3 scales
    names = set(attention_matmuls(onnx.load(str(workspace[0])).graph))
    attention = [n for n in model.graph.node if n.name in names]
    assert len(attention) == 2 * 8 * 3 and not any(set(n.input) & dq_outputs for n in attention)
    runner = runtime.load(tensorrt_int8.path)
    assert runner.require_metadata().precision == "int8"
    assert all(t.dtype == np.float32 for t in runner.inputs + runner.outputs)


def test_int8_model_runs_and_was_checked_on_real_images(tensorrt_int8):
    sidecar = json.loads(tensorrt_int8.sidecar.read_text())
    assert sidecar["precision"] == "int8" and sidecar["int8"]["target"] == "tensorrt"
    assert tensorrt_int8.parity.passed and all(r.shape == (1, 3, *SIZE) for r in tensorrt_int8.parity.rows)
    out = runtime.load(tensorrt_int8.path).infer(np.zeros((2, 3, 64, 80), np.float32))
    assert out["mask_logits"].shape == (2, 1, 64, 80) and np.isfinite(out["mask_logits"]).all()


def test_cpu_target_uses_uint8_activations(workspace, tensorrt_int8, monkeypatch):
    import onnx
    from onnx import numpy_helper

    import calibration.quantize as quantize_module

    # the cache written by the tensorrt run serves the cpu layout: no second calibration
    monkeypatch.setattr(quantize_module, "calibrate", lambda *a, **k: pytest.fail("calibrated twice"))
    result = quantize_int8(options(workspace, target="cpu"))
    assert result.cache_reused and result.path.name == "hier.int8-cpu.onnx"
    model = onnx.load(str(result.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activation_zps = [
        inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    ]
    assert activation_zps and all(zp.dtype == np.uint8 for zp in activation_zps)
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    attention = set(attention_matmuls(onnx.load(str(workspace[0])).graph))
    # float attention by default (accuracy), as in the TensorRT layout; the other MatMuls are quantized
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert attention and all(not set(n.input) & dq_outputs for n in matmuls if n.name in attention)
    assert any(set(n.input) & dq_outputs for n in matmuls if n.name not in attention)
    # dequantized weights feed only the quantized ops that fuse them: a LayerNorm or Add reading a
    # weight it shares with a Conv (equal initializers merged) gets its own FP32 copy
    weight_dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    readers = {n.op_type for n in model.graph.node if set(n.input) & weight_dq}
    assert readers and readers <= set(TENSORRT_OPS), readers
    assert runtime.load(result.path).infer(np.zeros((1, 3, *SIZE), np.float32))["mask_logits"].shape == (1, 1, *SIZE)
    # --quantize-attention: every attention MatMul reads two dequantized activations
    qa = workspace[0].parent / "qa.onnx"
    fast = quantize_int8(options(workspace, target="cpu", quantize_attention=True, output=qa))
    model = onnx.load(str(fast.path))
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert all(set(n.input) <= dq_outputs for n in model.graph.node if n.name in attention)


def test_float_islands_in_fp32_on_request(workspace, tensorrt_int8, tmp_path):
    import onnx

    result = quantize_int8(options(workspace, float_precision="fp32", output=tmp_path / "f32.onnx"))
    model = onnx.load(str(result.path))
    assert result.cache_reused and not fp16_casts(model)
    assert quantized_node_count(model) == quantized_node_count(onnx.load(str(tensorrt_int8.path)))
    with pytest.raises(UserError, match="unknown float precision"):
        quantize_int8(options(workspace, float_precision="bf16", output=tmp_path / "bf.onnx"))


@pytest.fixture(scope="module")
def openvino_int8(workspace, tensorrt_int8):
    return quantize_int8(options(workspace, target="openvino"))


def test_openvino_layout_is_the_tensorrt_quantization_with_free_transposes(
    workspace, tensorrt_int8, openvino_int8, tmp_path
):
    """The same ops quantized as for TensorRT, FP32 float layers, the Q/DQ pairs above the token/map
    transposes and the Conv outputs flattened after their transpose; the passes change no value."""
    import onnx

    result = openvino_int8
    assert result.cache_reused and result.path.name == "hier.int8-openvino.onnx"
    model = onnx.load(str(result.path))
    assert not fp16_casts(model)
    # the TensorRT layout's quantized ops, less the Convs OpenVINO's AMX INT8 kernels got wrong
    # (b0's stage-1 spatial reductions: 2 blocks x 3 scales)
    hazards = amx_int8_conv_hazards(onnx.load(str(workspace[0])).graph)
    assert len(hazards) == 2 * 3
    counts = quantized_node_count(onnx.load(str(tensorrt_int8.path)))
    assert quantized_node_count(model) == {**counts, "Conv": counts["Conv"] - len(hazards)}
    producer = {out: n for n in model.graph.node for out in n.output}
    dq_readers = [n for n in model.graph.node if n.input and producer.get(n.input[0], n).op_type == "DequantizeLinear"]
    assert any(n.op_type == "Transpose" for n in dq_readers)  # a pair was moved above the data movement
    flattened = [n for n in model.graph.node if n.op_type == "Transpose" and n.name.endswith("_to_nhwc")]
    assert flattened and all(producer[n.input[0]].op_type == "Conv" for n in flattened)

    # against the TensorRT quantization with FP32 float layers, unoptimised ONNX Runtime (no fusion of
    # its own): the same values up to float summation order
    import onnxruntime as ort

    plain = quantize_int8(
        options(workspace, float_precision="fp32", exclude=tuple(hazards), output=tmp_path / "f.onnx")
    )
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = np.random.default_rng(5).standard_normal((1, 3, *SIZE), dtype=np.float32)

    def logits(path):
        session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        return session.run(["mask_logits"], {"image": x})[0]

    want = logits(plain.path)
    np.testing.assert_allclose(logits(result.path), want, atol=1e-4 * np.abs(want).max())
    with pytest.raises(UserError, match="openvino INT8 layout keeps its unquantized layers FP32"):
        quantize_int8(options(workspace, target="openvino", float_precision="fp16", output=tmp_path / "h.onnx"))


def test_openvino_runs_its_layout_in_int8_with_onnx_runtime_s_masks(openvino_int8, tensorrt_int8, monkeypatch, caplog):
    """pvt_v2_b0's stage-1 spatial reductions (32 channels, 8x8 kernels) are Convs OpenVINO's AMX INT8
    kernels computed wrongly: the openvino layout leaves them float, and opening another layout's
    file on an AMX CPU says so."""
    ov = pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    from calibration.metrics import mask_iou
    from runtime import openvino_backend
    from runtime.compare import cosine_similarity
    from runtime.cpu_features import CpuFeatures

    assert not openvino_backend.amx_int8_hazards(ov.Core().read_model(str(openvino_int8.path)))
    assert len(openvino_backend.amx_int8_hazards(ov.Core().read_model(str(tensorrt_int8.path)))) == 2 * 3

    from calibration.synthetic import make_sample
    from runtime.preprocess import preprocess

    rng, meta = np.random.default_rng(6), runtime.load(openvino_int8.path).require_metadata()
    x = np.concatenate([preprocess(make_sample(rng, SIZE).image, meta, SIZE) for _ in range(2)])
    with runtime.open_runner(openvino_int8.path, "onnxruntime-cpu") as reference:
        want = reference.infer(x)["mask_logits"]
    for precision in ("f32", "auto"):  # auto: BF16 float layers where the CPU has them
        with runtime.open_runner(openvino_int8.path, "openvino-cpu", inference_precision=precision) as runner:
            got = runner.infer(x)["mask_logits"]
        assert cosine_similarity(got, want) > 0.99, precision
        assert mask_iou(got > 0, want > 0) >= 0.98, precision

    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: CpuFeatures(amx_int8=True, amx_bf16=True))
    with caplog.at_level("WARNING", logger="msdeploy.openvino"):
        runtime.open_runner(tensorrt_int8.path, "openvino-cpu").close()
    assert "6 INT8 convolution(s)" in caplog.text and "--target openvino" in caplog.text


def test_cache_is_reused_then_refused_when_stale(workspace, tensorrt_int8, tmp_path, monkeypatch):
    import calibration.quantize as quantize_module

    calls = []
    real = quantize_module.calibrate
    monkeypatch.setattr(quantize_module, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = quantize_int8(options(workspace, output=tmp_path / "again.onnx"))
    assert again.cache_reused and calls == [] and again.cache == tensorrt_int8.cache
    with pytest.raises(UserError, match=r"stale.*seed \(0 in the cache, 1 now\).*--recalibrate"):
        quantize_int8(options(workspace, seed=1, output=tmp_path / "seed1.onnx"))
    # the model changed (re-exported): the model hash no longer matches
    cache = json.loads(tensorrt_int8.cache.read_text())
    cache["key"]["model_sha256"] = "0" * 64
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(cache))
    with pytest.raises(UserError, match="stale.*model_sha256"):
        quantize_int8(options(workspace, calib_cache=stale, output=tmp_path / "x.onnx"))
    redone = quantize_int8(options(workspace, calib_cache=stale, recalibrate=True, output=tmp_path / "y.onnx"))
    assert not redone.cache_reused and calls == [1]
    assert json.loads(stale.read_text())["key"]["model_sha256"] != "0" * 64


def test_the_variants_pipeline_replaces_only_a_cache_of_an_earlier_export(workspace, tensorrt_int8, tmp_path):
    """A default cache made for an earlier export of the same file is replaced when asked (the variants
    pipeline re-exports on new weights); one made for other settings is still refused."""
    path = tensorrt_int8.cache
    kept = path.read_text()
    try:
        with pytest.raises(UserError, match=r"stale.*seed"):
            quantize_int8(options(workspace, seed=1, replace_cache_of_old_export=True, output=tmp_path / "s.onnx"))
        cache = json.loads(kept)
        cache["key"]["model_sha256"] = "0" * 64
        path.write_text(json.dumps(cache))
        with pytest.raises(UserError, match="stale.*model_sha256"):
            quantize_int8(options(workspace, output=tmp_path / "refused.onnx"))
        with pytest.raises(UserError, match=r"stale.*model_sha256.*seed"):  # another model and another seed
            quantize_int8(options(workspace, seed=1, replace_cache_of_old_export=True, output=tmp_path / "t.onnx"))
        redone = quantize_int8(options(workspace, replace_cache_of_old_export=True, output=tmp_path / "r.onnx"))
        assert not redone.cache_reused and redone.cache == path
        assert json.loads(path.read_text())["key"] == json.loads(kept)["key"]
    finally:
        path.write_text(kept)


def test_tensorrt_s_own_cache_follows_the_same_replacement_rule(tmp_path):
    """The legacy implicit-INT8 cache: replaced only when asked and only the model hash differs."""
    from calibration.cache import CacheKey, CalibrationSettings, load_tensorrt_cache, save_tensorrt_cache

    settings = CalibrationSettings("entropy", 8, 0, (64, 64), calibrated_ops=("tensorrt-implicit",))
    path, said = tmp_path / "m.onnx.calib-tensorrt-implicit.json", []
    save_tensorrt_cache(path, CacheKey("a" * 64, settings, "images"), b"TRT-CACHE")
    assert load_tensorrt_cache(path, CacheKey("a" * 64, settings, "images")) == b"TRT-CACHE"
    new_export = CacheKey("b" * 64, settings, "images")
    with pytest.raises(UserError, match="stale.*model_sha256"):
        load_tensorrt_cache(path, new_export)
    assert load_tensorrt_cache(path, new_export, replace_old_export=True, say=said.append) is None
    assert "earlier export" in said[0]
    with pytest.raises(UserError, match="stale.*data_fingerprint"):
        load_tensorrt_cache(path, CacheKey("b" * 64, settings, "other images"), replace_old_export=True)


def test_exclude_keeps_nodes_in_fp32(workspace, tmp_path):
    import onnx

    first_conv = next(n.name for n in onnx.load(str(workspace[0])).graph.node if n.op_type == "Conv")
    result = quantize_int8(options(workspace, exclude=(first_conv,), output=tmp_path / "ex.onnx"))
    model = onnx.load(str(result.path))
    dq_outputs = dequantized_tensors(model)
    node = next(n for n in model.graph.node if n.name == first_conv)
    assert not set(node.input) & dq_outputs
    with pytest.raises(UserError, match="matches no node"):
        quantize_int8(options(workspace, exclude=("no_such_node*",), output=tmp_path / "ex2.onnx"))


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda d: d.mkdir(), "no images"),
        (lambda d: None, "does not exist"),
        (lambda d: (d.mkdir(), (d / "a.png").write_bytes(b"not a png")), "could be read"),
    ],
)
def test_calibration_on_empty_or_broken_folders_fails_clearly(workspace, tmp_path, setup, fragment):
    folder = tmp_path / "calib"
    setup(folder)
    with pytest.raises(UserError, match=fragment):
        quantize_int8(options(workspace, calib_data=folder, output=tmp_path / "z.onnx", recalibrate=True))
    assert not (tmp_path / "z.onnx").exists()


def test_accuracy_report(workspace, tensorrt_int8):
    from calibration.accuracy import evaluate_models, quantization_sensitivity
    from calibration.data import load_calibration_set

    source, data = workspace
    report = evaluate_models([source, tensorrt_int8.path], data, size=SIZE)
    fp32, int8 = report.variants
    assert report.images == 6 and fp32.name == "fp32" and int8.name == "int8 (max, tensorrt)"
    assert fp32.max_abs == 0 and fp32.sqnr_db_mean == float("inf") and fp32.mask_iou_mean == 1
    assert int8.max_abs > 0 and np.isfinite(int8.sqnr_db_mean) and 0 <= int8.mask_iou_min <= 1
    for v in report.variants:
        assert set(v.ground_truth) >= {"s_measure", "e_measure", "weighted_f", "mae", "iou"}
    feeds = load_calibration_set(data / "images", runtime.load(source).require_metadata(), count=2, size=SIZE).feeds
    rows = quantization_sensitivity(source, tensorrt_int8.path, feeds, top=5)
    assert len(rows) == 5 and [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    assert all(r["read_by"] for r in rows)
    with pytest.raises(UserError, match="first model must be the FP32"):
        evaluate_models([tensorrt_int8.path], data)


def test_quantize_and_accuracy_commands(workspace, tensorrt_int8, tmp_path):
    from click.testing import CliRunner

    from msdeploy.cli import main

    source, data = workspace
    cli = CliRunner()
    out = tmp_path / "cli.int8.onnx"
    args = ["quantize", str(source), "--precision", "int8", "--calib-data", str(data / "images"), "--method", "max"]
    args += ["--calib-count", "4", "--size", "96", "-o", str(out)]
    result = cli.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "reused (no calibration run)" in result.output and out.exists()
    assert cli.invoke(main, args).exit_code == 2  # exists: refused without --force
    report = tmp_path / "acc.md"
    accuracy = ["accuracy", str(source), str(out), "--data", str(data), "--size", "96", "--sensitivity", "3"]
    result = cli.invoke(main, [*accuracy, "--report", str(report)])
    assert result.exit_code == 0, result.output
    for title in ("Agreement with the FP32 model", "Against ground truth", "INT8 sensitivity"):
        assert title in result.output and title in report.read_text()
    assert "- command: `msdeploy accuracy" in report.read_text()
    assert json.loads(report.with_suffix(".json").read_text())["images"] == 6
    missing = cli.invoke(main, ["quantize", str(source), "--precision", "int8", "-o", str(tmp_path / "n.onnx")])
    assert missing.exit_code == 2 and "--calib-data" in missing.output and "Traceback" not in missing.output
