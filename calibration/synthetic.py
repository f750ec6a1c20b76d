"""A synthetic camouflage data set: an object whose texture matches its background.

Each sample is a textured background (smooth multi-octave noise coloured from a random palette) and
one object: a random blob (an ellipse with a wobbly outline) filled with the same kind of texture,
from a nearby palette, blended in with soft edges. Objects vary in size and position. The mask is
the blob. For tests, demos, the demo checkpoint and calibration when a user has no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from runtime.errors import UserError
from runtime.files import check_output_path


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # RGB uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W], 0 or 255


def _noise(rng: np.random.Generator, size: tuple[int, int], octaves: int = 6) -> np.ndarray:
    """Smooth noise in [0, 1]: random grids upsampled bicubically, finer octaves weaker."""
    height, width = size
    out = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        cells = 3 * 2**octave
        grid = rng.random((cells, cells)).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))
        weight = 0.7**octave  # strong fine octaves: a busy texture, as real camouflage backgrounds
        out += weight * layer
        weight_sum += weight
    out /= weight_sum
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _texture(rng: np.random.Generator, size: tuple[int, int], palette: np.ndarray) -> np.ndarray:
    """Noise mapped through a 3-colour palette [3, 3] -> float RGB [H, W, 3] in 0..255."""
    t = _noise(rng, size)[..., None]
    low, mid, high = palette
    return np.where(t < 0.5, low + (mid - low) * (t * 2), mid + (high - mid) * (t * 2 - 1))


def _blob(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A filled blob (float 0/1): an ellipse whose radius wobbles with a few harmonics."""
    height, width = size
    side = min(height, width)
    radius = rng.uniform(0.12, 0.32) * side
    cy = rng.uniform(radius, height - radius)
    cx = rng.uniform(radius, width - radius)
    aspect = rng.uniform(0.6, 1.6)
    angle = np.arctan2(*np.mgrid[0:height, 0:width][::-1] - np.array([cx, cy])[:, None, None][::-1])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dist = np.hypot((xx - cx) / aspect, (yy - cy) * aspect**0.5)
    wobble = sum(rng.uniform(0.03, 0.12) * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return (dist < radius * (1 + wobble)).astype(np.float32)


# How far the object's palette moves from the background's, in units of 255 (root mean square per
# channel; the move is a colour vector of length contrast * 255 * sqrt(3) in a random direction). The
# texture statistics are the same; this colour shift is the only cue, as in real camouflage. The
# length is fixed, so every image carries the same cue: drawn per channel, some images had an object
# all but invisible, which no model can segment and every score averages in.
DEFAULT_CONTRAST = 0.2


def make_sample(
    rng: np.random.Generator, size: tuple[int, int] = (352, 352), contrast: float = DEFAULT_CONTRAST
) -> Sample:
    """One image and mask. `contrast` is how far the object's palette moves from the background's
    (0 = identical texture statistics; the default leaves a faint cue, as real camouflage does)."""
    base = rng.uniform(30, 225, size=3)
    palette = np.stack([base * rng.uniform(0.55, 0.8), base, np.minimum(base * rng.uniform(1.15, 1.4), 255)])
    direction = rng.normal(size=3)
    shift = direction / max(float(np.linalg.norm(direction)), 1e-9) * contrast * 255 * np.sqrt(3)
    object_palette = np.clip(palette + shift, 0, 255)
    background = _texture(rng, size, palette)
    foreground = _texture(rng, size, object_palette)
    blob = _blob(rng, size)
    blur = max(1.0, min(size) / 150)
    alpha = np.asarray(Image.fromarray(blob * 255).convert("L").filter(ImageFilter.GaussianBlur(blur)), np.float32)
    alpha = (alpha / 255.0)[..., None]
    image = background * (1 - alpha) + foreground * alpha
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return Sample(image=image, mask=(blob > 0.5).astype(np.uint8) * 255)


def write_dataset(
    folder: str | Path,
    count: int,
    *,
    size: tuple[int, int] = (352, 352),
    seed: int = 0,
    contrast: float = DEFAULT_CONTRAST,
    force: bool = False,
) -> Path:
    """`folder/images/NNNN.png` and `folder/masks/NNNN.png`, deterministic for a seed."""
    folder = Path(folder)
    if count < 1:
        raise UserError(f"count must be at least 1, got {count}")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise UserError(f"{folder} is not empty; pass --force to write into it")
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sample = make_sample(rng, size, contrast)
        for sub, array in (("images", sample.image), ("masks", sample.mask)):
            path = check_output_path(folder / sub / f"{i:04d}.png", force=True)
            Image.fromarray(array).save(path)
    return folder


SYNTHETIC_CALIBRATION_SEED = 1  # held apart from the held-out images (calibration images need not be unseen)


def synthetic_calibration_images(folder: str | Path, count: int) -> Path:
    """The synthetic calibration set in `folder` (written once, reused after), as its images folder."""
    folder = Path(folder)
    if len(list((folder / "images").glob("*.png"))) < count:
        write_dataset(folder, count, size=(352, 352), seed=SYNTHETIC_CALIBRATION_SEED, force=True)
    return folder / "images"
