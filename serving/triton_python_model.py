"""The Triton Python-backend model that `msdeploy export triton --backend python` writes: encoded
images in, masks out, through `runtime.Predictor` (the same pre- and post-processing as
`msdeploy infer`).

Triton loads `<repository>/<name>/1/model.py`, which imports `TritonPythonModel` from here. Inputs
and outputs (per request, batch axis first):
- `image`: TYPE_STRING [B, 1], the bytes of an image file (JPEG, PNG, ... as Pillow reads);
- `mask`: TYPE_UINT8 [B, H, W], 0 or 255 at the image's own size;
- `probability`: TYPE_FP32 [B, H, W], the sigmoid of the logits resized to the image's size.
Images in one request must share a size (outputs are one array); separate requests may differ.
Under dynamic batching Triton hands several requests to one `execute`: their images go through
the network together, `max_batch_size` per call. A request whose image cannot be decoded gets an
error response of its own; the others in the batch are answered.

Settings come from the config's `parameters`: `model_file`, `backend`, `threads`, `threshold`,
`max_pixels`. Imports neither torch nor onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.predict import Predictor

IMAGE_INPUT = "image"
OUTPUTS = ("mask", "probability")


def _parameters(config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def _image_bytes(item) -> bytes:
    # Triton hands TYPE_STRING elements over as bytes (object arrays); be lenient with str
    return item if isinstance(item, bytes) else str(item).encode()


def _check_one_size(images: list) -> None:
    """Outputs are one array per request, so its images must share a size; checked before any
    network time is spent on them."""
    shapes = {loaded.rgb.shape[:2] for loaded, _ in images}
    if len(shapes) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(shapes))
        raise UserError(f"images in one request must share a size (got {sizes}); send them as separate requests")


class TritonPythonModel:
    """What Triton's Python backend calls: initialize once per instance, execute per batch of requests."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # exists only inside Triton's Python backend

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = _parameters(config)
        folder = Path(args["model_repository"]) / args["model_version"]
        threads = int(params["threads"]) if params.get("threads") else None
        max_pixels = int(params["max_pixels"]) if params.get("max_pixels") else None
        self.predictor = Predictor(
            folder / params.get("model_file", "model.onnx"),
            backend=params.get("backend", "auto"),
            threshold=float(params.get("threshold", "0.5")),
            threads=threads,
            max_pixels=max_pixels,
        )
        self.batch_size = max(1, int(config.get("max_batch_size", 1)))

    def _error(self, message: str):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))

    def execute(self, requests: list) -> list:
        decoded: list[list | str] = []  # per request: its decoded images, or the reason it failed
        for request in requests:
            tensor = self.pb.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy()
            try:
                images = [self.predictor.load(_image_bytes(item)) for item in tensor.reshape(-1)]
                _check_one_size(images)
                decoded.append(images)
            except UserError as exc:
                decoded.append(str(exc))
        flat = [image for images in decoded if isinstance(images, list) for image in images]
        try:
            predictions = iter(self.predictor.predict_loaded(flat, self.batch_size))
        except UserError as exc:  # nothing this batch can be answered with; say why to every request
            return [self._error(f"inference failed: {exc}") for _ in requests]
        responses = []
        for images in decoded:
            if isinstance(images, str):
                responses.append(self._error(images))
                continue
            results = [next(predictions) for _ in images]
            mask = np.stack([result.mask_png() for result in results])
            probability = np.stack([result.probability for result in results])  # float32 already
            responses.append(
                self.pb.InferenceResponse(
                    output_tensors=[self.pb.Tensor(OUTPUTS[0], mask), self.pb.Tensor(OUTPUTS[1], probability)]
                )
            )
        return responses

    def finalize(self) -> None:
        self.predictor = None
