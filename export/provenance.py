"""Where a model came from: library versions and hashes of the weights."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from runtime.environment import package_version
from runtime.files import sha256_file

VERSIONED = ("multiscale-deploy", "torch", "timm", "onnx", "onnxscript", "onnxruntime", "onnxslim")


def export_versions() -> dict[str, str | None]:
    return {name: package_version(name) for name in VERSIONED}


def state_sha256(module: nn.Module) -> str:
    """Hash of a module's state (names, dtypes, shapes and values), independent of file format."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def weights_record(weights: str | Path | Mapping | None, seed: int) -> dict:
    if weights is None:
        return {"source": "random-init", "seed": seed}
    if isinstance(weights, Mapping):
        return {"source": "state-dict"}
    path = Path(weights)
    return {"source": "file", "file": path.name, "file_sha256": sha256_file(path)}
