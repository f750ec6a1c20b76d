"""Small inference runtime: imports neither torch nor onnx, so it installs on a Jetson.

import runtime
runner = runtime.open_runner("model.onnx", "onnxruntime-cpu")   # or "model.engine", "tensorrt"
outputs = runner.infer(image_batch)   # {"mask_logits": array}

predictor = runtime.Predictor("model.onnx")   # images in, masks out
mask = predictor.predict("photo.jpg").mask     # bool [H, W] at the photo's size
"""

from __future__ import annotations

from runtime.backends import BACKENDS, load, open_runner
from runtime.errors import MSDeployError, UserError, VerificationError
from runtime.predict import Prediction, Predictor
from runtime.runner import Runner, TensorSpec

__all__ = [
    "BACKENDS",
    "MSDeployError",
    "Prediction",
    "Predictor",
    "Runner",
    "TensorSpec",
    "UserError",
    "VerificationError",
    "load",
    "open_runner",
]
