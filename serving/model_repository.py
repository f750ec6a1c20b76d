"""`msdeploy export triton`: a Triton Inference Server model repository entry for an exported model.

Three kinds of entry, all `<repository>/<name>/config.pbtxt` plus version `1/`:
- native (`--backend native`): `1/model.onnx` (platform `onnxruntime_onnx`) or `1/model.plan`
  (platform `tensorrt_plan`), tensors in and out, what GPU servers running NVIDIA's Triton
  containers load. Inputs, outputs, dtypes and dynamic sizes come from the model's metadata.
- OpenVINO (`--backend openvino`): the same tensors, `1/model.onnx` served by Triton's OpenVINO
  backend on CPU instances (x86 servers without a GPU). The server bundled with nvidia-pytriton has
  no OpenVINO backend, so these entries are checked against the schema only, never loaded here.
- Python backend (`--backend python`): `1/model.py` wrapping `runtime.Predictor`, encoded image
  in, mask and probabilities out (see serving.triton_python_model); the server bundled with
  nvidia-pytriton serves it on a CPU. Its config names the Python environment the backend runs
  in (`EXECUTION_ENV_PATH`), which must hold this package and numpy < 2.
The config is checked against Triton's model-config schema (`tritonclient`'s `model_config_pb2`)
when tritonclient is installed. Torch-free and onnx-free.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from runtime.errors import UserError
from runtime.files import move_dir_into_place
from runtime.metadata import ENGINE_SUFFIXES, ONNX_SUFFIXES, ModelMetadata, read_model_metadata, sidecar_path

PLATFORMS = {
    **{suffix: ("onnxruntime_onnx", "model.onnx") for suffix in ONNX_SUFFIXES},
    **{suffix: ("tensorrt_plan", "model.plan") for suffix in ENGINE_SUFFIXES},
}
DEFAULT_QUEUE_DELAY_US = 100  # how long the scheduler may hold a request to form a batch
TRITON_BACKENDS = ("native", "openvino", "python")  # Triton backends an entry is served by
INSTANCE_KINDS = ("auto", "gpu", "cpu")  # auto: gpu, except a Python-backend ONNX model
PYTHON_MODEL = """\
# Written by `msdeploy export triton --backend python`: Triton's Python backend loads this file;
# the model itself (decode, preprocess, network, masks) lives in serving.triton_python_model.
from serving.triton_python_model import TritonPythonModel  # noqa: F401
"""


@dataclass
class TritonOptions:
    model: Path  # an .onnx or .engine written by msdeploy (with its sidecar)
    repository: Path
    name: str | None = None  # default: the model file's stem
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "auto"  # instance kind: gpu, cpu, or auto (gpu, except a Python-backend ONNX model)
    dynamic_batching: bool = True
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    backend: str = "native"  # native (onnxruntime_onnx / tensorrt_plan) or python (images in, masks out)
    # Python backend only:
    python_env: Path | None = None  # EXECUTION_ENV_PATH; default: the running environment
    server_python: bool = False  # no EXECUTION_ENV_PATH: the server's own Python has our package (NGC image)
    threads: int | None = None  # ONNX Runtime / OpenVINO threads per instance (default: the library's)
    threshold: float = 0.5
    # OpenVINO backend: bf16 sets HINT_BF16; None leaves the server CPU's default (BF16 on AMX CPUs)
    inference_precision: str | None = None
    force: bool = False

    def instance_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        on_cpu = self.backend == "openvino" or (self.backend == "python" and self.model.suffix == ".onnx")
        return "cpu" if on_cpu else "gpu"


@dataclass
class TritonResult:
    folder: Path
    config: Path
    model_file: Path
    validated: bool  # parsed against Triton's schema (tritonclient installed)
    notes: list[str] = field(default_factory=list)


def _dims(meta: ModelMetadata) -> tuple[list[int], dict[str, list[int]]]:
    """Per-sample dims (no batch axis): [3, H, W] in, [1, H, W] mask and [C, H/s, W/s] feature maps out;
    -1 where the graph is dynamic."""
    h, w = meta.static_size or (-1, -1)
    outputs = {}
    for name in meta.outputs:
        if name == "mask_logits":
            outputs[name] = [1, h, w]
        else:
            match = re.fullmatch(r"fused_s(\d+)", name)
            level = [4, 8, 16, 32].index(int(match.group(1))) if match else None
            channels = meta.channels[level] if level is not None else -1
            stride = int(match.group(1)) if match else 1
            outputs[name] = [channels, -1 if h < 0 else h // stride, -1 if w < 0 else w // stride]
    return [3, h, w], outputs


def _tensors(section: str, tensors: list[tuple[str, str, list[int]]]) -> list[str]:
    body = ",\n".join(
        f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'
        for name, dtype, dims in tensors
    )
    return [f"{section} [", body, "]"]


def _parameters(values: dict[str, str]) -> list[str]:
    return [
        f"parameters {{\n  key: {json.dumps(key)}\n  value {{ string_value: {json.dumps(value)} }}\n}}"
        for key, value in values.items()
    ]


def model_config_text(name: str, platform: str, model_file: str, meta: ModelMetadata, options: TritonOptions) -> str:
    if options.backend == "python":
        head = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {options.max_batch_size}"]
        # one encoded image per batch entry in; mask (0/255) and probabilities at the image's size out
        tensors = _tensors("input", [("image", "TYPE_STRING", [1])]) + _tensors(
            "output", [("mask", "TYPE_UINT8", [-1, -1]), ("probability", "TYPE_FP32", [-1, -1])]
        )
    else:
        runs_on = 'backend: "openvino"' if options.backend == "openvino" else f'platform: "{platform}"'
        head = [
            f'name: "{name}"',
            runs_on,
            f'default_model_filename: "{model_file}"',
            f"max_batch_size: {options.max_batch_size}",
        ]
        inputs, outputs = _dims(meta)
        tensors = _tensors("input", [(meta.input_name, "TYPE_FP32", inputs)]) + _tensors(
            "output", [(out, "TYPE_FP32", dims) for out, dims in outputs.items()]
        )
    lines = head + tensors
    lines += [
        "instance_group [",
        f"  {{\n    count: {options.instances}\n    kind: KIND_{options.instance_kind().upper()}\n  }}",
        "]",
    ]
    if options.dynamic_batching and options.max_batch_size > 0:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {options.queue_delay_us}", "}"]
    if options.backend == "python":
        lines += _parameters(_python_parameters(model_file, options))
    if options.backend == "openvino":
        lines += _parameters(_openvino_parameters(options))
    return "\n".join(lines) + "\n"


def _openvino_parameters(options: TritonOptions) -> dict[str, str]:
    """Triton OpenVINO backend settings: one stream per instance tuned for latency (instances and
    dynamic batching give the throughput), threads and BF16 as asked."""
    values = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if options.threads:
        values["INFERENCE_NUM_THREADS"] = str(options.threads)
    if options.inference_precision == "bf16":
        values["HINT_BF16"] = "YES"
    return values


def _python_parameters(model_file: str, options: TritonOptions) -> dict[str, str]:
    values = {"model_file": model_file, "threshold": repr(options.threshold)}
    if options.threads:
        values["threads"] = str(options.threads)
    if options.python_env is not None:
        values["EXECUTION_ENV_PATH"] = str(options.python_env)
    return values


def default_python_env() -> Path | None:
    """The running environment when Triton's stub can activate it (a venv or conda env with
    bin/activate), so the served model imports this very install; else None."""
    prefix = Path(sys.prefix)
    return prefix if (prefix / "bin" / "activate").is_file() else None


def validate_config(text: str, source: str = "config.pbtxt"):
    """Parse `text` as Triton's ModelConfig; None when tritonclient is not installed."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(f"{source} does not follow Triton's model-config schema: {exc}") from exc


def _check(options: TritonOptions, meta: ModelMetadata, side: dict) -> None:
    if options.model.suffix not in PLATFORMS:
        raise UserError(f"{options.model}: Triton serves .onnx and .engine/.plan files; got {options.model.suffix!r}")
    if options.max_batch_size < 0 or options.instances < 1:
        raise UserError("--max-batch-size must be >= 0 and --instances >= 1")
    if options.kind not in INSTANCE_KINDS:
        raise UserError(f"--kind must be one of {', '.join(INSTANCE_KINDS)}, got {options.kind!r}")
    if options.backend not in TRITON_BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(TRITON_BACKENDS)}, got {options.backend!r}")
    if options.backend == "python":
        if options.max_batch_size < 1:
            raise UserError("the Python-backend model batches images: --max-batch-size must be >= 1")
        if not 0.0 < options.threshold < 1.0:
            raise UserError(f"--threshold {options.threshold} must lie strictly between 0 and 1")
        env = options.python_env
        if env is not None and options.server_python:
            raise UserError("give either --python-env or --server-python, not both")
        if env is not None and not (env / "bin" / "activate").is_file():
            raise UserError(
                f"--python-env {env} has no bin/activate; give a virtual environment (or conda env) that "
                "has multiscale-deploy[serve] installed"
            )
    if options.backend == "openvino":
        if options.model.suffix != ".onnx":
            raise UserError(f"{options.model}: Triton's OpenVINO backend serves .onnx models, not TensorRT engines")
        if options.instance_kind() != "cpu":
            raise UserError("Triton's OpenVINO backend runs on CPU instances: drop --kind gpu (or pass --kind cpu)")
        if options.inference_precision not in (None, "auto", "bf16"):
            raise UserError(
                "Triton's OpenVINO backend has a BF16 switch (HINT_BF16) but none for FP32: leave "
                "--inference-precision out (the server CPU's default) or pass bf16"
            )
    elif options.inference_precision:
        raise UserError("--inference-precision applies to --backend openvino only")
    if options.backend == "native" and side.get("target", "tensorrt") != "tensorrt":
        # Triton's tensorrt_plan backend links TensorRT, which cannot load a TensorRT-RTX plan
        raise UserError(
            f"{options.model} is a {side['target']} engine, which Triton's tensorrt_plan backend cannot load; "
            "serve it with --backend python (our runtime loads it), or build a TensorRT engine on the server: "
            "msdeploy export engine MODEL.onnx --target tensorrt"
        )
    profile = side.get("profile") if options.model.suffix != ".onnx" else None
    if profile and options.max_batch_size > profile["max"][0]:
        raise UserError(
            f"--max-batch-size {options.max_batch_size} exceeds the engine profile's largest batch "
            f"({profile['max'][0]}); rebuild the engine with --batch 1,{options.max_batch_size} or lower it"
        )


def write_triton_model(options: TritonOptions) -> TritonResult:
    """Write `<repository>/<name>/` (config and version 1), replacing an existing one only with force."""
    if not options.model.is_file():
        raise UserError(f"model file not found: {options.model}")
    meta, side = read_model_metadata(options.model)
    _check(options, meta, side)
    name = options.name or options.model.name.split(".")[0]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-'")
    platform, model_file = PLATFORMS[options.model.suffix]
    if options.backend == "python" and options.python_env is None and not options.server_python:
        options = replace(options, python_env=default_python_env())
    text = model_config_text(name, platform, model_file, meta, options)
    validated = validate_config(text, f"{name}/config.pbtxt") is not None
    target = options.repository / name
    if target.exists() and not options.force:
        raise UserError(f"{target} already exists in the repository; pass --force to replace it")
    options.repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=options.repository))
    try:
        (staging / "1").mkdir()
        shutil.copy2(options.model, staging / "1" / model_file)
        shutil.copy2(sidecar_path(options.model), staging / "1" / f"{model_file}.json")  # provenance; Triton ignores it
        if options.backend == "python":
            (staging / "1" / "model.py").write_text(PYTHON_MODEL)
        (staging / "config.pbtxt").write_text(text)
        move_dir_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    notes = [] if validated else ["config not checked against Triton's schema: pip install 'multiscale-deploy[serve]'"]
    if options.backend == "python" and options.python_env is None:
        notes.append(
            "no EXECUTION_ENV_PATH: the server's own Python must import `runtime` "
            "(pip install 'multiscale-deploy[runtime]' into the server's image)"
        )
    return TritonResult(target, target / "config.pbtxt", target / "1" / model_file, validated, notes)
