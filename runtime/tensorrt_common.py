"""What the TensorRT builder and the TensorRT runner share: the import, feature detection and the engine
sidecar. Neither torch nor onnx is imported, so engines can be built and run on a Jetson.

Features are detected on the installed module, never read off its version string: TensorRT 11
removed the weak-typing flags and the implicit INT8 calibrator that Jetson's TensorRT 10 still has.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.errors import UserError
from runtime.metadata import ModelMetadata, sidecar_path

log = logging.getLogger("msdeploy.tensorrt")

ENGINE_FORMAT = "msdeploy-engine/1"


def import_tensorrt() -> ModuleType:
    missing = (
        "TensorRT is not installed. Desktop: pip install tensorrt (needs an NVIDIA GPU and driver); "
        "Jetson: it comes with JetPack (python3-libnvinfer)"
    )
    try:
        import tensorrt
    except ImportError as exc:
        raise UserError(missing) from exc
    if not hasattr(tensorrt, "Builder"):  # only tensorrt-stubs (a namespace package of .pyi files)
        raise UserError(missing)
    return tensorrt


@dataclass(frozen=True)
class TensorRTFeatures:
    version: str
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.x; kept but ignored in 11)
    weak_fp16: bool  # BuilderFlag.FP16 (removed in 11)
    implicit_int8: bool  # BuilderFlag.INT8 and IInt8EntropyCalibrator2 (removed in 11)

    @classmethod
    def detect(cls, trt: ModuleType) -> TensorRTFeatures:
        flags = getattr(trt, "BuilderFlag", None)
        return cls(
            version=str(getattr(trt, "__version__", "unknown")),
            strongly_typed=hasattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED"),
            weak_fp16=hasattr(flags, "FP16"),
            implicit_int8=hasattr(flags, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2"),
        )


def format_shape(shape) -> str:
    """(1, 3, 352, 352) -> '1x3x352x352', the form the CLI takes shapes in."""
    return "x".join(map(str, shape))


def dims(value) -> tuple[int, ...]:
    """A trt.Dims (or any sequence) as a tuple of ints, through len/getitem (what the stubs declare)."""
    return tuple(int(value[i]) for i in range(len(value)))


def read_engine_sidecar(engine_path: str | Path) -> dict:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise UserError(
            f"{engine_path} has no sidecar {path.name}: it holds the preprocessing and the profile this engine "
            "was built for. Build engines with `msdeploy export engine MODEL.onnx`, or copy the sidecar with it"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"engine sidecar {path} is not valid JSON: {exc}") from exc
    if data.get("format") != ENGINE_FORMAT:
        raise UserError(f"{path} is not an msdeploy engine sidecar (format {data.get('format')!r})")
    return data


def engine_metadata(sidecar: dict) -> ModelMetadata:
    return ModelMetadata.from_dict(sidecar["model"])


_LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}


def make_logger(trt: ModuleType):
    """A TensorRT logger that routes into Python logging (so -v shows TensorRT's own words) and keeps
    the errors, so a failed build can say why."""

    class Logger(trt.ILogger):  # type: ignore[name-defined]  # base from the module passed in
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:
            level = _LEVELS.get(getattr(severity, "name", str(severity)).split(".")[-1], logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            log.log(level, "TensorRT: %s", msg)

    return Logger()


def start_tensorrt(factory: Callable, logger, what: str):
    """`trt.Builder(logger)` or `trt.Runtime(logger)`, refused with TensorRT's own reason when it could
    not start. Without a usable CUDA, TensorRT 10 raises from the constructor, while the 11.4 runtime
    returns an object around nothing, logs the error, and crashes the process on its first call or when
    it is freed (seen with the tensorrt-lean 11.4 wheel on a machine without a GPU). So the log is
    checked too, and such an object is never freed."""
    before = len(logger.errors)
    try:
        started = factory(logger)
    except Exception as exc:  # "pybind11::init(): factory function returned nullptr"
        raise UserError(f"TensorRT could not start {what} (is a GPU visible?): {exc}") from exc
    if len(logger.errors) > before:
        for leaked in (started, logger):  # one reference that is never dropped: freeing it would crash
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))
        raise UserError(f"TensorRT could not start {what}: {logger.errors[before]}")
    return started
