"""Small inference runtime: imports neither torch nor onnx, so it installs on a Jetson.

import runtime
runner = runtime.load("model.onnx")
outputs = runner.infer(image_batch)   # {"mask_logits": array}
"""

from __future__ import annotations

from pathlib import Path

from runtime.errors import MSDeployError, UserError, VerificationError
from runtime.runner import Runner, TensorSpec

ONNX_SUFFIXES = (".onnx",)


def load(path: str | Path, **options) -> Runner:
    """Load a model file with the backend its format needs. Options go to the backend
    (ONNX Runtime: providers=[...], threads=N)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix in ONNX_SUFFIXES:
        from runtime.onnxruntime_backend import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(path), **options)
    raise UserError(f"{path}: unknown model format {path.suffix!r}; supported: {', '.join(ONNX_SUFFIXES)}")


__all__ = ["MSDeployError", "Runner", "TensorSpec", "UserError", "VerificationError", "load"]
