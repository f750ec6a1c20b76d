"""Small inference runtime: imports neither torch nor onnx, so it installs on a Jetson."""

from runtime.errors import UserError

__all__ = ["UserError"]
