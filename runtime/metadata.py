"""The metadata that travels with every model we write.

Stored twice: as ONNX `metadata_props` (each field JSON-encoded under its own key, so the model file
alone is self-describing) and as a JSON sidecar `<model file>.json` (model.onnx -> model.onnx.json)
that also holds the model's sha256 (a file cannot contain its own hash). Readers here need neither torch nor onnx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from runtime.errors import UserError
from runtime.files import check_output_path, sha256_file

FORMAT = "msdeploy-model/1"
PRECISIONS = ("fp32", "fp16", "int8")  # what a model file computes in
# what a benchmark row or a parity check can run in: the file precisions, plus BF16, which is not in
# any file: CPU backends that compute it natively (openvino-cpu) run an FP32 model's floats in BF16
RUN_PRECISIONS = (*PRECISIONS, "bf16")
BF16_BACKENDS = ("openvino-cpu",)
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")  # TensorRT; see runtime.tensorrt_common
# models.fusion.FUSIONS by name, for torch-free callers (the CLI, the benchmark); a test keeps them equal
FUSION_NAMES = ("hierarchical", "absi", "concat", "average")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Normalization:
    """pixel -> (pixel * scale - mean) / std, per RGB channel."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


@dataclass
class ModelMetadata:
    fusion: str
    backbone: str
    scales: list[float]
    channels: list[int]
    outputs: list[str]
    input_name: str = "image"
    input_layout: str = "NCHW"
    input_color: str = "RGB"
    input_dtype: str = "float32"
    normalization: Normalization = field(default_factory=Normalization)
    default_size: list[int] = field(default_factory=lambda: [352, 352])
    size_rule: str = "for s != 1: side = max(32, floor(side * s / 32) * 32); the 1.0x copy is unchanged"
    min_size: int = 32
    static_size: list[int] | None = None  # [H, W] when spatial sizes are fixed in the graph
    precision: str = "fp32"
    opset: int | None = None
    weights: dict = field(default_factory=dict)  # source, file, file_sha256, state_sha256, seed
    versions: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)  # measured against PyTorch when the file was written
    format: str = FORMAT

    def to_props(self) -> dict[str, str]:
        return {key: json.dumps(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelMetadata:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("normalization"), Mapping):
            kwargs["normalization"] = Normalization(**kwargs["normalization"])
        return cls(**kwargs)

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ModelMetadata:
        if props.get("format") is None or not json.loads(props["format"]).startswith("msdeploy-model/"):
            raise not_ours(source)
        try:
            return cls.from_dict({k: json.loads(v) for k, v in props.items() if k in cls.__dataclass_fields__})
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source} has unreadable msdeploy metadata: {exc}") from exc


def not_ours(source: str) -> UserError:
    return UserError(
        f"{source} carries no msdeploy metadata, so it was not written by this tool; "
        "export it with `msdeploy export onnx`"
    )


def sidecar_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def check_model_output(model_path: str | Path, force: bool) -> Path:
    """A model output path that may be written: neither the model nor its sidecar in the way."""
    path = check_output_path(model_path, force, what="output")
    if sidecar_path(path).exists() and not force:
        raise UserError(f"sidecar {sidecar_path(path)} already exists; pass --force to overwrite it")
    return path


def read_sidecar(model_path: str | Path) -> dict | None:
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"sidecar {path} is not valid JSON: {exc}") from exc


def read_model_metadata(model_path: str | Path) -> tuple[ModelMetadata, dict]:
    """The metadata of a model file of ours (ONNX model or TensorRT engine) from its sidecar, and the
    sidecar itself (an engine's sidecar holds its model's metadata under "model"). The model file is
    not opened, except an ONNX model copied without its sidecar: then its own metadata_props are read
    (through ONNX Runtime; the sidecar returned is empty). No onnx and no TensorRT needed."""
    model_path = Path(model_path)
    side = read_sidecar(model_path)
    if side is None and model_path.suffix in ONNX_SUFFIXES and model_path.is_file():
        return ModelMetadata.from_props(_onnx_props(model_path), str(model_path)), {}
    if side is None:
        raise UserError(
            f"{model_path} has no sidecar {sidecar_path(model_path).name}; it holds the size rules and precision "
            "of the model. Copy it with the model, or export again with `msdeploy export onnx`"
        )
    data = side["model"] if isinstance(side.get("model"), Mapping) else side
    if not str(data.get("format", "")).startswith("msdeploy-model/"):
        raise not_ours(str(model_path))
    try:
        return ModelMetadata.from_dict(data), side
    except (TypeError, ValueError) as exc:
        raise UserError(f"{sidecar_path(model_path)} has unreadable msdeploy metadata: {exc}") from exc


def _onnx_props(model_path: Path) -> dict[str, str]:
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # not installed, or not an ONNX file: say what is missing
        raise UserError(
            f"{model_path} has no sidecar {sidecar_path(model_path).name} and its own metadata cannot be read "
            f"({str(exc).splitlines()[0]}); copy the sidecar with the model"
        ) from exc
    return dict(session.get_modelmeta().custom_metadata_map)


def variant_path(model_path: str | Path, precision: str) -> Path:
    """model.onnx -> model.<precision>.onnx (precision may carry a variant: 'int8-cpu')."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{precision}.onnx")


def model_sha256(model_path: str | Path) -> str:
    """A model file's sha256, from its sidecar when it has one (no need to hash 170 MB again)."""
    return (read_sidecar(model_path) or {}).get("model_sha256") or sha256_file(model_path)
