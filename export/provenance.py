"""Where a model came from: library versions and hashes of the weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from runtime.environment import package_version
from runtime.files import sha256_file

VERSIONED = ("multiscale-deploy", "torch", "timm", "onnx", "onnxscript", "onnxruntime", "onnxslim")


def export_versions() -> dict[str, str | None]:
    return {name: package_version(name) for name in VERSIONED}


def weights_record(weights: str | Path | Mapping | None, seed: int) -> dict:
    if weights is None:
        return {"source": "random-init", "seed": seed}
    if isinstance(weights, Mapping):
        return {"source": "state-dict"}
    path = Path(weights)
    return {"source": "file", "file": path.name, "file_sha256": sha256_file(path)}
