"""Images to masks in a few lines, with any exported model (ONNX Runtime or a TensorRT engine).

    from runtime import Predictor
    predictor = Predictor("model.onnx")          # or "model.engine"
    result = predictor.predict("photo.jpg")      # a path or an RGB uint8 array
    result.mask                                  # bool [H, W] at the photo's own size

Preprocessing follows the model's metadata (size rule, normalisation); the logits are resized back
to the image's size before the sigmoid. numpy and Pillow only: this runs on a Jetson.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.backends import open_runner
from runtime.errors import UserError
from runtime.postprocess import mask_image, overlay_image, probability_map, soft_mask_image
from runtime.preprocess import DEFAULT_MAX_PIXELS, LoadedImage, input_size, preprocess, read_image
from runtime.runner import Runner


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An array as RGB uint8 [H, W, 3]: grayscale [H, W] or [H, W, 1] is repeated, RGBA drops alpha."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"expected a uint8 image, got {image.dtype}; scale it to 0..255 and .astype(np.uint8)")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise UserError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape {list(image.shape)}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


@dataclass
class Prediction:
    """One image's result; arrays are at the image's own size (as decoded)."""

    image: np.ndarray  # RGB uint8 [H, W, 3]
    probability: np.ndarray  # float32 [H, W] in 0..1
    threshold: float
    input_size: tuple[int, int]  # what the network saw (H, W)
    network_ms: float  # the model call alone (the batched call this image was part of)
    total_ms: float  # read, preprocess, network and probabilities (up to this image in a batch)
    notes: tuple[str, ...] = ()  # e.g. upsampled, decoded at reduced scale

    @property
    def mask(self) -> np.ndarray:
        """bool [H, W]: probability >= threshold."""
        return self.probability >= self.threshold

    @property
    def foreground(self) -> float:
        """Share of the image in the mask."""
        return float(self.mask.mean())

    def mask_png(self) -> np.ndarray:
        """uint8 [H, W], 0 or 255."""
        return mask_image(self.probability, self.threshold)

    def soft_png(self) -> np.ndarray:
        """uint8 [H, W], probability * 255."""
        return soft_mask_image(self.probability)

    def overlay(self) -> np.ndarray:
        """RGB uint8 [H, W, 3]: the image with the mask tinted on it and outlined."""
        return overlay_image(self.image, self.mask)


class Predictor:
    """An exported model (ONNX or engine) that turns images into masks."""

    def __init__(
        self,
        model: str | Path | Runner,
        *,
        backend: str = "auto",
        size: tuple[int, int] | None = None,
        threshold: float = 0.5,
        threads: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        inference_precision: str | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise UserError(f"threshold {threshold} must lie strictly between 0 and 1")
        self.runner = (
            model
            if isinstance(model, Runner)
            else open_runner(model, backend, threads=threads, inference_precision=inference_precision)
        )
        self.metadata = self.runner.require_metadata()
        # a fixed-shape engine (DLA) runs at its one size unless another is asked (and then refused)
        self.size = input_size(self.metadata, size or self.runner.fixed_image_size())
        self.threshold = threshold
        self.max_pixels = max_pixels
        names = [o.name for o in self.runner.outputs]
        self.output = "mask_logits" if "mask_logits" in names else names[0]

    def load(self, image: str | Path | bytes | np.ndarray) -> tuple[LoadedImage, tuple[str, ...]]:
        """Decode one image (a path, encoded file bytes, or an RGB uint8 array) and say what was
        done to it; raises ImageReadError for an unreadable file."""
        if isinstance(image, (str, Path, bytes)):
            loaded = read_image(image, self.max_pixels)
        else:
            rgb = as_rgb(image)
            loaded = LoadedImage(rgb, rgb.shape[:2])
        notes = []
        if loaded.reduction > 1:
            height, width = loaded.original_size
            notes.append(f"{width}x{height} is over the pixel limit: decoded and written at 1/{loaded.reduction} scale")
        height, width = loaded.rgb.shape[:2]
        if min(height, width) < self.metadata.min_size:
            notes.append(f"upsampled from {width}x{height} (below the model's minimum side {self.metadata.min_size})")
        return loaded, tuple(notes)

    @property
    def max_batch(self) -> int | None:
        """The largest batch the model takes in one call (None: any)."""
        return self.runner.max_batch()

    def predict_loaded(
        self, images: Sequence[tuple[LoadedImage, tuple[str, ...]]], batch_size: int = 1
    ) -> list[Prediction]:
        """Decoded images (from `load`) to predictions, `batch_size` of them per network call (every
        image is resized to the same network size, so any mix of image sizes batches)."""
        limit = self.max_batch
        batch_size = max(1, min(batch_size, limit) if limit else batch_size)
        results = []
        for first in range(0, len(images), batch_size):
            chunk = images[first : first + batch_size]
            start = time.perf_counter()
            x = np.concatenate([preprocess(loaded.rgb, self.metadata, self.size) for loaded, _ in chunk])
            before = time.perf_counter()
            logits = self.runner.infer({self.metadata.input_name: x})[self.output]
            network_ms = (time.perf_counter() - before) * 1e3
            for index, (loaded, notes) in enumerate(chunk):
                probability = probability_map(logits[index, 0], loaded.rgb.shape[:2])
                total_ms = (time.perf_counter() - start) * 1e3
                results.append(
                    Prediction(loaded.rgb, probability, self.threshold, self.size, network_ms, total_ms, notes)
                )
        return results

    def predict(self, image: str | Path | bytes | np.ndarray) -> Prediction:
        """A path (any format Pillow reads; grayscale and RGBA converted), encoded file bytes, or an
        RGB uint8 array."""
        start = time.perf_counter()
        result = self.predict_loaded([self.load(image)])[0]
        result.total_ms = (time.perf_counter() - start) * 1e3
        return result

    def predict_many(self, images: Iterable[str | Path | bytes | np.ndarray], batch_size: int = 8) -> list[Prediction]:
        """Several images, batched `batch_size` per network call (capped by the model's own limit)."""
        return self.predict_loaded([self.load(image) for image in images], batch_size)

    def __call__(self, image: str | Path | bytes | np.ndarray) -> Prediction:
        return self.predict(image)
