"""The `openvino-cpu` backend: our ONNX files on OpenVINO's CPU plugin, behind the same runner interface
(`open_runner`, `runtime.load`, `Predictor`, `msdeploy infer`, `msdeploy bench`, `msdeploy parity`),
with BF16 where the CPU computes it natively, the model cache, and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import runtime
from calibration.metrics import mask_iou
from calibration.synthetic import make_sample
from msdeploy.cli import main
from runtime import openvino_backend
from runtime.compare import TOLERANCES, compare
from runtime.cpu_features import CpuFeatures, cpu_features, parse_flags
from runtime.errors import UserError
from tests.helpers import DEMO_WEIGHTS, copy_model

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")

NEEDS_BF16 = pytest.mark.skipif(
    not cpu_features().bf16, reason="this CPU has neither AVX-512 BF16 nor AMX: OpenVINO would not run BF16 natively"
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Compiled models go to a folder of the test session, never the user's cache."""
    monkeypatch.setenv(openvino_backend.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "openvino-cache"))


def test_cpu_flags_decide_the_default_precision(monkeypatch):
    text = "processor : 0\nflags : fpu avx2 avx512f avx512_vnni avx512_bf16\nbugs : none\n"
    found = parse_flags(text)
    assert found == CpuFeatures(avx512_bf16=True, avx512_vnni=True) and found.bf16 and found.int8
    assert parse_flags("no flags here") == CpuFeatures() and not CpuFeatures().bf16
    assert "amx_bf16" in CpuFeatures(amx_bf16=True).describe()

    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: CpuFeatures(avx512_vnni=True))
    assert openvino_backend.resolve_inference_precision("auto") == "f32"
    with pytest.raises(UserError, match="neither AVX-512 BF16 nor AMX.*--inference-precision f32"):
        openvino_backend.resolve_inference_precision("bf16")
    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: CpuFeatures(amx_bf16=True))
    assert openvino_backend.resolve_inference_precision(None) == "bf16"
    with pytest.raises(UserError, match="not one of auto, bf16, f32"):
        openvino_backend.resolve_inference_precision("fp16")


def test_fp32_agrees_with_onnxruntime_and_compiles_once_per_shape(exported):
    model = exported["absi"]
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 128), dtype=np.float32)
    with runtime.open_runner(model, "onnxruntime-cpu") as ort_runner:
        want = ort_runner.infer(x)
    runner = runtime.load(model, backend="openvino-cpu", inference_precision="f32", threads=2)
    assert runner.backend == "openvino-cpu" and runner.inference_precision == "f32"
    assert runner.metadata.fusion == "absi"  # the file's own metadata
    assert [s.name for s in runner.inputs] == ["image"] and runner.inputs[0].shape == (None, 3, None, None)
    got = runner.infer(x)
    assert list(got) == list(want)  # every output (mask logits and fused features), by name
    for name in want:
        assert compare(got[name], want[name], TOLERANCES["fp32"]).passed, name
    first = runner.compile_seconds
    runner.infer(x)
    assert runner.compile_seconds == first  # the same shape reuses its compiled model
    runner.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert runner.compile_seconds > first and len(runner._static) == 2
    runner.close()

    again = runtime.open_runner(model, "openvino-cpu", inference_precision="f32", threads=2)
    again.infer(x)
    assert again.from_cache  # the compiled blob came from OpenVINO's model cache
    again.close()


def test_metadata_without_a_sidecar_comes_from_the_onnx_file(exported, tmp_path):
    bare = tmp_path / "copied.onnx"
    bare.write_bytes(exported["absi"].read_bytes())  # no sidecar beside it
    with runtime.open_runner(bare, "openvino-cpu", inference_precision="f32") as runner:
        assert runner.metadata.fusion == "absi" and runner.metadata.backbone == "pvt_v2_b0"


@NEEDS_BF16
def test_bf16_passes_its_parity_check_and_keeps_the_demo_masks(exported):
    """The demo checkpoint (hierarchical) run in BF16: parity against PyTorch with the BF16 tolerance,
    and masks on held-out synthetic images that agree with ONNX Runtime FP32's."""
    from export.parity import check_model_parity

    report = check_model_parity(
        exported["hierarchical"], ((256, 256),), (1,), DEMO_WEIGHTS, "openvino-cpu", inference_precision="bf16"
    )
    assert report.precision == "bf16" and report.backend == "openvino-cpu"
    assert report.passed, report.summary()
    bf16 = runtime.Predictor(exported["hierarchical"], backend="openvino-cpu", inference_precision="bf16")
    fp32 = runtime.Predictor(exported["hierarchical"], backend="onnxruntime-cpu")
    rng = np.random.default_rng(10_000)
    scores = []
    for size in ((352, 352), (300, 400), (256, 256)):
        image = make_sample(rng, size).image
        scores.append(mask_iou(bf16.predict(image).mask, fp32.predict(image).mask))
    assert min(scores) >= 0.98, scores


def test_an_fp16_file_runs_and_is_judged_by_the_precision_its_floats_run_in(fp16_absi):
    """An FP16 file on openvino-cpu: its floats run in the CPU's default precision (BF16 where native),
    and parity against PyTorch uses that precision's tolerance."""
    from export.parity import check_model_parity

    _, fp16 = fp16_absi
    report = check_model_parity(fp16.path, ((96, 96),), (1,), None, "openvino-cpu")
    assert report.precision == ("bf16" if cpu_features().bf16 else "fp16")
    assert report.passed, report.summary()


def test_refusals_name_the_fix(exported, tmp_path):
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="is a TensorRT engine; openvino-cpu runs the .onnx"):
        runtime.open_runner(engine, "openvino-cpu")
    with pytest.raises(UserError, match="applies to openvino-cpu only"):
        runtime.open_runner(exported["absi"], "onnxruntime-cpu", inference_precision="bf16")
    with pytest.raises(UserError, match="applies to openvino-cpu only"):
        runtime.load(exported["absi"], inference_precision="f32")
    with pytest.raises(UserError, match="providers apply only when the backend is chosen by file type"):
        runtime.load(exported["absi"], backend="onnxruntime-cpu", providers=["CPUExecutionProvider"])
    with pytest.raises(UserError, match="model file not found"):
        runtime.open_runner(tmp_path / "missing.onnx", "openvino-cpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(UserError, match="OpenVINO cannot read"):
        runtime.open_runner(broken, "openvino-cpu")


def test_infer_and_bench_commands_take_the_backend(exported, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i, size in enumerate(((120, 160), (96, 96))):
        Image.fromarray(make_sample(rng, size).image).save(photos / f"p{i}.png")
    masks = {}
    for backend in ("onnxruntime-cpu", "openvino-cpu"):
        out = tmp_path / backend
        args = ["infer", str(exported["absi"]), str(photos), "-o", str(out), "--backend", backend, "--size", "96x96"]
        args += ["--inference-precision", "f32"] if backend == "openvino-cpu" else []
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        masks[backend] = [np.asarray(Image.open(out / f"p{i}_mask.png")) > 127 for i in range(2)]
    assert "openvino-cpu (f32)" in (tmp_path / "openvino-cpu" / "summary.json").read_text()
    for a, b in zip(masks["onnxruntime-cpu"], masks["openvino-cpu"]):
        assert mask_iou(a, b) >= 0.99

    models = tmp_path / "models"
    models.mkdir()
    copy_model(exported["absi"], models / exported["absi"].name)
    args = ["bench", "--backends", "openvino-cpu,onnxruntime-cpu", "--precision", "fp32,bf16", "--models", str(models)]
    args += ["--fusion", "absi", "--sizes", "64", "--iters", "1", "--warmup", "0", "--no-tables"]
    result = CliRunner().invoke(main, [*args, "--backbone", "pvt_v2_b0", "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "bench-pvt_v2_b0.json").read_text())
    rows = {(r["case"]["backend"], r["case"]["precision"]): r for r in report["results"]}
    assert rows[("openvino-cpu", "fp32")]["stats"]["median_ms"] > 0
    assert "floats in f32" in rows[("openvino-cpu", "fp32")]["timing"]
    assert rows[("onnxruntime-cpu", "bf16")]["skipped"].startswith("bf16 runs on openvino-cpu")
    if cpu_features().bf16:
        assert "floats in bf16" in rows[("openvino-cpu", "bf16")]["timing"]


def test_info_reports_the_cpu_extensions():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0 and "CPU extensions:" in result.output and "openvino-cpu" in result.output
