"""Calibration data from an image folder: a deterministic subset, preprocessed as the model says.

Iterating the set gives {input_name: array} feeds one image at a time (the style of ONNX Runtime's
calibration readers), so any quantizer can consume it in bounded memory. Unreadable files are
reported and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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


class CalibrationSet:
    """The chosen images, read and preprocessed one at a time as they are iterated: 512 images at
    352x352 would hold 760 MB at once. Unreadable files are reported, skipped and listed in `skipped`
    (complete after a full pass); a pass in which no image could be read is an error."""

    def __init__(self, files: list[Path], metadata: ModelMetadata, size: tuple[int, int] | None, folder: Path):
        self.files = files
        self.skipped: list[tuple[Path, str]] = []
        self._metadata = metadata
        self._size = size
        self._folder = folder

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.skipped = []
        for path in self.files:
            try:
                feed = {self._metadata.input_name: preprocess(load_rgb(path), self._metadata, self._size)}
            except ImageReadError as exc:
                log.warning("skipping %s", exc)
                self.skipped.append((path, str(exc)))
                continue
            yield feed
        if len(self.skipped) == len(self.files):
            raise UserError(f"none of the {len(self.files)} chosen images in {self._folder} could be read")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        """All of them in memory at once: for the few images a verification runs on."""
        return list(self)

    @property
    def used(self) -> list[Path]:
        skipped = {path for path, _ in self.skipped}
        return [path for path in self.files if path not in skipped]


def load_calibration_set(
    folder: str | Path,
    metadata: ModelMetadata,
    *,
    count: int | None = None,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    first: int | None = None,
) -> CalibrationSet:
    """The seeded subset of `count` images (read when iterated); `first`: only the subset's first N."""
    chosen = choose_subset(list_images(folder), count, seed)[:first]
    return CalibrationSet(chosen, metadata, size, Path(folder))


def data_fingerprint(files: list[Path], root: str | Path) -> str:
    """A hash of the chosen images' names (relative to `root`), sizes and modification times: enough to
    tell a calibration cache that its data changed, without reading a single image."""
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
