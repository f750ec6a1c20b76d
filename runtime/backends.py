"""The backend vocabulary and `open_runner(model, backend)`: the one way a model is opened by name.

    with runtime.open_runner("model.onnx", "onnxruntime-cpu") as runner:
        outputs = runner.infer(batch)

Every command, the benchmark, parity and the self-test take their backend names from `BACKENDS`.
PyTorch backends rebuild the network a model file was exported from; they are opened through the
`msdeploy.runners` entry point, so this torch-free package never imports PyTorch code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from runtime.errors import UserError
from runtime.metadata import ENGINE_SUFFIXES, ONNX_SUFFIXES
from runtime.runner import Runner


@dataclass(frozen=True)
class Backend:
    name: str
    family: str  # "torch", "onnxruntime", "openvino" or "tensorrt"
    device: str  # "cpu" or "cuda"
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, in order of preference
    int8_layout: str = "tensorrt"  # the INT8 Q/DQ layout it runs fastest (calibration.int8.LAYOUTS)

    @property
    def runs_files(self) -> bool:
        """True where the backend runs an exported file (not the PyTorch network)."""
        return self.family != "torch"


BACKENDS = {
    b.name: b
    for b in (
        Backend("torch-cpu", "torch", "cpu"),
        Backend("torch-cuda", "torch", "cuda"),
        Backend("torch-cuda-graphs", "torch", "cuda"),
        Backend("onnxruntime-cpu", "onnxruntime", "cpu", ("CPUExecutionProvider",), int8_layout="cpu"),
        Backend("onnxruntime-cuda", "onnxruntime", "cuda", ("CUDAExecutionProvider", "CPUExecutionProvider")),
        Backend("openvino-cpu", "openvino", "cpu", int8_layout="openvino"),
        Backend("tensorrt", "tensorrt", "cuda"),
    )
}
FILE_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.runs_files)
TORCH_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.family == "torch")
# a family name stands for all its backends
FAMILIES = {
    family: tuple(n for n, b in BACKENDS.items() if b.family == family)
    for family in ("torch", "onnxruntime", "openvino")
}
AUTO = "auto"  # by file type: TensorRT for .engine/.plan, ONNX Runtime with the best provider installed


def backend(name: str) -> Backend:
    """The backend called `name`, or a UserError listing the names."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


def expand_backends(names: Sequence[str]) -> list[str]:
    """Family names (`torch`, `onnxruntime`, `openvino`) stand for all their backends; order kept, repeats
    dropped."""
    return list(dict.fromkeys(b for name in names for b in FAMILIES.get(name, (name,))))


def backend_unavailable(name: str) -> str | None:
    """Why a backend cannot run on this machine at all, or None (runtime.environment checks)."""
    from runtime.environment import collect_environment

    backend(name)
    found = next(b for b in collect_environment().backends if b.name == name)
    return None if found.available else f"{name} cannot run here: {found.detail}"


def load(path: str | Path, backend: str = AUTO, **options) -> Runner:
    """Open a model file with the backend its format needs, or with a named `backend` (then as
    `open_runner` does: `runtime.load("m.onnx", backend="openvino-cpu", inference_precision="bf16")`).
    Other options go to the backend (ONNX Runtime: providers=[...], threads=N; TensorRT engines:
    cuda_graphs=True)."""
    if backend != AUTO or options.get("inference_precision"):
        extra = sorted(set(options) - {"threads", "weights", "check", "inference_precision"})
        if extra:
            raise UserError(
                f"load(..., backend={backend!r}) takes threads, weights and inference_precision; "
                f"{', '.join(extra)} apply only when the backend is chosen by file type (backend='auto')"
            )
        return open_runner(path, backend, **options)
    options.pop("inference_precision", None)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if path.suffix in ONNX_SUFFIXES:
        from runtime.onnxruntime_backend import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(path), **options)
    if path.suffix in ENGINE_SUFFIXES:
        from runtime.tensorrt_backend import TensorRTRunner

        return TensorRTRunner(str(path), **options)
    known = ", ".join((*ONNX_SUFFIXES, *ENGINE_SUFFIXES))
    raise UserError(f"{path}: unknown model format {path.suffix!r}; supported: {known}")


def open_runner(
    model: str | Path,
    backend_name: str = AUTO,
    *,
    threads: int | None = None,
    weights: str | Path | None = None,
    check: bool = True,
    inference_precision: str | None = None,
) -> Runner:
    """Open `model` on a named backend. `auto` picks by file type; the others insist, with an error
    saying what fits. PyTorch backends rebuild the network `model` was exported from (its metadata,
    with `weights` when it was exported from a checkpoint). `check=False` skips the availability
    probe (a caller that has just checked). `inference_precision` (openvino-cpu only: auto, bf16,
    f32) is the precision its floats run in."""
    path = Path(model)
    is_engine = path.suffix in ENGINE_SUFFIXES
    spec = backend(backend_name) if backend_name != AUTO else None
    if inference_precision and (spec is None or spec.family != "openvino"):
        raise UserError(
            f"--inference-precision applies to openvino-cpu only (backend {backend_name}); the precision of "
            "other backends is the model file's"
        )
    if spec is None:
        return load(path, threads=threads) if not is_engine else load(path)
    if spec.family == "tensorrt" and not is_engine:
        raise UserError(
            f"{path} is not a TensorRT engine; build one on this machine with `msdeploy export engine {path}` "
            "and pass the .engine file"
        )
    if spec.family in ("onnxruntime", "openvino") and is_engine:
        raise UserError(f"{path} is a TensorRT engine; {backend_name} runs the .onnx model it was built from")
    # probed here: ONNX Runtime would fall back to the CPU silently, PyTorch needs the [export] install;
    # a TensorRT engine says itself why it cannot load (no nvidia-smi needed on a Jetson)
    probe = check and (spec.name == "onnxruntime-cuda" or spec.family == "torch")
    reason = backend_unavailable(backend_name) if probe else None
    if reason:
        raise UserError(reason)
    if spec.family == "tensorrt":
        return load(path)
    if spec.family == "onnxruntime":
        return load(path, providers=list(spec.providers), threads=threads)
    if spec.family == "openvino":
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        from runtime.openvino_backend import OpenVINORunner

        return OpenVINORunner(str(path), threads=threads, inference_precision=inference_precision)
    openers = list(entry_points(group="msdeploy.runners", name="torch"))
    if not openers:
        raise UserError("PyTorch backends need the project installed: pip install -e '.[export]' in the checkout")
    return openers[0].load()(path, spec, weights=weights, threads=threads)
