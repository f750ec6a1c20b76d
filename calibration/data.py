"""Calibration data from an image folder: a deterministic subset, preprocessed as the model says.

The result is a plain list of {input_name: array} feeds (the style of ONNX Runtime's calibration
readers), so any quantizer can consume it. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.metadata import ModelMetadata
from runtime.preprocess import IMAGE_SUFFIXES, ImageReadError, load_rgb, preprocess

log = logging.getLogger("msdeploy")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"calibration folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"calibration data {folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def choose_subset(files: list[Path], count: int | None, seed: int) -> list[Path]:
    """`count` files chosen with `seed`, the same ones on every machine (the list is sorted first)."""
    if count is None or count >= len(files):
        return list(files)
    if count < 1:
        raise UserError(f"--calib-count must be at least 1, got {count}")
    order = np.random.default_rng(seed).permutation(len(files))[:count]
    return [files[i] for i in sorted(order)]


@dataclass
class CalibrationSet:
    feeds: list[dict[str, np.ndarray]]
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __iter__(self):
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def load_calibration_set(
    folder: str | Path,
    metadata: ModelMetadata,
    *,
    count: int | None = None,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    first: int | None = None,
) -> CalibrationSet:
    """The seeded subset of `count` images, preprocessed; `first`: read only the subset's first N."""
    chosen = choose_subset(list_images(folder), count, seed)[:first]
    feeds, used, skipped = [], [], []
    for path in chosen:
        try:
            feeds.append({metadata.input_name: preprocess(load_rgb(path), metadata, size)})
            used.append(path)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            skipped.append((path, str(exc)))
    if not feeds:
        raise UserError(f"none of the {len(chosen)} chosen images in {folder} could be read")
    return CalibrationSet(feeds, used, skipped)


def data_fingerprint(files: list[Path], root: str | Path) -> str:
    """A hash of the chosen images' names (relative to `root`), sizes and modification times: enough to
    tell a calibration cache that its data changed, without reading a single image."""
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
