"""`msdeploy export triton`: model-repository entries whose config.pbtxt follows Triton's schema
(tritonclient's model_config_pb2) and matches the model's own inputs and outputs."""

from __future__ import annotations

import json
import sys

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from msdeploy.cli import main
from runtime.errors import UserError
from runtime.metadata import read_sidecar
from runtime.tensorrt_common import ENGINE_FORMAT
from serving.model_repository import TritonOptions, validate_config, write_triton_model

pytest.importorskip("tritonclient.grpc", reason="the [serve] extra (tritonclient) holds Triton's config schema")
from tritonclient.grpc import model_config_pb2  # noqa: E402


def test_onnx_entry_follows_the_schema_and_the_model(exported, tmp_path):
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        main, ["export", "triton", str(exported["hierarchical"]), "--repository", str(repo), "--name", "cod"]
    )
    assert result.exit_code == 0, result.output
    config = validate_config((repo / "cod" / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert (repo / "cod" / "1" / "model.onnx").read_bytes() == exported["hierarchical"].read_bytes()
    # names and per-sample dims agree with what ONNX Runtime reports (batch axis implicit in Triton)
    session = ort.InferenceSession(str(repo / "cod" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, node in zip(declared, actual):
            assert len(tensor.dims) == len(node.shape) - 1
            assert all(d == -1 or d == n for d, n in zip(tensor.dims, node.shape[1:]) if isinstance(n, int))
    assert list(config.output[1].dims) == [32, -1, -1]  # fused_s4 of pvt_v2_b0

    again = CliRunner().invoke(main, ["export", "triton", str(exported["hierarchical"]), "--repository", str(repo)])
    assert again.exit_code == 0  # another name: fine
    clash = CliRunner().invoke(
        main, ["export", "triton", str(exported["absi"]), "--repository", str(repo), "--name", "cod"]
    )
    assert clash.exit_code == 2 and "pass --force" in clash.output
    forced = CliRunner().invoke(
        main,
        ["export", "triton", str(exported["absi"]), "--repository", str(repo), "--name", "cod", "--force",
         "--no-dynamic-batching", "--instances", "2", "--kind", "cpu"],
    )  # fmt: skip
    assert forced.exit_code == 0, forced.output
    config = validate_config((repo / "cod" / "config.pbtxt").read_text())
    assert not config.HasField("dynamic_batching") and config.instance_group[0].count == 2
    assert sorted(p.name for p in repo.iterdir()) == ["cod", "pvt_v2_b0_hierarchical"]  # no staging left


def test_engine_entry_respects_the_profile(exported, tmp_path):
    engine = tmp_path / "net.fp16.engine"
    engine.write_bytes(b"plan")  # only the sidecar is read
    meta = read_sidecar(exported["absi"])
    profile = {"input": "image", "min": [1, 3, 128, 128], "opt": [1, 3, 352, 352], "max": [4, 3, 1024, 1024]}
    (tmp_path / "net.fp16.engine.json").write_text(
        json.dumps({"format": ENGINE_FORMAT, "model": meta, "profile": profile})
    )
    result = write_triton_model(TritonOptions(model=engine, repository=tmp_path / "repo", max_batch_size=4))
    config = validate_config(result.config.read_text())
    assert config.platform == "tensorrt_plan" and result.model_file.name == "model.plan" and result.validated
    with pytest.raises(UserError, match="exceeds the engine profile's largest batch"):
        write_triton_model(TritonOptions(model=engine, repository=tmp_path / "r2", max_batch_size=8))
    rtx = {"format": ENGINE_FORMAT, "target": "tensorrt-rtx", "model": meta, "profile": profile}
    (tmp_path / "net.fp16.engine.json").write_text(json.dumps(rtx))
    with pytest.raises(UserError, match="tensorrt-rtx engine, which Triton's tensorrt_plan backend cannot load"):
        write_triton_model(TritonOptions(model=engine, repository=tmp_path / "r3", max_batch_size=4))


def test_schema_check_rejects_a_broken_config():
    with pytest.raises(UserError, match="model-config schema"):
        validate_config('name: "x"\nmax_batch_size: "eight"\n')


def test_python_backend_entry(exported, tmp_path):
    """Encoded image in, mask out: our runtime in Triton's Python backend, run in this environment."""
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        main,
        ["export", "triton", str(exported["absi"]), "--repository", str(repo), "--name", "cod",
         "--backend", "python", "--threads", "2", "--threshold", "0.4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = validate_config((repo / "cod" / "config.pbtxt").read_text())
    assert config.backend == "python" and not config.platform
    assert [(t.name, t.data_type) for t in config.input] == [("image", model_config_pb2.TYPE_STRING)]
    assert [t.name for t in config.output] == ["mask", "probability"]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert params == {"model_file": "model.onnx", "threshold": "0.4", "threads": "2", "EXECUTION_ENV_PATH": sys.prefix}
    assert "TritonPythonModel" in (repo / "cod" / "1" / "model.py").read_text()
    assert (repo / "cod" / "1" / "model.onnx.json").is_file()  # the runtime reads the model's metadata from it

    with pytest.raises(UserError, match="--max-batch-size must be >= 1"):
        write_triton_model(TritonOptions(exported["absi"], tmp_path / "r2", backend="python", max_batch_size=0))
    with pytest.raises(UserError, match="has no bin/activate"):
        write_triton_model(TritonOptions(exported["absi"], tmp_path / "r3", backend="python", python_env=tmp_path))
    # an NGC image whose own Python has the package: no EXECUTION_ENV_PATH, and a note that says so
    ngc = write_triton_model(TritonOptions(exported["absi"], tmp_path / "r4", backend="python", server_python=True))
    assert "EXECUTION_ENV_PATH" not in validate_config(ngc.config.read_text()).parameters
    assert any("server's own Python" in note for note in ngc.notes)


def test_openvino_entry_for_cpu_servers(exported, tmp_path):
    """Triton's OpenVINO backend: the same tensors, CPU instances, latency settings and BF16 as asked.
    Checked against the schema only: the server bundled with nvidia-pytriton has no OpenVINO backend."""
    repo = tmp_path / "repo"
    result = write_triton_model(
        TritonOptions(
            model=exported["absi"],
            repository=repo,
            name="cod",
            backend="openvino",
            threads=4,
            inference_precision="bf16",
        )
    )
    config = validate_config(result.config.read_text())
    assert config.backend == "openvino" and not config.platform and result.validated
    assert config.default_model_filename == "model.onnx" and result.model_file.name == "model.onnx"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": "4",
        "HINT_BF16": "YES",
    }
    assert [t.name for t in config.input] == ["image"] and config.output[0].name == "mask_logits"

    plain = write_triton_model(TritonOptions(model=exported["absi"], repository=repo, name="cod2", backend="openvino"))
    assert "HINT_BF16" not in plain.config.read_text()  # the server CPU's own default
    with pytest.raises(UserError, match="none for FP32"):
        write_triton_model(
            TritonOptions(
                model=exported["absi"], repository=repo, name="x", backend="openvino", inference_precision="f32"
            )
        )
    with pytest.raises(UserError, match="runs on CPU instances"):
        write_triton_model(
            TritonOptions(model=exported["absi"], repository=repo, name="g", backend="openvino", kind="gpu")
        )
    with pytest.raises(UserError, match="applies to --backend openvino only"):
        write_triton_model(TritonOptions(model=exported["absi"], repository=repo, name="y", inference_precision="bf16"))
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "net.engine.json").write_text(
        json.dumps({"format": ENGINE_FORMAT, "model": read_sidecar(exported["absi"])})
    )
    with pytest.raises(UserError, match="OpenVINO backend serves .onnx models"):
        write_triton_model(TritonOptions(model=engine, repository=repo, name="z", backend="openvino"))
