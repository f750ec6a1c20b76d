"""Writing a model only after it computes what its reference computes.

Every model file we write (FP32 export, FP16, INT8) goes through `write_verified_model`: temporary
file, parity against a reference runner (PyTorch, or the FP32 ONNX model for INT8), the parity
figures into the metadata, rename, then the sidecar with the file's sha256.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from runtime.backends import load
from runtime.compare import ParityReport, run_parity
from runtime.errors import UserError, VerificationError
from runtime.files import atomic_path, sha256_file, write_json_atomic
from runtime.metadata import ModelMetadata, read_model_metadata, sidecar_path
from runtime.runner import Runner


def fp32_source(model_path: Path) -> ModelMetadata:
    """The metadata of an FP32 model of ours: the only valid input of a precision conversion."""
    if not Path(model_path).is_file():
        raise UserError(f"model file not found: {model_path}")
    meta, _ = read_model_metadata(model_path)
    if meta.precision != "fp32":
        raise UserError(f"{model_path} is already {meta.precision}; convert the FP32 model instead")
    return meta


def write_verified_model(
    model,
    metadata: ModelMetadata,
    output: Path,
    reference: Runner,
    shapes: Sequence[Sequence[int]],
    *,
    inputs: Sequence[np.ndarray] = (),
    sidecar_extra: Callable[[], dict] = dict,
) -> tuple[ParityReport, int]:
    """Write `model` to `output` only if it matches `reference` at `shapes` (tolerance of
    metadata.precision): temporary file, parity, parity figures into the metadata, rename, then the
    sidecar with the file's sha256. Raises VerificationError and writes nothing on a mismatch.
    Returns the parity report and the file size."""
    with atomic_path(output) as tmp:
        write_model(model, metadata, tmp)
        with load(tmp) as runner:
            parity = run_parity(runner, reference, shapes, precision=metadata.precision, inputs=inputs)
        if not parity.passed:
            raise VerificationError(
                f"the {metadata.precision} model does not match its reference (nothing was written):\n"
                + parity.summary()
            )
        parity.model = str(output)  # it ran on the temporary file; report the real one
        metadata.parity = parity.as_metadata()
        write_model(model, metadata, tmp)
        model_sha = sha256_file(tmp)
        size = tmp.stat().st_size
    write_json_atomic(
        sidecar_path(output),
        {**asdict(metadata), "model_file": output.name, "model_sha256": model_sha, **sidecar_extra()},
    )
    return parity, size


def write_model(model, metadata: ModelMetadata, path: Path) -> None:
    """Save an ONNX model with our metadata in metadata_props (replacing any earlier copy)."""
    import onnx

    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "multiscale-deploy"
    onnx.save_model(model, str(path))
