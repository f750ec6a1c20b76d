"""Image -> network input, exactly as a model's metadata says (numpy and Pillow, no torch).

Shared by calibration, accuracy reports and inference, so all of them feed the network the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMetadata, Normalization

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(UserError):
    """One image could not be read; callers that walk folders report it and go on."""


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - pillow is in every extra that reads images
        raise UserError("reading images needs Pillow: pip install 'multiscale-deploy[runtime]'") from exc
    return Image, ImageOps


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3]: grayscale, palette and RGBA are converted, EXIF rotation
    applied."""
    Image, ImageOps = _pil()
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                background = Image.new("RGB", img.size, (0, 0, 0))
                background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
                img = background
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for unreadable or truncated files
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (H, W)."""
    Image, _ = _pil()
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W]: (pixel * scale - mean) / std."""
    x = image.astype(np.float32) * np.float32(norm.scale)
    x = (x - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def input_size(metadata: ModelMetadata, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The size images are resized to: a static model's own size, else `size`, else the default."""
    if metadata.static_size:
        return tuple(metadata.static_size)
    chosen = tuple(size or metadata.default_size)
    if min(chosen) < metadata.min_size:
        raise UserError(f"input size {chosen} is below the model's minimum {metadata.min_size}")
    return chosen


def preprocess(image: np.ndarray, metadata: ModelMetadata, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, h, w], resized and normalised as the model expects."""
    resized = resize_rgb(image, input_size(metadata, size))
    return normalize(resized, metadata.normalization)[None]
