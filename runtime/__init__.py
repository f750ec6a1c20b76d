"""Small inference runtime: imports neither torch nor onnx, so it installs on a Jetson.

import runtime
runner = runtime.load("model.onnx")    # or "model.engine" (TensorRT)
outputs = runner.infer(image_batch)   # {"mask_logits": array}

predictor = runtime.Predictor("model.onnx")   # images in, masks out
mask = predictor.predict("photo.jpg").mask     # bool [H, W] at the photo's size
"""

from __future__ import annotations

from pathlib import Path

from runtime.errors import MSDeployError, UserError, VerificationError
from runtime.predict import Prediction, Predictor
from runtime.runner import Runner, TensorSpec

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")  # TensorRT; see runtime.tensorrt_common


def load(path: str | Path, **options) -> Runner:
    """Load a model file with the backend its format needs. Options go to the backend
    (ONNX Runtime: providers=[...], threads=N; TensorRT engines: cuda_graphs=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix in ONNX_SUFFIXES:
        from runtime.onnxruntime_backend import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(path), **options)
    if path.suffix in ENGINE_SUFFIXES:
        from runtime.tensorrt_backend import TensorRTRunner

        return TensorRTRunner(str(path), **options)
    known = ", ".join((*ONNX_SUFFIXES, *ENGINE_SUFFIXES))
    raise UserError(f"{path}: unknown model format {path.suffix!r}; supported: {known}")


__all__ = [
    "MSDeployError",
    "Prediction",
    "Predictor",
    "Runner",
    "TensorSpec",
    "UserError",
    "VerificationError",
    "load",
]
