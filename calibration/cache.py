"""Calibration cache: tensor ranges saved once, keyed by the model's hash and every setting that
changes them, reused without touching the data, refused (never silently recomputed) when stale.

Anchors' INT8 complaints are recalibration on every build and caches that silently go stale; the key
below names exactly what a cache was made from, so a refusal can say what changed.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.errors import UserError
from runtime.files import write_json_atomic

CACHE_FORMAT = "msdeploy-calibration/1"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSettings:
    method: str  # entropy | max | percentile
    count: int | None  # images used (None: all)
    seed: int  # chooses the images, and the positions sampled in each activation
    size: tuple[int, int]  # input H, W the images were resized to
    percentile: float = 99.99
    num_bins: int = 2048  # histogram bins over [-T, T] (calibration.statistics)
    calibrated_ops: tuple[str, ...] = ()  # ops whose float inputs get a range
    calibrated_outputs: tuple[str, ...] = ()  # ops whose outputs get one too (quantized outputs)
    samples_per_tensor: int = 8192  # values sampled from each activation of each image (histogram methods)


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    settings: CalibrationSettings
    data_fingerprint: str  # names, sizes and modification times of the chosen images

    def as_dict(self) -> dict:
        d = asdict(self)
        d["settings"]["size"] = list(self.settings.size)
        d["settings"]["calibrated_ops"] = list(self.settings.calibrated_ops)
        d["settings"]["calibrated_outputs"] = list(self.settings.calibrated_outputs)
        return d


def cache_key(model_sha256: str, settings: CalibrationSettings, folder: str | Path) -> tuple[CacheKey, list[Path]]:
    """The key for calibrating on `folder`, and the images `settings` chooses there (count, seed).
    The fingerprint comes from a folder listing only: a valid cache is used without reading any image."""
    fingerprint, files = chosen_images(folder, settings.count, settings.seed)
    return CacheKey(model_sha256, settings, fingerprint), files


def chosen_images(folder: str | Path, count: int | None, seed: int) -> tuple[str, list[Path]]:
    """The images a calibration with `count` and `seed` reads in `folder`, and their fingerprint (names,
    sizes and modification times: from a folder listing, no image read)."""
    from calibration.data import choose_subset, data_fingerprint, list_images

    files = choose_subset(list_images(folder), count, seed)
    return data_fingerprint(files, folder), files


def default_cache_path(model_path: str | Path, method: str) -> Path:
    """Beside the FP32 model, one per method: every target (tensorrt, cpu) and every rerun shares it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.name}.calib-{method}.json")


def _differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} in the cache, {b!r} now)")
    return out


def _load_entry(path: Path, key: CacheKey, field: str, replace_old_export: bool, say: Callable[[str], None]):
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        stored_key, payload = data["key"], data[field]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a calibration cache of ours ({exc}); delete it or pass --recalibrate") from exc
    differences = _differences(stored_key, key.as_dict())
    if differences and replace_old_export and all(d.startswith("model_sha256 ") for d in differences):
        # made for an earlier export of this very file with the same settings and images: nothing can
        # use it again, so the caller recalibrates and overwrites it
        say(f"calibration cache {path} was made for an earlier export of this model: recalibrating")
        return None
    if differences:
        raise UserError(
            f"calibration cache {path} is stale: it was made for a different "
            + "; ".join(differences[:4])
            + ". Pass --recalibrate to replace it, or --calib-cache NEW.json to keep it"
        )
    return payload


def load_cache(
    path: str | Path, key: CacheKey, replace_old_export: bool = False, say: Callable[[str], None] = log.info
) -> dict[str, tuple[float, float]] | None:
    """The cached ranges if `path` holds a cache for exactly `key`; None if there is no file;
    UserError naming what differs if the cache was made for another model, data or settings.
    `replace_old_export`: None (recalibrate) instead when only the model hash differs."""
    ranges = _load_entry(Path(path), key, "ranges", replace_old_export, say)
    return None if ranges is None else {name: (float(lo), float(hi)) for name, (lo, hi) in ranges.items()}


def save_cache(path: str | Path, key: CacheKey, ranges: dict[str, tuple[float, float]]) -> None:
    write_json_atomic(
        path,
        {
            "format": CACHE_FORMAT,
            "key": key.as_dict(),
            "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())},
        },
    )


def load_tensorrt_cache(
    path: str | Path, key: CacheKey, replace_old_export: bool = False, say: Callable[[str], None] = log.info
) -> bytes | None:
    """TensorRT's own calibration cache (legacy implicit INT8, TensorRT 10), kept inside our keyed
    file so that it is refused when stale, exactly like the Q/DQ ranges."""
    payload = _load_entry(Path(path), key, "tensorrt_cache", replace_old_export, say)
    return None if payload is None else base64.b64decode(payload)


def save_tensorrt_cache(path: str | Path, key: CacheKey, cache: bytes) -> None:
    write_json_atomic(
        path, {"format": CACHE_FORMAT, "key": key.as_dict(), "tensorrt_cache": base64.b64encode(cache).decode()}
    )
