"""`msdeploy export triton`: a Triton Inference Server model repository entry for an exported model.

`<repository>/<name>/config.pbtxt` and `<repository>/<name>/1/model.onnx` (platform
`onnxruntime_onnx`) or `.../1/model.plan` (platform `tensorrt_plan`): what GPU servers running
NVIDIA's Triton containers load. Inputs, outputs, dtypes and dynamic sizes come from the model's
metadata; the config is checked against Triton's model-config schema (`tritonclient`'s
`model_config_pb2`) when tritonclient is installed. Torch-free and onnx-free.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import UserError
from runtime.files import move_dir_into_place
from runtime.metadata import ModelMetadata, read_sidecar, sidecar_path

PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx"), ".engine": ("tensorrt_plan", "model.plan")}
PLATFORMS[".plan"] = PLATFORMS[".engine"]
DEFAULT_QUEUE_DELAY_US = 100  # how long the scheduler may hold a request to form a batch


@dataclass
class TritonOptions:
    model: Path  # an .onnx or .engine written by msdeploy (with its sidecar)
    repository: Path
    name: str | None = None  # default: the model file's stem
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "gpu"  # instance kind: gpu (NGC containers) or cpu
    dynamic_batching: bool = True
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    force: bool = False


@dataclass
class TritonResult:
    folder: Path
    config: Path
    model_file: Path
    validated: bool  # parsed against Triton's schema (tritonclient installed)
    notes: list[str] = field(default_factory=list)


def _metadata(model: Path) -> tuple[ModelMetadata, dict]:
    side = read_sidecar(model)
    if side is None:
        raise UserError(f"{model} has no sidecar {sidecar_path(model).name}; export it with msdeploy first")
    meta = ModelMetadata.from_dict(side.get("model", side) if model.suffix in (".engine", ".plan") else side)
    return meta, side


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


def _tensor(name: str, dims: list[int]) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'


def model_config_text(name: str, platform: str, model_file: str, meta: ModelMetadata, options: TritonOptions) -> str:
    inputs, outputs = _dims(meta)
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f'default_model_filename: "{model_file}"',
        f"max_batch_size: {options.max_batch_size}",
        "input [",
        _tensor(meta.input_name, inputs),
        "]",
        "output [",
        ",\n".join(_tensor(out, dims) for out, dims in outputs.items()),
        "]",
        "instance_group [",
        f"  {{\n    count: {options.instances}\n    kind: KIND_{options.kind.upper()}\n  }}",
        "]",
    ]
    if options.dynamic_batching and options.max_batch_size > 0:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {options.queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


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
    if options.kind not in ("gpu", "cpu"):
        raise UserError(f"--kind must be gpu or cpu, got {options.kind!r}")
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
    meta, side = _metadata(options.model)
    _check(options, meta, side)
    name = options.name or options.model.name.split(".")[0]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-'")
    platform, model_file = PLATFORMS[options.model.suffix]
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
        (staging / "config.pbtxt").write_text(text)
        move_dir_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    notes = [] if validated else ["config not checked against Triton's schema: pip install 'multiscale-deploy[serve]'"]
    return TritonResult(target, target / "config.pbtxt", target / "1" / model_file, validated, notes)
