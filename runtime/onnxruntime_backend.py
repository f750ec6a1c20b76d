"""ONNX Runtime backend. Execution providers by what is installed: TensorRT EP, CUDA, then CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMetadata
from runtime.runner import Runner, TensorSpec

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


def _spec(node) -> TensorSpec:
    dtype = _ORT_DTYPES.get(node.type)
    if dtype is None:
        raise UserError(f"tensor {node.name} has unsupported type {node.type}")
    return TensorSpec(node.name, tuple(node.shape), np.dtype(dtype))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str, *, providers: Sequence[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise UserError("onnxruntime is not installed: pip install 'multiscale-deploy[runtime]'") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, options, providers=list(providers or default_providers()))
        except Exception as exc:  # ORT raises its own exception types for corrupt or non-ONNX files
            raise UserError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        metadata = ModelMetadata.from_props(props, path) if "format" in props else None
        super().__init__(path, metadata)
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory when it is released
