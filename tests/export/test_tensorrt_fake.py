"""Our TensorRT builder and runner logic, driven through a RECORDING FAKE of TensorRT and CUDA
(tests/fake_tensorrt.py) with TensorRT-10-like and TensorRT-11-like feature sets.

These tests check which flags we set, what we refuse, profiles, caches, shape checks and data
movement. They are not evidence that TensorRT works: that is `msdeploy selftest --gpu` on a GPU.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from calibration.synthetic import write_dataset
from export.tensorrt_build import EngineOptions, build_engine, plan_build, resolve_profile
from runtime.cuda import DeviceInfo
from runtime.errors import UserError
from runtime.metadata import ModelMetadata, sidecar_path
from runtime.predict import Predictor
from runtime.tensorrt_backend import TensorRTRunner
from runtime.tensorrt_common import TensorRTFeatures
from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt
from tests.helpers import copy_model

TRT10 = TensorRTFeatures("10.3.0", strongly_typed=True, weak_fp16=True, implicit_int8=True)
TRT11 = TensorRTFeatures("11.0.0", strongly_typed=True, weak_fp16=False, implicit_int8=False)


@pytest.fixture
def model(exported, tmp_path) -> Path:
    """The session's hierarchical pvt_v2_b0 export (five outputs), copied so engines land in tmp."""
    return copy_model(exported["hierarchical"], tmp_path / "net.onnx")


def with_precision(model: Path, precision: str) -> Path:
    """The same ONNX labelled as an FP16/INT8 graph: the builder only reads the label (logic test)."""
    target = copy_model(model, model.with_name(f"net.{precision}.onnx"))
    side = json.loads(sidecar_path(target).read_text())
    sidecar_path(target).write_text(json.dumps({**side, "precision": precision}))
    return target


def fakes(version="10.3.0", legacy=True, device=None, **kw):
    cuda = FakeCuda(device)
    return make_fake_tensorrt(version, legacy=legacy, cuda=cuda, **kw), cuda


# ---- precision planning: feature detection, not version strings ----


def test_features_are_detected_on_the_module_not_its_version_string():
    cuda = FakeCuda()
    legacy_named_11 = make_fake_tensorrt("11.0.0", legacy=True, cuda=cuda)
    modern_named_10 = make_fake_tensorrt("10.99", legacy=False, cuda=cuda)
    assert TensorRTFeatures.detect(legacy_named_11).weak_fp16
    assert not TensorRTFeatures.detect(modern_named_10).implicit_int8


def test_graph_precision_builds_strongly_typed_on_both_versions():
    for features in (TRT10, TRT11):
        for precision in ("fp16", "int8"):
            plan = plan_build(precision, None, features)
            assert plan.strongly_typed and plan.flags == () and plan.precision == precision


def test_fp32_onnx_lowered_by_builder_flags_only_where_they_exist():
    assert plan_build("fp32", "fp16", TRT10).flags == ("FP16",)
    int8 = plan_build("fp32", "int8", TRT10)
    assert int8.implicit_int8 and not int8.strongly_typed and int8.flags == ("INT8", "FP16")
    for precision in ("fp16", "int8"):
        with pytest.raises(UserError, match=f"msdeploy quantize MODEL.onnx --precision {precision}"):
            plan_build("fp32", precision, TRT11)


def test_a_precision_that_contradicts_the_graph_is_refused():
    with pytest.raises(UserError, match="already fp16"):
        plan_build("fp16", "fp32", TRT10)


def test_default_profile_covers_128_to_1024_and_the_batches_asked():
    meta = ModelMetadata("hierarchical", "pvt_v2_b0", [0.5, 1.0, 1.5], [32, 64, 160, 256], ["mask_logits"])
    profile = resolve_profile(meta, EngineOptions(model=Path("m.onnx"), batches=(4, 1)))
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 128, 128), (1, 3, 352, 352), (4, 3, 1024, 1024))
    with pytest.raises(UserError, match="sides >= 32"):
        resolve_profile(meta, EngineOptions(model=Path("m.onnx"), min_shape=(1, 3, 16, 16)))
    with pytest.raises(UserError, match="min <= opt <= max"):
        resolve_profile(meta, EngineOptions(model=Path("m.onnx"), opt_shape=(1, 3, 2048, 352)))
    static = ModelMetadata(**{**meta.__dict__, "static_size": [256, 256]})
    assert resolve_profile(static, EngineOptions(model=Path("m.onnx"))).max == (1, 3, 256, 256)


def test_dla_profile_is_one_fixed_shape():
    """TensorRT's DLA restrictions: no dynamic dimensions (min = opt = max). Our logic, not TensorRT's."""
    meta = ModelMetadata("hierarchical", "pvt_v2_b0", [0.5, 1.0, 1.5], [32, 64, 160, 256], ["mask_logits"])
    dla = resolve_profile(meta, EngineOptions(model=Path("m.onnx"), dla_core=0))
    assert dla.min == dla.opt == dla.max == (1, 3, 352, 352)
    chosen = resolve_profile(meta, EngineOptions(model=Path("m.onnx"), dla_core=0, opt_shape=(2, 3, 256, 320)))
    assert chosen.min == chosen.max == (2, 3, 256, 320)
    same = EngineOptions(model=Path("m.onnx"), dla_core=0, min_shape=(1, 3, 352, 352), max_shape=(1, 3, 352, 352))
    assert resolve_profile(meta, same).max == (1, 3, 352, 352)
    with pytest.raises(UserError, match=r"--max-shape 1x3x1024x1024: a DLA engine takes one fixed input shape"):
        resolve_profile(meta, EngineOptions(model=Path("m.onnx"), dla_core=0, max_shape=(1, 3, 1024, 1024)))
    with pytest.raises(UserError, match=r"one batch size, not \[1, 4\]"):
        resolve_profile(meta, EngineOptions(model=Path("m.onnx"), dla_core=0, batches=(1, 4)))
    with pytest.raises(UserError, match="sides >= 32"):
        resolve_profile(meta, EngineOptions(model=Path("m.onnx"), dla_core=0, opt_shape=(1, 3, 16, 16)))


# ---- building ----


def test_build_writes_engine_and_sidecar_and_reuses_the_timing_cache(model):
    trt, cuda = fakes("11.0.0", legacy=False)
    first = build_engine(EngineOptions(model=model, workspace=1 << 30, opt_level=4), trt=trt, cuda=cuda)
    assert first.path == model.with_name("net.engine") and first.path.is_file()
    side = json.loads(sidecar_path(first.path).read_text())
    assert side["tensorrt"] == "11.0.0" and side["gpu"] == {"name": "Fake Orin", "compute_capability": "8.7"}
    assert side["precision"] == "fp32" and side["typing"] == "strong"
    assert side["onnx"]["sha256"] == json.loads(sidecar_path(model).read_text())["model_sha256"]
    assert side["model"]["input_name"] == "image"
    assert trt.recorder.network_flags == [1 << 1] and trt.recorder.builder_flags == []
    assert trt.recorder.workspace == 1 << 30 and trt.recorder.opt_level == 4
    assert trt.recorder.timing_cache_in == b""
    assert first.timing_cache.read_bytes() == b"+timings"
    # the engine file is the plan alone, no header of ours (trtexec and Triton load it)
    assert json.loads(first.path.read_bytes())["fake_engine"] == "11.0.0"

    with pytest.raises(UserError, match="already exists; pass --force"):
        build_engine(EngineOptions(model=model), trt=trt, cuda=cuda)
    build_engine(EngineOptions(model=model, force=True), trt=trt, cuda=cuda)
    assert trt.recorder.timing_cache_in == b"+timings"  # loaded from the first build


def test_weak_fp16_on_trt10_and_refusal_on_trt11(model):
    trt, cuda = fakes("10.3.0", legacy=True)
    result = build_engine(EngineOptions(model=model, precision="fp16"), trt=trt, cuda=cuda)
    assert result.path.name == "net.fp16.engine" and result.sidecar["typing"] == "weak"
    assert trt.recorder.network_flags == [0] and trt.recorder.builder_flags == ["FP16"]
    trt11, cuda11 = fakes("11.0.0", legacy=False)
    with pytest.raises(UserError, match="run `msdeploy quantize"):
        build_engine(EngineOptions(model=model, precision="fp16", force=True), trt=trt11, cuda=cuda11)
    assert trt11.recorder.builds == 0


def test_fp16_graph_builds_strongly_typed_without_flags(model):
    trt, cuda = fakes("10.3.0", legacy=True)
    result = build_engine(EngineOptions(model=with_precision(model, "fp16")), trt=trt, cuda=cuda)
    assert result.path.name == "net.fp16.engine" and result.sidecar["precision"] == "fp16"
    assert trt.recorder.network_flags == [1 << 1] and trt.recorder.builder_flags == []


def test_implicit_int8_calibrates_once_then_reuses_its_cache_and_refuses_a_stale_one(model, tmp_path):
    calib = tmp_path / "calib"
    write_dataset(calib, 5, size=(64, 64), seed=3)
    trt, cuda = fakes("10.3.0", legacy=True)
    options = EngineOptions(model=model, precision="int8", calib_data=calib / "images", calib_count=4)
    first = build_engine(options, trt=trt, cuda=cuda)
    assert trt.recorder.builder_flags == ["INT8", "FP16"] and trt.recorder.calibration_batches == 4
    assert trt.recorder.calibration_profile == ((1, 3, 352, 352),) * 3
    assert first.calibration_cache_reused is False

    trt2, cuda2 = fakes("10.3.0", legacy=True)
    second = build_engine(EngineOptions(**{**options.__dict__, "force": True}), trt=trt2, cuda=cuda2)
    assert second.calibration_cache_reused is True
    assert trt2.recorder.calibration_cache_read and trt2.recorder.calibration_batches == 0

    with pytest.raises(UserError, match="needs calibration images"):  # the cache key needs the images' fingerprint
        build_engine(EngineOptions(model=model, precision="int8", force=True), trt=trt2, cuda=cuda2)
    with pytest.raises(UserError, match=r"stale.*count \(4 in the cache, 5 now\)"):
        build_engine(EngineOptions(**{**options.__dict__, "calib_count": 5, "force": True}), trt=trt2, cuda=cuda2)


def test_dla_needs_a_core_and_low_precision_and_falls_back_to_gpu(model):
    trt, cuda = fakes("10.3.0", legacy=True, dla_cores=2)
    with pytest.raises(UserError, match="DLA runs FP16 and INT8 only"):
        build_engine(EngineOptions(model=model, dla_core=0), trt=trt, cuda=cuda)
    built = build_engine(EngineOptions(model=model, precision="fp16", dla_core=1), trt=trt, cuda=cuda)
    assert trt.recorder.dla == (1,) and "GPU_FALLBACK" in trt.recorder.builder_flags
    assert trt.recorder.profiles[-1] == ((1, 3, 352, 352),) * 3  # DLA: one fixed shape
    predictor = Predictor(TensorRTRunner(str(built.path), trt=trt, cuda=cuda))
    assert predictor.size == (352, 352) and predictor.max_batch == 1  # images are resized to the one shape
    assert trt.recorder.parser_flags == []  # 10.3 has no ADJUST_FOR_DLA
    newer, cuda_newer = fakes("10.16.0", legacy=True, dla_cores=2, parser_flags=("ADJUST_FOR_DLA",))
    build_engine(EngineOptions(model=model, precision="fp16", force=True), trt=newer, cuda=cuda_newer)
    assert newer.recorder.parser_flags == []  # a GPU build leaves the parser alone
    build_engine(EngineOptions(model=model, precision="fp16", dla_core=0, force=True), trt=newer, cuda=cuda_newer)
    assert newer.recorder.parser_flags == ["ADJUST_FOR_DLA"]
    nano, cuda_nano = fakes("10.3.0", legacy=True, dla_cores=0)
    with pytest.raises(UserError, match="has 0 DLA core"):
        build_engine(EngineOptions(model=model, precision="fp16", dla_core=0, force=True), trt=nano, cuda=cuda_nano)


def test_a_builder_that_logs_an_error_as_it_starts_is_refused_before_use(model):
    """TensorRT 11's objects may come back half made, with the reason only in the log (see
    tests/runtime/test_tensorrt_lean.py for the real runtime); nothing is called on them."""
    trt, cuda = fakes("11.4.1", legacy=False)
    made = []

    def half_made(logger):
        logger.log(types.SimpleNamespace(name="ERROR"), "CUDA initialization failure with error: 35")
        made.append(object())
        return made[-1]

    trt.Builder = half_made
    with pytest.raises(UserError, match="could not start a builder: CUDA initialization failure with error: 35"):
        build_engine(EngineOptions(model=model), trt=trt, cuda=cuda)
    assert len(made) == 1 and not trt.recorder.network_flags  # create_network was never called


def test_parser_errors_and_missing_sidecar_are_reported(model, tmp_path):
    trt, cuda = fakes()
    bad = tmp_path / "bad.onnx"
    bad.write_text("{}")
    shutil.copy(sidecar_path(model), sidecar_path(bad))
    with pytest.raises(UserError, match="could not parse"):
        build_engine(EngineOptions(model=bad), trt=trt, cuda=cuda)
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(model, lonely)
    with pytest.raises(UserError, match="no sidecar"):
        build_engine(EngineOptions(model=lonely), trt=trt, cuda=cuda)


# ---- running ----


def ort_outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": x})


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_runner_moves_data_through_reused_buffers(model, cuda_graphs):
    trt, cuda = fakes()
    engine = build_engine(EngineOptions(model=model, max_shape=(2, 3, 256, 256)), trt=trt, cuda=cuda).path
    runner = TensorRTRunner(str(engine), trt=trt, cuda=cuda, cuda_graphs=cuda_graphs)
    assert [o.name for o in runner.outputs] == [o.name for o in ort.InferenceSession(str(model)).get_outputs()]
    rng = np.random.default_rng(0)
    small = rng.standard_normal((1, 3, 128, 160), dtype=np.float32)
    large = rng.standard_normal((2, 3, 192, 192), dtype=np.float32)
    for x in (small, small, large, small):
        got = runner.infer(x)
        for (name, value), want in zip(got.items(), ort_outputs(model, x)):
            np.testing.assert_allclose(value, want, rtol=0, atol=1e-5, err_msg=name)
        assert runner.last_gpu_ms == 1.5
    mallocs = [c for c in cuda.calls if c.startswith("malloc")]
    assert len(mallocs) == 2 * len(runner._buffers)  # grown once for `large`, reused for `small` after it
    if cuda_graphs:
        # captured for `small`, dropped when buffers grew, captured for `large`, then `small` again
        assert cuda.calls.count("capture_begin") == 3 and cuda.calls.count("graph_launch") == 4
        assert cuda.calls.count("graph_destroy") == 1
    runner.close()
    assert not cuda.memory


def test_runner_checks_inputs_against_the_profile_before_running(model):
    trt, cuda = fakes()
    engine = build_engine(EngineOptions(model=model, max_shape=(2, 3, 256, 256)), trt=trt, cuda=cuda).path
    runner = TensorRTRunner(str(engine), trt=trt, cuda=cuda)
    assert runner.max_batch() == 2 and runner.fixed_image_size() is None  # batches above 2 are split
    with pytest.raises(UserError, match=r"1x3x512x512; this engine's profile allows 1x3x128x128 to 2x3x256x256"):
        runner.infer(np.zeros((1, 3, 512, 512), np.float32))
    with pytest.raises(UserError, match="dtype float64"):
        runner.infer(np.zeros((1, 3, 128, 128)))
    assert "h2d" not in cuda.calls


def test_engine_from_another_tensorrt_or_gpu_is_refused_with_rebuild_advice(model):
    trt, cuda = fakes("10.3.0")
    engine = build_engine(EngineOptions(model=model), trt=trt, cuda=cuda).path
    newer, _ = fakes("10.7.0")
    with pytest.raises(UserError, match=r"built with TensorRT 10.3.0, this machine has 10.7.0.*msdeploy export engine"):
        TensorRTRunner(str(engine), trt=newer, cuda=cuda)
    other_gpu = FakeCuda(DeviceInfo("NVIDIA H200", "9.0"))
    with pytest.raises(UserError, match=r"Fake Orin \(compute capability 8.7\), this GPU is NVIDIA H200"):
        TensorRTRunner(str(engine), trt=trt, cuda=other_gpu)


def test_runtime_load_dispatches_engines_and_needs_their_sidecar(model, tmp_path):
    import runtime

    lonely = tmp_path / "x.engine"
    lonely.write_bytes(b"plan")
    with pytest.raises(UserError, match="no sidecar"):
        runtime.load(lonely)
    trt, cuda = fakes()
    engine = build_engine(EngineOptions(model=model), trt=trt, cuda=cuda).path
    runner = runtime.load(engine, trt=trt, cuda=cuda)
    assert runner.backend == "tensorrt" and runner.require_metadata().fusion == "hierarchical"


def test_cli_export_engine_with_the_fake(model, monkeypatch):
    import export.tensorrt_build as tb
    from msdeploy.cli import main

    trt, cuda = fakes("10.3.0")
    monkeypatch.setattr(tb, "import_tensorrt", lambda target=None: trt)
    monkeypatch.setattr(tb, "CudaApi", lambda: cuda)
    result = CliRunner().invoke(
        main, ["export", "engine", str(model), "--precision", "fp16", "--batch", "1,4", "--workspace", "2G"]
    )
    assert result.exit_code == 0, result.output
    assert "net.fp16.engine" in result.output and "1x3x128x128 / 1x3x352x352 / 4x3x1024x1024" in result.output
    assert trt.recorder.workspace == 2 << 30
    bad = CliRunner().invoke(main, ["export", "engine", str(model), "--min-shape", "1x3x352"])
    assert bad.exit_code == 2 and "must be Bx3xHxW" in bad.output


@pytest.mark.slow
def test_selftest_orchestration_with_the_fake(tmp_path, monkeypatch):
    """`msdeploy selftest --gpu` end to end on the fake: exports, FP16/INT8 variants, engines, parity
    against PyTorch (the fake runs each ONNX with ONNX Runtime) and the report. Checks the plumbing."""
    import export.tensorrt_build as tb
    import runtime.cuda
    import runtime.tensorrt_backend as tbe
    import runtime.tensorrt_common as tc
    from calibration.quantize import CALIBRATION_IMAGES
    from workflows.selftest import run_selftest

    trt, cuda = fakes("10.3.0")
    rtx = make_fake_tensorrt("1.7.1", rtx=True, cuda=cuda)  # installed too: its engines do not run on an Orin
    modules = {"tensorrt": trt, "tensorrt-rtx": rtx}
    for module in (tb, tbe, tc):
        monkeypatch.setattr(module, "import_tensorrt", lambda target=None: modules[target or "tensorrt"])
    monkeypatch.setattr(tc, "installed_targets", lambda: list(modules))
    for module in (tb, tbe, runtime.cuda):
        monkeypatch.setattr(module, "CudaApi", lambda: cuda)
    result = run_selftest(tmp_path / "work", tmp_path / "results", ("hierarchical",), 3, "test", cuda_graphs=True)
    passed = result.passed
    assert result.report == tmp_path / "results" / "tensorrt-selftest-fake-orin.md"
    report = json.loads((tmp_path / "results" / "tensorrt-selftest-fake-orin.json").read_text())
    legacy = ["fp16 (builder flag)", "int8 (implicit calibrator)"]  # TensorRT 10 still has both
    rows = report["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8", *legacy, "fp32", "fp16", "int8"]
    assert {r["builder"] for r in rows[5:]} == {"TensorRT-RTX 1.7.1"} and not any(r["ran"] for r in rows[5:])
    assert passed and all(r["parity_passed"] for r in rows[:5])
    assert rows[0]["mask_iou_min"] >= 0.99  # FP32 engine masks (runtime.Predictor) vs PyTorch
    md = (tmp_path / "results" / "tensorrt-selftest-fake-orin.md").read_text()
    assert md.count("| hierarchical |") == 8 and md.count("built, not run on this GPU") == 3
    assert trt.recorder.calibration_batches == CALIBRATION_IMAGES and "FP16" in trt.recorder.builder_flags
    assert rtx.recorder.builds == 3 and rtx.recorder.timing_cache_calls == 0


def test_selftest_checks_the_legacy_builds_only_where_tensorrt_has_them(tmp_path):
    from workflows.selftest import engine_variants

    paths = [tmp_path / f"m{suffix}.onnx" for suffix in ("", ".fp16", ".int8")]
    labels = {
        version: [
            v.label
            for v in engine_variants(
                TensorRTFeatures.detect(fakes(version, legacy=legacy)[0]), tmp_path, "absi", *paths
            )
        ]
        for version, legacy in (("10.3.0", True), ("11.4.1", False))
    }
    assert labels["11.4.1"] == ["fp32", "fp16", "int8"]
    assert labels["10.3.0"] == ["fp32", "fp16", "int8", "fp16 (builder flag)", "int8 (implicit calibrator)"]
    outputs = [v.output.name for v in engine_variants(TensorRTFeatures.detect(fakes()[0]), tmp_path, "absi", *paths)]
    assert len(set(outputs)) == len(outputs)  # no engine overwrites another


# ---- TensorRT-RTX engines (the real builder: tests/export/test_tensorrt_rtx.py; running them needs a GPU) ----

RTX_GPU = DeviceInfo("NVIDIA GeForce RTX 4070", "8.9", 12 << 30, False)


def test_rtx_build_targets_compute_capabilities_without_a_timing_cache(model):
    trt, _ = fakes("1.7.1", rtx=True)
    no_gpu = FakeCuda()
    no_gpu.device = lambda: (_ for _ in ()).throw(UserError("no usable CUDA GPU: cudaError 35"))
    result = build_engine(EngineOptions(model=model, compute_capabilities=("8.6", "12.0")), trt=trt, cuda=no_gpu)
    assert trt.recorder.compute_capabilities == ["SM86", "SM120"]
    assert trt.recorder.timing_cache_calls == 0 and result.timing_cache is None  # it would force a GPU query
    side = result.sidecar
    assert side["target"] == "tensorrt-rtx" and side["gpu"] is None and side["compute_capabilities"] == ["8.6", "12.0"]
    assert side["memory"]["activation_bytes"] == 300 << 20 and side["memory"]["weights_bytes"] == 1 << 20
    assert any("running it needs RTX-class GPUs" in n for n in result.notes)
    with pytest.raises(UserError, match="no usable CUDA GPU"):  # 'current' is the GPU of this machine
        build_engine(EngineOptions(model=model, compute_capabilities=("current",), force=True), trt=trt, cuda=no_gpu)
    trt10, cuda10 = fakes("10.3.0")
    with pytest.raises(UserError, match="compute-capability targets are for --target tensorrt-rtx"):
        build_engine(EngineOptions(model=model, compute_capabilities=("8.6",), force=True), trt=trt10, cuda=cuda10)
    with pytest.raises(UserError, match="--target tensorrt-rtx asked, but the TensorRT module given is TensorRT 10"):
        build_engine(EngineOptions(model=model, target="tensorrt-rtx", force=True), trt=trt10, cuda=cuda10)


def test_rtx_engine_runs_with_a_runtime_cache_kept_beside_it(model):
    from runtime.tensorrt_backend import runtime_cache_path

    trt, cuda = fakes("1.7.1", rtx=True, device=RTX_GPU)
    engine = build_engine(EngineOptions(model=model, max_shape=(1, 3, 256, 256)), trt=trt, cuda=cuda).path
    assert json.loads(sidecar_path(engine).read_text())["gpu"]["name"] == RTX_GPU.name  # built where a GPU was
    x = np.random.default_rng(1).standard_normal((1, 3, 160, 192), dtype=np.float32)
    first = TensorRTRunner(str(engine), trt=trt, cuda=cuda)
    assert first.engine.runtime_config.cache is first._runtime_cache  # the context compiles into our cache
    np.testing.assert_allclose(first.infer(x)["mask_logits"], ort_outputs(model, x)[0], atol=1e-5)
    first.close()
    cache = runtime_cache_path(engine)
    assert cache.read_bytes() == b"rtx-kernels+compiled" and trt.recorder.runtime_cache_in is None
    second = TensorRTRunner(str(engine), trt=trt, cuda=cuda)  # the kernels compiled last time are loaded
    assert trt.recorder.runtime_cache_in == b"rtx-kernels+compiled"
    second.close()


def test_rtx_engine_on_a_gpu_it_was_not_built_for_is_refused_with_the_fix(model):
    trt, _ = fakes("1.7.1", rtx=True)
    engine = build_engine(EngineOptions(model=model), trt=trt, cuda=FakeCuda(RTX_GPU)).path
    turing = FakeCuda(DeviceInfo("NVIDIA GeForce RTX 2080", "7.5"))
    with pytest.raises(UserError, match=r"8.6, 8.9, 12.0, 12.1; this GPU is .*--compute-capability 7.5 --force"):
        TensorRTRunner(str(engine), trt=trt, cuda=turing)
    with pytest.raises(UserError, match=r"not one TensorRT-RTX 1.7.1 builds for.*--target tensorrt"):
        TensorRTRunner(str(engine), trt=trt, cuda=FakeCuda(DeviceInfo("NVIDIA H200", "9.0")))
    plain, cuda = fakes("1.7.1")  # a TensorRT module of the same version: not the engine's builder
    with pytest.raises(UserError, match="is a TensorRT-RTX engine, but the module given is TensorRT 1.7.1"):
        TensorRTRunner(str(engine), trt=plain, cuda=cuda)


def test_memory_budget_from_the_option_the_board_or_the_gpu(model):
    from export.boards import BOARDS

    huge = 4 << 30
    trt, cuda = fakes("10.3.0", activation_bytes=huge, device=RTX_GPU)
    with pytest.raises(UserError, match=r"needs 4.00 GiB .*budget is 3.00 GiB \(board orin-nano.*Nothing was written"):
        build_engine(EngineOptions(model=model, board="orin-nano"), trt=trt, cuda=cuda)
    with pytest.raises(UserError, match=r"budget is 1.00 GiB \(--memory-budget\)"):
        build_engine(EngineOptions(model=model, memory_budget=1 << 30), trt=trt, cuda=cuda)
    assert not list(model.parent.glob("*.engine*"))
    fits = build_engine(EngineOptions(model=model, board="agx-orin"), trt=trt, cuda=cuda)  # 24 GiB
    assert fits.sidecar["settings"]["memory_budget"]["bytes"] == BOARDS["agx-orin"].budget
    # no option: 90% of a desktop GPU's memory (12 GiB here), 3/8 of a Jetson's shared memory
    default = build_engine(EngineOptions(model=model, force=True), trt=trt, cuda=cuda).sidecar["settings"]
    assert default["memory_budget"]["bytes"] == int(0.9 * (12 << 30))
    orin = FakeCuda(DeviceInfo("Orin", "8.7", 8 << 30, True))
    with pytest.raises(UserError, match=r"budget is 3.00 GiB \(38% of Orin's memory\)"):
        build_engine(EngineOptions(model=model, force=True), trt=trt, cuda=orin)
    # an ahead-of-time TensorRT-RTX engine is for other GPUs: the build machine's memory is no budget
    rtx, _ = fakes("1.7.1", rtx=True, activation_bytes=huge, device=RTX_GPU)
    aot = build_engine(EngineOptions(model=model, output=model.with_name("aot.engine")), trt=rtx, cuda=cuda)
    assert aot.sidecar["settings"]["memory_budget"] is None and any("no memory budget" in n for n in aot.notes)
    with pytest.raises(UserError, match=r"budget is 1.00 GiB \(--memory-budget\)"):
        build_engine(EngineOptions(model=model, memory_budget=1 << 30, force=True), trt=rtx, cuda=cuda)


def test_build_report_from_the_builder_log(model):
    from export.engine_report import parse_layers

    rtx_line = (
        "Name: node_conv2d_69_myl0_11, LayerType: correlation, Inputs: [ { Name: x, Dimensions: [-1,32,-1,-1], "
        "Datatype: Int8, Format: (Linear) }], Constants: [ { Name: w, Dimensions: [32,32,8,8], Datatype: Int8, "
        "Format: (NHWC) }, { Name: b, Dimensions: [1,32,1,1], Datatype: Float, Format: (NHWC) }], Outputs: [ { "
        "Name: y, Dimensions: [-1,32,-1,-1], Datatype: Half, Format: (NHWC) }], TacticName: __myelin_CASK_STUB, "
        "StreamId: 0, Metadata: [ONNX Layer: node_conv2d_69][ONNX Layer: node_add_1]"
    )
    # TensorRT's format, as public TensorRT 8-10 build logs show it
    trt_line = (
        "Layer(CaskConvolution): conv1 + relu1, Tactic: 0x47, input[Half(1,1,28,28)] -> "
        "(Unnamed Layer* 1) [Activation]_output[Half(1,32,28,28)]"
    )
    layers = parse_layers([f"Layers:\n{rtx_line}\nI/O Tensors:\n", f"Engine Layer Information:\n{trt_line}"])
    assert [(la.kind, la.inputs, la.weights, la.outputs, la.onnx_nodes) for la in layers] == [
        ("correlation", ("Int8",), ("Int8", "Float"), ("Half",), ("node_conv2d_69", "node_add_1")),
        ("CaskConvolution", ("Half",), (), ("Half",), ("conv1", "relu1")),
    ]
    assert [la.precision for la in layers] == ["Int8", "Half"]

    trt, cuda = fakes("1.7.1", rtx=True)
    result = build_engine(EngineOptions(model=model, report=True), trt=trt, cuda=FakeCuda(RTX_GPU))
    md = result.report_files[0].read_text()
    assert "| activation memory | 300.00 MiB |" in md and "printed none for this build" in md
    assert json.loads(result.report_files[1].read_text())["memory"]["weights_bytes"] == 1 << 20


def test_rtx_current_targets_this_gpu_and_default_builds_run_on_newer_ones(model):
    trt, cuda = fakes("1.7.1", rtx=True, device=RTX_GPU)
    here = build_engine(EngineOptions(model=model, compute_capabilities=("current",)), trt=trt, cuda=cuda)
    assert here.sidecar["compute_capabilities"] == ["8.9"] and trt.recorder.compute_capabilities == ["CURRENT"]
    TensorRTRunner(str(here.path), trt=trt, cuda=cuda).close()
    mixed = EngineOptions(model=model, compute_capabilities=("current", "8.6"), force=True)
    with pytest.raises(UserError, match="current stands alone"):
        build_engine(mixed, trt=trt, cuda=cuda)
    with pytest.raises(UserError, match="--board orin-nano: the board presets are Jetson boards"):
        build_engine(EngineOptions(model=model, board="orin-nano", force=True), trt=trt, cuda=cuda)
    # the builder's default set also runs on GPUs newer than its newest target, an explicit list does not
    default = build_engine(EngineOptions(model=model, force=True), trt=trt, cuda=cuda).path
    newer = FakeCuda(DeviceInfo("NVIDIA next", "13.0"))
    runner = TensorRTRunner(str(default), trt=trt, cuda=newer)
    runner.close()
    listed = build_engine(EngineOptions(model=model, compute_capabilities=("8.9",), force=True), trt=trt, cuda=cuda)
    with pytest.raises(UserError, match="built for compute capabilities 8.9"):
        TensorRTRunner(str(listed.path), trt=trt, cuda=newer)


def test_engine_sidecars_from_before_tensorrt_rtx_still_load(model):
    """Sidecars written before the builder was named: no target, memory or compute capabilities."""
    trt, cuda = fakes("10.3.0")
    engine = build_engine(EngineOptions(model=model), trt=trt, cuda=cuda).path
    side = json.loads(sidecar_path(engine).read_text())
    for key in ("target", "memory", "compute_capabilities"):
        del side[key]
    del side["settings"]["memory_budget"], side["settings"]["compute_capabilities_asked"]
    sidecar_path(engine).write_text(json.dumps(side))
    runner = TensorRTRunner(str(engine), trt=trt, cuda=cuda)
    assert runner.features.target == "tensorrt" and runner.infer(np.zeros((1, 3, 128, 128), np.float32))
    runner.close()
