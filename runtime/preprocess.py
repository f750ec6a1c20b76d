"""Image -> network input, exactly as a model's metadata says (numpy and Pillow, no torch).

Shared by calibration, accuracy reports and inference, so all of them feed the network the same way.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMetadata, Normalization

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(UserError):
    """One image could not be read; callers that walk folders report it and go on."""


def pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - pillow is in every extra that reads images
        raise UserError("reading images needs Pillow: pip install 'multiscale-deploy[runtime]'") from exc
    return Image, ImageOps


# Images above this are decoded at a reduced scale (JPEG) or refused, so memory stays bounded:
# about 11 bytes per pixel in `msdeploy infer` (image, probabilities, mask, overlay).
DEFAULT_MAX_PIXELS = 50_000_000
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class LoadedImage:
    rgb: np.ndarray  # uint8 [H, W, 3]
    original_size: tuple[int, int]  # (H, W) of the file; larger than rgb's when decoded reduced
    reduction: int = 1  # 1, 2, 4 or 8: the JPEG decoder's scale for an image over the pixel limit


def read_image(source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """An image file (a path, or its encoded bytes) as RGB uint8 [H, W, 3]: grayscale, palette and
    RGBA are converted, EXIF rotation applied. An image over `max_pixels` is decoded at 1/2, 1/4 or
    1/8 scale where the format allows it (JPEG), else refused; the header is checked before any pixel
    is decoded."""
    Image, ImageOps = pillow()
    path = f"({len(source)} bytes)" if isinstance(source, bytes) else source  # what errors name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                width, height = img.size
                if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # stored rotated by 90 degrees
                    original = (width, height)
                else:
                    original = (height, width)
                reduction = _reduction(width * height, max_pixels, img.format)
                if reduction is None:
                    raise ImageReadError(
                        f"{path} is {width}x{height} ({width * height / 1e6:.0f} MP), over the limit of "
                        f"{max_pixels / 1e6:.0f} MP for {img.format} images; downscale it or raise --max-pixels"
                    )
                if reduction > 1:
                    img.draft("RGB", (width // reduction, height // reduction))
                img = ImageOps.exif_transpose(img)
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    background = Image.new("RGB", img.size, (0, 0, 0))
                    background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
                    img = background
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for unreadable or truncated files
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return LoadedImage(rgb, original, reduction)


def _reduction(pixels: int, max_pixels: int | None, fmt: str | None) -> int | None:
    """The JPEG draft scale that brings `pixels` under the limit: 1 when it already is, None when no
    scale the decoder offers does."""
    if max_pixels is None or pixels <= max_pixels:
        return 1
    if fmt != "JPEG":
        return None
    for reduction in (2, 4, 8):
        if pixels / reduction**2 <= max_pixels:
            return reduction
    return None


def load_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (see `read_image`)."""
    return read_image(path, max_pixels).rgb


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (H, W)."""
    Image, _ = pillow()
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
