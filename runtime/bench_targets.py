"""Benchmark rows that run exported files: ONNX Runtime models and TensorRT engines (torch-free).

Models are found by their JSON sidecars (fusion, backbone, precision, INT8 layout), so a folder of
exports from any machine fills the tables on a board that has only the runtime installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.benchmark import Case, Target
from runtime.errors import UserError
from runtime.metadata import read_sidecar

FILE_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


@dataclass(frozen=True)
class ModelFile:
    path: Path
    backbone: str
    fusion: str
    precision: str
    layout: str  # INT8 Q/DQ layout ("tensorrt" or "cpu"), "" otherwise
    kind: str  # "onnx" or "engine"


def describe_folder(folder: str | Path) -> list[ModelFile]:
    """Every model in `folder` with a readable sidecar of ours (others are ignored)."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        kind = {".onnx": "onnx", ".engine": "engine", ".plan": "engine"}.get(path.suffix)
        if kind is None:
            continue
        try:
            side = read_sidecar(path) or {}
        except UserError:
            continue
        meta = side.get("model", side) if kind == "engine" else side
        if not {"fusion", "backbone", "precision"} <= set(meta):
            continue
        layout = (side.get("int8") or {}).get("target", "") if kind == "onnx" else ""
        found.append(
            ModelFile(path, meta["backbone"], meta["fusion"], side.get("precision", meta["precision"]), layout, kind)
        )
    return found


def pick_model(files: list[ModelFile], case: Case, backbone: str | None) -> ModelFile | None:
    """The file that runs `case`: an engine for TensorRT, an ONNX model otherwise (for INT8 on the
    CPU the `cpu` Q/DQ layout first, which ONNX Runtime runs fastest)."""
    kind = "engine" if case.backend == "tensorrt" else "onnx"
    matches = [
        f
        for f in files
        if f.kind == kind
        and f.fusion == case.fusion
        and f.precision == case.precision
        and (backbone is None or f.backbone == backbone)
    ]
    preferred = "cpu" if case.backend == "onnxruntime-cpu" else "tensorrt"
    matches.sort(key=lambda f: f.layout != preferred)
    return matches[0] if matches else None


def backend_unavailable(backend: str) -> str | None:
    """Why a file backend cannot run on this machine at all, or None."""
    from runtime.environment import collect_environment

    env = {b.name: b for b in collect_environment().backends}
    if backend.startswith("onnxruntime"):
        if not env["onnxruntime"].available:
            return env["onnxruntime"].detail
        if backend == "onnxruntime-cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider here (needs onnxruntime-gpu and a GPU)"
        return None
    if backend == "tensorrt":
        return None if env["tensorrt"].available else f"TensorRT cannot run here: {env['tensorrt'].detail}"
    return f"unknown backend {backend!r}"


def file_target(case: Case, model: ModelFile, threads: int | None) -> Target:
    import runtime

    x = np.zeros((case.batch, 3, case.size, case.size), np.float32)
    if case.backend == "tensorrt":
        runner = runtime.load(model.path)
        runner.infer(x)  # checks the shape against the engine's profile before timing
        return Target(
            lambda: runner.infer(x),
            "host clock per call, including host-to-device and device-to-host copies (TensorRT runner)",
        )
    provider = "CUDAExecutionProvider" if case.backend == "onnxruntime-cuda" else "CPUExecutionProvider"
    runner = runtime.load(model.path, threads=threads, providers=[provider])
    copies = ", including host-device copies" if provider.startswith("CUDA") else ""
    return Target(lambda: runner.infer(x), f"host clock per call, input in host memory{copies} ({model.path.name})")
