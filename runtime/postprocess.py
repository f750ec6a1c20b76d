"""Network output -> what a person looks at: probabilities at the image's own size, a binary mask,
and an overlay (the image with the mask tinted on it). numpy and Pillow only."""

from __future__ import annotations

import numpy as np

from runtime.preprocess import pillow

OVERLAY_COLOR = (255, 32, 112)  # a magenta-red that stands out on the greens and browns of camouflage
OVERLAY_ALPHA = 0.45


def probability_map(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask logits [h, w] -> float32 probabilities [H, W] at `size` (H, W): bilinear resize of the
    logits, then the sigmoid, as the field's evaluation code does."""
    Image, _ = pillow()
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"expected [h, w] logits, got shape {list(logits.shape)}")
    height, width = size
    if logits.shape != (height, width):
        logits = np.array(Image.fromarray(logits).resize((width, height), Image.BILINEAR), dtype=np.float32)
    else:
        logits = logits.copy()  # a fresh, writable array either way: the sigmoid runs in place
    # 0.5 * (1 + tanh(x / 2)) is the sigmoid without overflow for large |x|; in place to save memory
    logits *= 0.5
    np.tanh(logits, out=logits)
    logits += 1.0
    logits *= 0.5
    return logits


def mask_image(probability: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 [H, W]: 255 where probability >= threshold, else 0 (a binary mask PNG)."""
    return np.where(probability >= threshold, np.uint8(255), np.uint8(0))


def soft_mask_image(probability: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: probability * 255 (a grey-level map, the format COD benchmarks score)."""
    return np.rint(probability * 255.0).astype(np.uint8)


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner boundary of `mask`, `width` pixels wide (mask minus its erosion)."""
    inner = mask.copy()
    for _ in range(width):
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    return mask & ~inner


def overlay_image(
    rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """RGB uint8 [H, W, 3] with the mask tinted on it and its outline drawn in the same colour."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {list(rgb.shape[:2])} and mask {list(mask.shape)} differ in size")
    out = rgb.copy()
    tint = np.asarray(color, np.float32) * alpha
    out[mask] = (out[mask].astype(np.float32) * (1.0 - alpha) + tint).round().astype(np.uint8)
    out[_edge(mask, max(1, round(max(mask.shape) / 300)))] = color
    return out


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 [H, W] (grey) or [H, W, 3] (RGB) array as PNG bytes."""
    import io

    Image, _ = pillow()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)  # fast; masks compress well anyway
    return buffer.getvalue()
