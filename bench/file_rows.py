"""Benchmark rows that run exported files: ONNX Runtime models and TensorRT engines (torch-free).

Models are found by their JSON sidecars (fusion, backbone, precision, INT8 layout), so a folder of
exports from any machine fills the tables on a board that has only the runtime installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.cases import Case, Target
from runtime.backends import BACKENDS, open_runner
from runtime.errors import UserError
from runtime.metadata import ENGINE_SUFFIXES, ONNX_SUFFIXES, read_model_metadata


@dataclass(frozen=True)
class ModelFile:
    path: Path
    backbone: str
    fusion: str
    precision: str
    layout: str  # INT8 Q/DQ layout ("tensorrt", "cpu" or "openvino"), "" otherwise
    kind: str  # "onnx" or "engine"


def describe_folder(folder: str | Path) -> list[ModelFile]:
    """Every model in `folder` with a readable sidecar of ours (others are ignored)."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        kind = "onnx" if path.suffix in ONNX_SUFFIXES else "engine" if path.suffix in ENGINE_SUFFIXES else None
        if kind is None:
            continue
        try:
            meta, side = read_model_metadata(path)
        except UserError:  # not ours, or no sidecar
            continue
        layout = (side.get("int8") or {}).get("target", "") if kind == "onnx" else ""
        found.append(ModelFile(path, meta.backbone, meta.fusion, side.get("precision", meta.precision), layout, kind))
    return found


def pick_model(files: list[ModelFile], case: Case, backbone: str | None) -> ModelFile | None:
    """The file that runs `case`: an engine for TensorRT, an ONNX model otherwise (for INT8 the Q/DQ
    layout the backend runs fastest first: `cpu` for ONNX Runtime, `openvino` for OpenVINO)."""
    kind = "engine" if case.backend == "tensorrt" else "onnx"
    matches = [
        f
        for f in files
        if f.kind == kind
        and f.fusion == case.fusion
        and f.precision == case.file_precision
        and (backbone is None or f.backbone == backbone)
    ]
    # then the TensorRT layout (`msdeploy quantize`'s default): a folder made before the openvino
    # layout existed gives openvino-cpu the same file every time
    matches.sort(key=lambda f: (f.layout != BACKENDS[case.backend].int8_layout, f.layout != "tensorrt"))
    return matches[0] if matches else None


def inference_precision(case: Case) -> str | None:
    """openvino-cpu: BF16 rows run in BF16 and FP32 rows in FP32, whatever the CPU's default; FP16
    and INT8 rows run their float layers in the CPU's default (BF16 where native). Else None."""
    if BACKENDS[case.backend].family != "openvino":
        return None
    return {"bf16": "bf16", "fp32": "f32"}.get(case.precision, "auto")


def file_target(case: Case, model: ModelFile, threads: int | None) -> Target:
    runner = open_runner(  # the plan checked the backend
        model.path, case.backend, threads=threads, check=False, inference_precision=inference_precision(case)
    )
    x = np.zeros((case.batch, 3, case.size, case.size), np.float32)
    try:
        runner.infer(x)  # checks the shape against the model (an engine's profile) before timing
    except Exception:
        runner.close()
        raise
    if case.backend == "tensorrt":
        how = "host clock per call, including host-to-device and device-to-host copies (TensorRT runner)"
    else:
        copies = ", including host-device copies" if BACKENDS[case.backend].device == "cuda" else ""
        floats = getattr(runner, "inference_precision", None)
        floats = f", floats in {floats}" if floats else ""
        how = f"host clock per call, input in host memory{copies} ({model.path.name}{floats})"
    return Target(lambda: runner.infer(x), how, runner.close)
