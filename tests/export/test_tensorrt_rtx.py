"""Our graphs through NVIDIA's REAL ONNX parser and builder: TensorRT for RTX (tensorrt-rtx-cu12, in the
[dev] extra), whose ahead-of-time build runs without a GPU. Every precision we ship (FP32, FP16, and
INT8 in the TensorRT Q/DQ layout) of both fusion modes is compiled with the default dynamic profile,
plus a batch profile, a fixed (DLA-shaped) profile and compute-capability targets; the parser's and
our own refusals are checked to name the problem and write nothing. Running an engine needs an RTX
GPU: that part is covered by the recording fake (tests/export/test_tensorrt_fake.py) and the GPU self-test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.metadata import sidecar_path
from tests.helpers import EXPORT_WEIGHTS, EXPORTED_FUSIONS, ROOT, copy_model

trt = pytest.importorskip("tensorrt_rtx", reason="NVIDIA's TensorRT-RTX (tensorrt-rtx-cu12, [dev]) is not installed")

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_SIZE = (96, 96)


@pytest.fixture(scope="module")
def graphs(exported, fp16_absi, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(fusion, precision) -> the ONNX we ship: the session's FP32 exports, their FP16 conversion and
    their INT8 Q/DQ graph (TensorRT layout, a few small calibration images: the builder does not care)."""
    from calibration.quantize import Int8Options, quantize_int8
    from calibration.synthetic import write_dataset
    from export.precision import convert_fp16

    folder = tmp_path_factory.mktemp("rtx")
    data = write_dataset(folder / "calib", 4, size=CALIB_SIZE, seed=5)
    found = {}
    for fusion in EXPORTED_FUSIONS:
        fp32 = copy_model(exported[fusion], folder / f"{fusion}.onnx")
        found[fusion, "fp32"] = fp32
        if fusion == "absi":
            found[fusion, "fp16"] = copy_model(fp16_absi[1].path, folder / f"{fusion}.fp16.onnx")
        else:
            found[fusion, "fp16"] = convert_fp16(fp32, weights=EXPORT_WEIGHTS[fusion]).path
        int8 = Int8Options(model=fp32, calib_data=data / "images", method="max", calib_count=4, size=CALIB_SIZE)
        found[fusion, "int8"] = quantize_int8(int8).path
    return found


# Extra builds beside the default profile: name -> (graph, CLI options)
EXTRA = {
    "batch": (("hierarchical", "fp16"), ["--batch", "1,4"]),
    "fixed": (
        ("absi", "int8"),
        ["--min-shape", "1x3x256x256", "--opt-shape", "1x3x256x256", "--max-shape", "1x3x256x256"]
        + ["--compute-capability", "7.5,8.6,12.0"],  # Turing takes INT8 (and FP16), not FP32
    ),
    "over-budget": (("hierarchical", "fp32"), ["--batch", "1,4", "--memory-budget", "3G"]),
}


def _cli(model: Path, engine: Path, *options: str) -> list[str]:
    command = ["export", "engine", str(model), "--target", "tensorrt-rtx", *options, "-o", str(engine)]
    return [sys.executable, "-m", "msdeploy.cli", *command]


@pytest.fixture(scope="module")
def builds(graphs, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every build through the CLI, two at a time (the builder is single-threaded): name -> (engine, run)."""
    folder = tmp_path_factory.mktemp("rtx-engines")
    jobs = {}
    for (fusion, precision), model in graphs.items():
        engine = folder / f"{fusion}.{precision}.engine"
        jobs[f"{fusion}/{precision}"] = (engine, _cli(model, engine, "--report"))
    for name, ((fusion, precision), extra) in EXTRA.items():
        engine = folder / f"{name}.engine"
        jobs[name] = (engine, _cli(graphs[fusion, precision], engine, *extra))
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}
    pending = list(jobs.items())
    while pending:
        batch, pending = pending[:2], pending[2:]
        procs = {
            name: (engine, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            for name, (engine, cmd) in batch
        }
        for name, (engine, proc) in procs.items():
            out, _ = proc.communicate(timeout=900)
            done[name] = (engine, subprocess.CompletedProcess(proc.args, proc.returncode, out))
    return done


def _sidecar(engine: Path) -> dict:
    return json.loads(sidecar_path(engine).read_text())


def _report(engine: Path) -> dict:
    return json.loads(engine.with_name(engine.name + ".report.json").read_text())


@pytest.mark.parametrize("fusion", EXPORTED_FUSIONS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_shipped_graph_compiles_with_the_default_profile(builds, fusion, precision):
    engine, run = builds[f"{fusion}/{precision}"]
    assert run.returncode == 0, run.stdout[-3000:]
    assert engine.stat().st_size > 1_000_000
    side = _sidecar(engine)
    assert side["target"] == "tensorrt-rtx" and side["tensorrt"] == trt.__version__
    assert side["gpu"] is None and side["compute_capabilities"] == ["8.6", "8.9", "12.0", "12.1"]  # AOT, no GPU
    assert side["precision"] == precision and side["typing"] == "strong" and side["builder_flags"] == []
    assert side["profile"]["min"] == [1, 3, 128, 128] and side["profile"]["max"] == [1, 3, 1024, 1024]
    assert side["memory"]["activation_bytes"] > 0 and side["memory"]["weights_bytes"] > 0
    # TensorRT-RTX's timing-cache calls are no-ops that force a GPU query: we never make them
    assert side["settings"]["timing_cache"] is None and not (engine.parent / "msdeploy.timing-cache").exists()
    assert "running it needs RTX-class GPUs" in " ".join(run.stdout.split())
    report = _report(engine)
    layers = report["layers"]
    assert report["network_layers"] > 1000 and len(layers) > 100
    # what the engine computes in is what the graph says
    computing = {layer["precision"] for layer in layers if layer["kind"] in ("correlation", "gemm")}
    expected = {"fp32": {"Float"}, "fp16": {"Half"}, "int8": {"Int8", "Half"}}[precision]
    assert computing <= expected and computing & expected, computing
    assert engine.with_name(engine.name + ".report.md").read_text().count("| correlation |") >= 1


def test_int8_engine_keeps_fused_attention_and_fp16_memory(builds):
    """The INT8 layout's unquantized layers are FP16: the builder fuses attention as in the FP16 engine and
    the engine needs about the FP16 engine's activation memory, not the FP32 engine's."""
    for fusion in EXPORTED_FUSIONS:
        reports = {p: _report(builds[f"{fusion}/{p}"][0]) for p in PRECISIONS}
        fused = {p: sum("mha" in layer["name"].lower() for layer in r["layers"]) for p, r in reports.items()}
        assert fused["int8"] > 0 and fused["int8"] >= fused["fp16"] - 2, fused
        memory = {p: r["memory"]["activation_bytes"] for p, r in reports.items()}
        assert memory["int8"] < 0.75 * memory["fp32"], memory


def test_batch_profile_takes_more_memory(builds):
    engine, run = builds["batch"]
    assert run.returncode == 0, run.stdout[-3000:]
    side = _sidecar(engine)
    assert side["profile"]["min"][0] == 1 and side["profile"]["max"] == [4, 3, 1024, 1024]
    single = _sidecar(builds["hierarchical/fp16"][0])
    assert side["memory"]["activation_bytes"] > single["memory"]["activation_bytes"]


def test_fixed_profile_for_chosen_compute_capabilities(builds):
    engine, run = builds["fixed"]
    assert run.returncode == 0, run.stdout[-3000:]
    side = _sidecar(engine)
    assert side["profile"]["min"] == side["profile"]["opt"] == side["profile"]["max"] == [1, 3, 256, 256]
    assert side["compute_capabilities"] == ["7.5", "8.6", "12.0"]
    assert "7.5, 8.6, 12.0" in " ".join(run.stdout.split())


def test_a_profile_over_the_memory_budget_is_refused_and_nothing_written(builds):
    engine, run = builds["over-budget"]
    assert run.returncode == 2, run.stdout[-3000:]
    text = " ".join(run.stdout.split())
    assert "the budget is 3.00 GiB (--memory-budget)" in text and "Nothing was written" in text
    assert "--max-shape" in text
    assert not engine.exists() and not sidecar_path(engine).exists()


# ---- refusals, in process (no build runs) ----


def _custom_op_model(path: Path, like: Path) -> Path:
    """A graph with an op no parser knows, carrying our metadata (copied from `like`)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, "H", "W"])
    logits = helper.make_tensor_value_info("mask_logits", TensorProto.FLOAT, ["B", 1, "H", "W"])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1, name="mean"),
        helper.make_node("Frobnicate", ["mean"], ["mask_logits"], domain="com.example", name="my_custom_node"),
    ]
    graph = helper.make_graph(nodes, "custom", [image], [logits])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    shutil.copy(sidecar_path(like), sidecar_path(path))
    return path


def _build(model: Path, **options):
    from export.tensorrt_build import EngineOptions, build_engine

    return build_engine(EngineOptions(model=model, target="tensorrt-rtx", **options))


def _nothing_beside(model: Path) -> None:
    engines = [p for p in model.parent.iterdir() if ".engine" in p.name]
    assert engines == [], engines


def test_an_unsupported_op_names_the_node_and_the_op(exported, tmp_path):
    model = _custom_op_model(tmp_path / "custom.onnx", exported["absi"])
    with pytest.raises(UserError, match=r"TensorRT-RTX .* could not parse .*node my_custom_node \(Frobnicate\)"):
        _build(model)
    _nothing_beside(model)


def test_a_broken_file_is_refused(exported, tmp_path):
    truncated = copy_model(exported["absi"], tmp_path / "truncated.onnx")
    truncated.write_bytes(truncated.read_bytes()[:2_000_000])
    with pytest.raises(UserError, match=r"could not parse .*truncated.onnx.*(MODEL_DESERIALIZE_FAILED|parse)"):
        _build(truncated)
    garbage = copy_model(exported["absi"], tmp_path / "garbage.onnx")
    garbage.write_bytes(b"\0not an onnx model" * 64)  # the parser accepts it and finds nothing
    with pytest.raises(UserError, match="found no network .*not an ONNX model, or a truncated one"):
        _build(garbage)
    _nothing_beside(truncated)


def test_a_profile_below_the_model_minimum_is_refused_before_building(exported, tmp_path):
    from click.testing import CliRunner

    from msdeploy.cli import main

    model = copy_model(exported["absi"], tmp_path / "m.onnx")
    result = CliRunner().invoke(
        main, ["export", "engine", str(model), "--target", "tensorrt-rtx", "--min-shape", "1x3x16x16"]
    )
    assert result.exit_code == 2 and "the model needs sides >= 32" in result.output
    _nothing_beside(model)


def test_options_the_rtx_builder_cannot_honour_are_refused(exported, tmp_path):
    model = copy_model(exported["absi"], tmp_path / "m.onnx")
    with pytest.raises(UserError, match=r"--compute-capability 9.0: TensorRT-RTX .* builds for 7.5, 8.0, 8.6"):
        _build(model, compute_capabilities=("9.0",))
    with pytest.raises(UserError, match=r"7.5 \(Turing\): TensorRT-RTX .* no FP32 matrix products"):
        _build(model, compute_capabilities=("7.5", "8.6"))
    with pytest.raises(UserError, match="RTX GPUs, which have no DLA"):
        _build(model, dla_core=0, precision="fp32")
    with pytest.raises(UserError, match=r"takes precision only from the graph.*msdeploy quantize"):
        _build(model, precision="fp16")
    _nothing_beside(model)


def test_the_cpu_int8_layout_is_refused_with_the_fix(graphs):
    from calibration.quantize import Int8Options, quantize_int8

    fp32 = graphs["absi", "fp32"]
    calib = fp32.parent / "calib" / "images"
    options = Int8Options(model=fp32, calib_data=calib, method="max", calib_count=4, size=CALIB_SIZE, target="cpu")
    cpu = quantize_int8(options).path  # the calibration cache of the TensorRT layout serves it
    with pytest.raises(UserError, match=r"holds the cpu INT8 layout .*--target tensorrt"):
        _build(cpu)
    _nothing_beside(cpu)


def test_missing_tensorrt_is_refused_with_how_to_install():
    from runtime.tensorrt_common import import_tensorrt, installed_targets

    if "tensorrt" in installed_targets():
        pytest.skip("TensorRT itself is installed here")
    with pytest.raises(UserError, match="tensorrt is not installed.*pip install tensorrt"):
        import_tensorrt("tensorrt")
    assert import_tensorrt().__name__ == "tensorrt_rtx"  # the default: what is installed


# ---- the real module and the runner ----


def test_features_of_the_real_module():
    from runtime.tensorrt_common import TensorRTFeatures

    features = TensorRTFeatures.detect(trt)
    assert features.target == "tensorrt-rtx" and features.version == trt.__version__
    assert {"7.5", "8.6", "8.9", "12.0"} <= set(features.compute_capabilities)
    assert features.runtime_cache and not features.weak_fp16 and not features.implicit_int8
    assert features.spec.builds_without_gpu and not features.spec.timing_cache and not features.spec.dla


def test_every_runner_call_exists_in_the_real_bindings():
    from runtime.tensorrt_backend import missing_runner_calls, runner_calls

    calls = runner_calls()
    assert {"create_runtime_config", "create_execution_context"} <= calls["ICudaEngine"]
    assert {"create_runtime_cache", "set_runtime_cache"} <= calls["IRuntimeConfig"]
    assert {"serialize", "deserialize"} <= calls["IRuntimeCache"]
    missing = missing_runner_calls(trt)  # the runtime config and cache too: this module has a runtime cache
    assert set(missing) == set(calls)
    assert not any(missing.values()), missing
    assert "runtime_config" in trt.ICudaEngine.create_execution_context.__doc__  # the overload we call
    assert trt.nptype(trt.DataType.HALF) is np.float16


def test_running_an_rtx_engine_without_a_gpu_is_refused_clearly(builds):
    import runtime
    from tests.runtime.test_tensorrt_lean import _gpu_visible

    if _gpu_visible():
        pytest.skip("a GPU is visible: `msdeploy selftest --gpu` runs the engine there")
    engine, _ = builds["absi/fp16"]
    with pytest.raises(UserError, match="no usable CUDA GPU|polygraphy"):
        runtime.load(engine)


@pytest.mark.slow
def test_a_static_export_compiles(tmp_path):
    from export.onnx_export import ExportOptions, export_onnx

    static = ExportOptions(backbone="pvt_v2_b0", fusion="absi", static=(96, 128), output=tmp_path / "s.onnx")
    result = _build(export_onnx(static).path, report=True)
    assert result.sidecar["profile"]["min"][2:] == result.sidecar["profile"]["max"][2:] == [96, 128]
    assert result.report.layers and result.sidecar["memory"]["activation_bytes"] > 0
