"""What the TensorRT builder and the TensorRT runner share: which TensorRT, its features, the logger and
the engine sidecar. Neither torch nor onnx is imported, so engines can be built and run on a Jetson.

Two NVIDIA products compile our ONNX graphs, with one API:

- TensorRT (`tensorrt`): 10.x on Jetson (JetPack 6), 11.x on desktops and servers; builds on the GPU
  that will run the engine.
- TensorRT for RTX (`tensorrt_rtx`): GeForce / RTX PRO GPUs of compute capability 7.5 and later (no
  Jetson); builds ahead of time without a GPU for a list of compute capabilities, and compiles kernels
  just in time on the user's GPU, kept in a runtime cache file.

Everything that differs between them lives here, in `TARGETS` (facts about the product) and
`TensorRTFeatures` (what the installed module has). API features are detected on the module, never
read off its version string: TensorRT 11 and TensorRT-RTX removed the weak-typing flags and the
implicit INT8 calibrator that Jetson's TensorRT 10 still has.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.errors import UserError
from runtime.metadata import ModelMetadata, read_model_metadata, sidecar_path

log = logging.getLogger("msdeploy.tensorrt")

ENGINE_FORMAT = "msdeploy-engine/1"


@dataclass(frozen=True)
class TensorRTTarget:
    """Facts about one of NVIDIA's builders that its Python module cannot tell us."""

    name: str  # what --target takes
    label: str  # its product name, for messages
    module: str  # the Python module
    # the pip packages whose version says which release is installed (one per CUDA major; JetPack's
    # python3-libnvinfer registers as "tensorrt")
    distributions: tuple[str, ...]
    install: str  # how a user gets it
    runs_on: str  # which GPUs its engines run on, for messages
    builds_without_gpu: bool  # ahead-of-time build for listed compute capabilities (CPU-only AOT)
    # TensorRT-RTX: timing-cache calls are no-ops (since 1.2) and force a GPU query, which turns the
    # CPU-only build off; so we never make them there
    timing_cache: bool
    dla: bool  # Jetson's DLA cores exist only where TensorRT runs on Jetson


TARGETS: dict[str, TensorRTTarget] = {
    "tensorrt": TensorRTTarget(
        "tensorrt",
        "TensorRT",
        "tensorrt",
        ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "desktop or server: pip install tensorrt (needs an NVIDIA GPU and driver); Jetson: it comes with "
        "JetPack (python3-libnvinfer)",
        "the GPU model and TensorRT version it was built with",
        builds_without_gpu=False,
        timing_cache=True,
        dla=True,
    ),
    "tensorrt-rtx": TensorRTTarget(
        "tensorrt-rtx",
        "TensorRT-RTX",
        "tensorrt_rtx",
        ("tensorrt-rtx-cu12", "tensorrt-rtx-cu13"),
        "pip install 'multiscale-deploy[tensorrt-rtx]' (NVIDIA's tensorrt-rtx wheels, CUDA 12 on x86, CUDA 13 on "
        "aarch64; it builds without a GPU)",
        "RTX-class GPUs (GeForce / RTX PRO, Ampere or newer; Turing on request) of the compute capabilities "
        "it was built for, with the same TensorRT-RTX version",
        builds_without_gpu=True,
        timing_cache=False,
        dla=False,
    ),
}
# the runtime-only modules of TensorRT (the lean and dispatch wheels) run what TensorRT builds
_RUNTIME_MODULES = {"tensorrt_lean": "tensorrt", "tensorrt_dispatch": "tensorrt"}
# TensorRT-RTX's CPU-only build without a compute-capability list targets these (its documentation:
# "8.6, 8.9, 12.0, 12.1 and later"); Turing (7.5) must be asked for
RTX_DEFAULT_COMPUTE_CAPABILITIES = ("8.6", "8.9", "12.0", "12.1")
# TensorRT-RTX has no FP32 GEMM for Turing (its support matrix; its builder refuses an FP32 graph
# for 7.5 with "FP32 GEMM is not supported"); FP16 and INT8 graphs build for it
RTX_NO_FP32_GEMM = ("7.5",)


def target_of_module(trt: ModuleType) -> str:
    """The TARGETS key of a TensorRT module (a recording fake names itself like the real one)."""
    name = trt.__name__.split(".")[0]
    found = next((t.name for t in TARGETS.values() if t.module == name), None)
    return found or _RUNTIME_MODULES.get(name, "tensorrt")


def installed_targets() -> list[str]:
    """The targets whose builder or runtime module imports here, in TARGETS order."""
    return [name for name in TARGETS if _import_target(name) is not None]


def _import_target(name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(TARGETS[name].module)
    except ImportError:
        return None
    # tensorrt-stubs alone is a namespace package of .pyi files: nothing to build or run with
    return module if hasattr(module, "Builder") or hasattr(module, "Runtime") else None


def import_tensorrt(target: str | None = None) -> ModuleType:
    """The module for `target` ("tensorrt" or "tensorrt-rtx"); None: TensorRT if installed, else
    TensorRT-RTX. Refused with how to install when it is missing."""
    if target is not None and target not in TARGETS:
        raise UserError(f"unknown TensorRT target {target!r}; choose one of {', '.join(TARGETS)}")
    for name in [target] if target else list(TARGETS):
        module = _import_target(name)
        if module is not None:
            return module
    if target:
        raise UserError(f"{TARGETS[target].module} is not installed. {TARGETS[target].install}")
    raise UserError("no TensorRT is installed. " + "; ".join(f"{t.name}: {t.install}" for t in TARGETS.values()))


def _sm_to_capability(member: str) -> str | None:
    """trt.ComputeCapability member name -> "8.6" ("SM86"), "12.0" ("SM120"); None for CURRENT/NONE."""
    digits = re.fullmatch(r"SM(\d+)(\d)", member)
    return f"{digits[1]}.{digits[2]}" if digits else None


@dataclass(frozen=True)
class TensorRTFeatures:
    version: str
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.x; kept but ignored in 11 and RTX)
    weak_fp16: bool  # BuilderFlag.FP16 (removed in 11 and TensorRT-RTX)
    implicit_int8: bool  # BuilderFlag.INT8 and IInt8EntropyCalibrator2 (removed in 11 and TensorRT-RTX)
    target: str = "tensorrt"  # a TARGETS key
    # IBuilderConfig.set_compute_capability: the GPUs an engine may target ("8.6", ...); () where the
    # builder compiles for the GPU it runs on
    compute_capabilities: tuple[str, ...] = ()
    runtime_cache: bool = False  # IRuntimeCache: just-in-time kernels kept across runs

    @property
    def spec(self) -> TensorRTTarget:
        return TARGETS[self.target]

    @property
    def name(self) -> str:
        """'TensorRT 10.3.0' or 'TensorRT-RTX 1.7.1.116', for messages."""
        return f"{self.spec.label} {self.version}"

    @classmethod
    def detect(cls, trt: ModuleType) -> TensorRTFeatures:
        flags = getattr(trt, "BuilderFlag", None)
        config = getattr(trt, "IBuilderConfig", None)
        members = getattr(getattr(trt, "ComputeCapability", None), "__members__", {})
        targets = (
            tuple(cc for cc in map(_sm_to_capability, members) if cc)
            if hasattr(config, "set_compute_capability")
            else ()
        )
        return cls(
            version=str(getattr(trt, "__version__", "unknown")),
            strongly_typed=hasattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED"),
            weak_fp16=hasattr(flags, "FP16"),
            implicit_int8=hasattr(flags, "INT8") and hasattr(trt, "IInt8EntropyCalibrator2"),
            target=target_of_module(trt),
            compute_capabilities=targets,
            runtime_cache=hasattr(trt, "IRuntimeCache"),
        )


def format_shape(shape) -> str:
    """(1, 3, 352, 352) -> '1x3x352x352', the form the CLI takes shapes in."""
    return "x".join(map(str, shape))


def dims(value) -> tuple[int, ...]:
    """A trt.Dims (or any sequence) as a tuple of ints, through len/getitem (what the stubs declare)."""
    return tuple(int(value[i]) for i in range(len(value)))


def read_engine_sidecar(engine_path: str | Path) -> tuple[ModelMetadata, dict]:
    """The engine's model metadata and its sidecar (the profile, builder and GPU it was built for)."""
    meta, data = read_model_metadata(engine_path)
    if data.get("format") != ENGINE_FORMAT:
        raise UserError(f"{sidecar_path(engine_path)} is not an msdeploy engine sidecar ({data.get('format')!r})")
    return meta, data


_LEVELS = {
    "INTERNAL_ERROR": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "VERBOSE": logging.DEBUG,
}


def _is_layer_listing(message: str) -> bool:
    """The builder's per-layer listing: TensorRT-RTX's "Layers:" dump, TensorRT's "Engine Layer Information"."""
    return message.startswith("Layers:") or message.lstrip().startswith("Engine Layer Information")


def make_logger(trt: ModuleType, keep_layers: bool = False):
    """A TensorRT logger that routes into Python logging (so -v shows TensorRT's own words) and keeps
    errors, warnings and INFO lines (a failed build says why; a build report lists them and reads the
    memory figures), and with `keep_layers` the builder's per-layer listing (VERBOSE)."""

    class Logger(trt.ILogger):  # type: ignore[name-defined]  # base from the module passed in
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.infos: list[str] = []
            self.layer_listings: list[str] = []

        def log(self, severity, msg: str) -> None:
            level = _LEVELS.get(getattr(severity, "name", str(severity)).split(".")[-1], logging.INFO)
            kept = {logging.CRITICAL: self.errors, logging.ERROR: self.errors, logging.WARNING: self.warnings}
            if level in kept:
                kept[level].append(msg)
            elif level == logging.INFO or "Memory" in msg[:80]:  # some releases log the memory figures verbose
                self.infos.append(msg)
            elif keep_layers and _is_layer_listing(msg):
                self.layer_listings.append(msg)
            log.log(level, "TensorRT: %s", msg)

    return Logger()


def start_tensorrt(factory: Callable, logger, what: str, product: str = "TensorRT"):
    """`trt.Builder(logger)` or `trt.Runtime(logger)`, refused with TensorRT's own reason when it could
    not start. Without a usable CUDA, TensorRT 10 raises from the constructor, while the 11.4 runtime
    returns an object around nothing, logs the error, and crashes the process on its first call or when
    it is freed (seen with the tensorrt-lean 11.4 wheel on a machine without a GPU). So the log is
    checked too, and such an object is never freed."""
    before = len(logger.errors)
    try:
        started = factory(logger)
    except Exception as exc:  # "pybind11::init(): factory function returned nullptr"
        raise UserError(f"{product} could not start {what} (is a GPU visible?): {exc}") from exc
    if len(logger.errors) > before:
        for leaked in (started, logger):  # one reference that is never dropped: freeing it would crash
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))
        raise UserError(f"{product} could not start {what}: {logger.errors[before]}")
    return started
