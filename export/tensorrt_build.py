"""Build a TensorRT engine from one of our ONNX models, with either of NVIDIA's builders: TensorRT
(10 on Jetson, 11 on desktops and servers) or TensorRT for RTX (RTX-class GPUs; builds without a GPU).

Precision comes from the graph: an ONNX with FP16 casts or Q/DQ nodes is built strongly typed.
Only where the installed TensorRT still has them (10.x), an FP32 ONNX may be built with the FP16
builder flag or the implicit INT8 calibrator; elsewhere that request is an error that says to run
`msdeploy quantize` first. Which path is taken depends on the features found (runtime.tensorrt_common),
never on a version string. Neither torch nor onnx is imported: this runs on the board.

The build is a few small steps (network from ONNX, config, profile, build, memory check, save), each
a function here. With the real TensorRT-RTX builder every step runs in this project's tests; the
TensorRT-only parts (GPU builds, DLA, the legacy calibrator) are checked with a recording fake and by
`msdeploy selftest --gpu` on a GPU.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from calibration.quantize import CALIBRATION_IMAGES, CALIBRATION_SEED
from export.boards import MemoryBudget, format_bytes, resolve_budget
from export.engine_report import BuildReport, parse_layers, parse_memory, summarize_warnings, write_report
from runtime.cuda import CudaApi, DeviceBuffer, DeviceInfo
from runtime.errors import UserError
from runtime.files import write_bytes_atomic, write_json_atomic
from runtime.metadata import (
    PRECISIONS,
    ModelMetadata,
    check_model_output,
    model_sha256,
    read_model_metadata,
    sidecar_path,
)
from runtime.tensorrt_common import (
    ENGINE_FORMAT,
    RTX_DEFAULT_COMPUTE_CAPABILITIES,
    RTX_NO_FP32_GEMM,
    TensorRTFeatures,
    format_shape,
    import_tensorrt,
    make_logger,
    start_tensorrt,
)

if TYPE_CHECKING:  # the tensorrt-stubs package: mypy checks our calls against TensorRT's API
    import tensorrt as trt_api

log = logging.getLogger(__name__)

DEFAULT_MIN_SIDE, DEFAULT_MAX_SIDE = 128, 1024
IMPLICIT_INT8_METHOD = "entropy"  # IInt8EntropyCalibrator2: TensorRT's recommended calibrator for CNNs


@dataclass(frozen=True)
class Profile:
    """One optimization profile for the image input: [B, 3, H, W] at min, opt and max."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class EngineOptions:
    model: Path
    precision: str | None = None  # None: what the ONNX graph says
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    batches: tuple[int, ...] = (1,)
    timing_cache: Path | None = None  # default: msdeploy.timing-cache beside the engine
    workspace: int | None = None  # bytes
    opt_level: int | None = None  # builder optimization level 0-5
    dla_core: int | None = None
    calib_data: Path | None = None  # legacy implicit INT8 only
    calib_count: int = CALIBRATION_IMAGES
    calib_seed: int = CALIBRATION_SEED
    calib_cache: Path | None = None
    recalibrate: bool = False
    # replace the default cache when it was made for an earlier export of this model (the selftest
    # re-exports when the weights change); a cache for other settings is still refused
    replace_cache_of_old_export: bool = False
    output: Path | None = None
    force: bool = False
    target: str | None = None  # "tensorrt" or "tensorrt-rtx"; None: what is installed
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX: "8.6", "12.0", or "current"; (): its default set
    memory_budget: int | None = None  # bytes for activations + weights; default from the board or the GPU
    board: str | None = None  # a preset of export.boards (its memory budget)
    report: bool = False  # also write ENGINE.report.md/.json: per-layer precision, warnings, memory
    command: str = ""  # the command line, for the report's stamp


@dataclass(frozen=True)
class BuildPlan:
    """How the network is built: the typing mode and the builder flags (names in trt.BuilderFlag)."""

    precision: str
    strongly_typed: bool
    flags: tuple[str, ...] = ()
    implicit_int8: bool = False


@dataclass
class EngineResult:
    path: Path
    sidecar: dict
    size_bytes: int
    seconds: float
    timing_cache: Path | None  # None: this builder has no timing cache (TensorRT-RTX)
    calibration_cache_reused: bool | None = None  # None: no implicit calibration
    notes: list[str] = field(default_factory=list)
    report: BuildReport | None = None
    report_files: tuple[Path, ...] = ()


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x352x352' -> (1, 3, 352, 352)."""
    if not re.fullmatch(r"\d+(x\d+)*", text.strip()):
        raise UserError(f"shape {text!r} is not of the form BxCxHxW, e.g. 1x3x352x352")
    return tuple(int(v) for v in text.strip().split("x"))


def parse_size(text: str) -> int:
    """'4G' -> 4 << 30 bytes (K, M and G units, an optional B; a plain number is bytes)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    value = text.strip().upper().removesuffix("B")
    try:
        return int(float(value[:-1]) * units[value[-1]]) if value[-1:] in units else int(value)
    except (ValueError, IndexError):
        raise UserError(f"expected a size such as 4G or 512M, got {text!r}") from None


def model_metadata(model: Path) -> ModelMetadata:
    """The ONNX model's metadata from its sidecar (no onnx import: this also runs on the board), for a
    graph TensorRT can build."""
    if not sidecar_path(model).is_file():  # it records the INT8 layout, which decides what TensorRT may build
        raise UserError(
            f"{model} has no sidecar {sidecar_path(model).name}; it holds the size rules, precision and INT8 "
            "layout of the model. Copy it with the model, or export again with `msdeploy export onnx`"
        )
    meta, data = read_model_metadata(model)
    layout = (data.get("int8") or {}).get("target", "tensorrt")
    if layout != "tensorrt":
        # cpu: asymmetric UINT8 activations, which TensorRT's explicit quantization does not take;
        # openvino: Q/DQ moved off the ops TensorRT fuses them into
        runtime = {"cpu": "ONNX Runtime", "openvino": "OpenVINO"}.get(layout, layout)
        raise UserError(
            f"{model} holds the {layout} INT8 layout (for {runtime}); TensorRT builds the TensorRT layout: "
            f"msdeploy quantize FP32_MODEL.onnx --precision int8 --target tensorrt --calib-data DIR"
        )
    return meta


def plan_build(graph_precision: str, requested: str | None, features: TensorRTFeatures) -> BuildPlan:
    """Choose typing and flags. The ONNX graph's precision wins; an FP32 graph may be lowered by the
    builder only where the legacy flags exist."""
    if requested is not None and requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    precision = requested or graph_precision
    if graph_precision != "fp32":
        if precision != graph_precision:
            raise UserError(
                f"the model is already {graph_precision} (its precision is in the graph); "
                f"drop --precision, or pass the FP32 model to build {precision}"
            )
        return BuildPlan(precision, strongly_typed=features.strongly_typed)
    if precision == "fp32":
        return BuildPlan("fp32", strongly_typed=features.strongly_typed)
    if precision == "fp16":
        if not features.weak_fp16:
            raise UserError(
                f"{features.name} takes precision only from the graph (no FP16 builder flag); "
                "run `msdeploy quantize MODEL.onnx --precision fp16` first and build the FP16 ONNX"
            )
        return BuildPlan("fp16", strongly_typed=False, flags=("FP16",))
    if not features.implicit_int8:
        raise UserError(
            f"{features.name} has no implicit INT8 calibration; run "
            "`msdeploy quantize MODEL.onnx --precision int8 --calib-data DIR` first and build the Q/DQ ONNX"
        )
    # layers without an INT8 kernel fall back to FP16 rather than FP32, where FP16 exists
    flags = ("INT8", "FP16") if features.weak_fp16 else ("INT8",)
    return BuildPlan("int8", strongly_typed=False, flags=flags, implicit_int8=True)


def resolve_profile(meta: ModelMetadata, options: EngineOptions) -> Profile:
    """The profile from the options, defaulting to sides 128..1024 and the batch sizes asked, checked
    against the model's size rules (minimum side, fixed size)."""
    batches = sorted(set(options.batches or (1,)))
    if batches[0] < 1:
        raise UserError(f"batch sizes must be >= 1, got {batches}")
    if meta.static_size:
        lo = hi = opt = tuple(meta.static_size)
    else:
        lo = (max(DEFAULT_MIN_SIDE, meta.min_size),) * 2
        hi = (DEFAULT_MAX_SIDE,) * 2
        opt = tuple(meta.default_size)
    if options.dla_core is not None:
        return _fixed_dla_profile(meta, options, batches, opt)
    lo_shape = tuple(options.min_shape or (batches[0], 3, *lo))
    hi_shape = tuple(options.max_shape or (batches[-1], 3, *hi))
    # a default opt stays inside the given min/max (e.g. --max-shape 1x3x256x256 with the 352 default)
    opt_shape = tuple(
        options.opt_shape or (min(max(v, a), b) for v, a, b in zip((batches[0], 3, *opt), lo_shape, hi_shape))
    )
    return _checked_profile(meta, Profile(meta.input_name, lo_shape, opt_shape, hi_shape))


def _fixed_dla_profile(
    meta: ModelMetadata, options: EngineOptions, batches: list[int], default_side: tuple[int, ...]
) -> Profile:
    """DLA has no dynamic dimensions (TensorRT's DLA restrictions: min = opt = max), so a DLA engine
    takes one shape: --opt-shape, else the model's default size and the one batch asked."""
    if len(batches) > 1 and options.opt_shape is None:
        raise UserError(
            f"a DLA engine takes one fixed input shape; pass one batch size, not {batches}, or --opt-shape BxCxHxW"
        )
    shape = tuple(options.opt_shape or (batches[0], 3, *default_side))
    for label, given in (("min", options.min_shape), ("max", options.max_shape)):
        if given is not None and tuple(given) != shape:
            raise UserError(
                f"--{label}-shape {format_shape(given)}: a DLA engine takes one fixed input shape "
                f"({format_shape(shape)}; DLA has no dynamic dimensions). Pass --opt-shape alone, "
                "or build without --dla-core for a range of sizes on the GPU"
            )
    return _checked_profile(meta, Profile(meta.input_name, shape, shape, shape))


def _checked_profile(meta: ModelMetadata, profile: Profile) -> Profile:
    """The profile, refused with the reason when the model cannot take its shapes."""
    for label, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"--{label}-shape {format_shape(shape)} must be Bx3xHxW")
        if min(shape[2:]) < meta.min_size:
            raise UserError(f"--{label}-shape {format_shape(shape)}: the model needs sides >= {meta.min_size}")
        if meta.static_size and list(shape[2:]) != list(meta.static_size):
            raise UserError(
                f"--{label}-shape {format_shape(shape)}: this ONNX was exported for "
                f"{meta.static_size[0]}x{meta.static_size[1]} only; export without --static for other sizes"
            )
    if not all(a <= b <= c for a, b, c in zip(profile.min, profile.opt, profile.max)):
        raise UserError(
            f"profile must satisfy min <= opt <= max on every axis, got min {format_shape(profile.min)}, "
            f"opt {format_shape(profile.opt)}, max {format_shape(profile.max)}"
        )
    return profile


def default_engine_path(model: Path, precision: str, graph_precision: str) -> Path:
    """model.onnx -> model.engine; an FP32 model lowered by the builder -> model.fp16.engine."""
    suffix = f".{precision}" if precision != graph_precision else ""
    return model.with_name(f"{model.stem}{suffix}.engine")


def make_calibrator(
    trt: ModuleType,
    cuda: CudaApi,
    batches: Sequence[np.ndarray],
    cache: bytes | None,
    on_cache: Callable[[bytes], None],
):
    """A legacy implicit-INT8 calibrator (TensorRT 10 only) feeding one preprocessed image per batch.
    TensorRT reads the cache first; when it is valid it never asks for a batch."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]  # base from the module passed in
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = DeviceBuffer(cuda)
            self.stream = cuda.stream_create()
            self.batches_read = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.batches_read >= len(batches):
                return None
            batch = np.ascontiguousarray(batches[self.batches_read])
            self.buffer.ensure(batch.nbytes)
            cuda.copy_to_device(self.buffer.ptr, batch, self.stream)
            cuda.stream_synchronize(self.stream)
            self.batches_read += 1
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache

        def write_calibration_cache(self, data) -> None:
            on_cache(bytes(data))

    return EntropyCalibrator()


def check_target(features: TensorRTFeatures, options: EngineOptions) -> None:
    """Refuse options the chosen builder cannot honour, before any work."""
    if options.target is not None and options.target != features.target:
        raise UserError(f"--target {options.target} asked, but the TensorRT module given is {features.name}")
    if options.dla_core is not None and not features.spec.dla:
        raise UserError(
            f"--dla-core: {features.name} builds for RTX GPUs, which have no DLA; build on the Jetson "
            "with TensorRT (--target tensorrt)"
        )
    if options.board is not None and not features.spec.dla:
        raise UserError(
            f"--board {options.board}: the board presets are Jetson boards, which {features.name} does not build "
            "for; pass --memory-budget SIZE for the GPU the engine is for"
        )
    if options.compute_capabilities and not features.compute_capabilities:
        raise UserError(
            f"--compute-capability: {features.name} builds for the GPU it runs on; "
            "compute-capability targets are for --target tensorrt-rtx"
        )
    unknown = [c for c in options.compute_capabilities if c != "current" and c not in features.compute_capabilities]
    if unknown:
        raise UserError(
            f"--compute-capability {', '.join(unknown)}: {features.name} builds for "
            f"{', '.join(features.compute_capabilities)} (or 'current', the GPU of this machine)"
        )


def build_device(features: TensorRTFeatures, cuda: CudaApi | None, options: EngineOptions) -> DeviceInfo | None:
    """The GPU of this machine; None where the builder needs none (TensorRT-RTX ahead of time)."""
    needs_gpu = not features.spec.builds_without_gpu or "current" in options.compute_capabilities
    try:
        return (cuda or CudaApi()).device()
    except UserError:
        if needs_gpu:
            raise
        return None


def network_from_onnx(
    trt: ModuleType,
    builder: trt_api.Builder,
    logger,  # make_logger(trt): an ILogger that keeps what TensorRT said
    model: Path,
    plan: BuildPlan,
    features: TensorRTFeatures,
    dla: bool,
) -> tuple[trt_api.INetworkDefinition, trt_api.OnnxParser]:
    """Parse the ONNX into a network; a graph the parser refuses names the node and the op."""
    # TensorRT 10 builds strongly typed only when asked; 11 and TensorRT-RTX accept the flag and ignore it
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network: trt_api.INetworkDefinition = builder.create_network(flags)
    parser: trt_api.OnnxParser = trt.OnnxParser(network, logger)
    adjust_for_dla = getattr(getattr(trt, "OnnxParserFlag", None), "ADJUST_FOR_DLA", None)  # 10.16 and later
    if dla and adjust_for_dla is not None:
        parser.set_flag(adjust_for_dla)  # lets the parser reshape layers so that more of them run on the DLA
    if not parser.parse_from_file(str(model)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"{features.name} could not parse {model}: " + "; ".join(errors[:5]))
    if network.num_inputs == 0 or network.num_outputs == 0:
        raise UserError(f"{features.name} found no network in {model}: not an ONNX model, or a truncated one")
    return network, parser


def _parser_error(error) -> str:
    """A parser error as 'node NAME (OP): what' where the binding says which node (real TensorRT)."""
    node_name = getattr(error, "node_name", None)
    if node_name is None:
        return str(error)
    name, op, desc = node_name(), error.node_operator(), error.desc()
    return f"node {name} ({op}): {error.code().name}: {desc}" if name or op else f"{error.code().name}: {desc}"


def make_config(
    trt: ModuleType, builder: trt_api.Builder, plan: BuildPlan, options: EngineOptions, report: bool
) -> trt_api.IBuilderConfig:
    """The builder config: memory pool, optimization level, precision flags (TensorRT 10 only), and
    detailed profiling where a report asks for the per-layer listing."""
    if options.opt_level is not None and not 0 <= options.opt_level <= 5:
        raise UserError(f"--opt-level must be 0..5, got {options.opt_level}")
    config: trt_api.IBuilderConfig = builder.create_builder_config()
    if options.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace))
    if options.opt_level is not None:
        config.builder_optimization_level = int(options.opt_level)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if report and hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return config


def set_compute_capabilities(
    trt: ModuleType,
    config,  # TensorRT-RTX's IBuilderConfig: its compute-capability calls are not in tensorrt-stubs
    features: TensorRTFeatures,
    asked: Sequence[str],
    device: DeviceInfo | None,
) -> list[str]:
    """TensorRT-RTX: the GPUs the engine may run on, as the sidecar records them ('current' becomes
    this GPU's). Nothing asked: the builder's default set, built ahead of time without a GPU."""
    if not features.compute_capabilities:
        return []
    if not asked:
        return list(RTX_DEFAULT_COMPUTE_CAPABILITIES)
    if "current" in asked and len(asked) > 1:
        raise UserError("--compute-capability current stands alone (this GPU); or list compute capabilities")
    config.num_compute_capabilities = len(asked)
    for index, cc in enumerate(asked):
        member = "CURRENT" if cc == "current" else "SM" + cc.replace(".", "")
        if not config.set_compute_capability(getattr(trt.ComputeCapability, member), index):
            raise UserError(f"{features.name} refused compute capability {cc} (target {index + 1} of {len(asked)})")
    assert device is not None or "current" not in asked  # build_device needs a GPU for 'current'
    return [device.compute_capability if cc == "current" and device else cc for cc in asked]


def add_profile(trt: ModuleType, builder: trt_api.Builder, config: trt_api.IBuilderConfig, profile: Profile) -> None:
    trt_profile: trt_api.IOptimizationProfile = builder.create_optimization_profile()
    trt_profile.set_shape(
        profile.input, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max))
    )
    config.add_optimization_profile(trt_profile)


def configure_dla(trt: ModuleType, builder: trt_api.Builder, config: trt_api.IBuilderConfig, dla_core: int) -> None:
    if dla_core >= builder.num_DLA_cores:
        raise UserError(
            f"--dla-core {dla_core}: this device has {builder.num_DLA_cores} DLA core(s) "
            "(Jetson Orin AGX/NX: 2, Orin NX 8GB: 1, Orin Nano: none)"
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(dla_core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU


class TimingCache:
    """The builder's timing cache, loaded before and saved after the build (TensorRT only)."""

    def __init__(self, config: trt_api.IBuilderConfig, path: Path) -> None:
        self.path = path
        self.reused = path.is_file()
        cache: trt_api.ITimingCache = config.create_timing_cache(path.read_bytes() if self.reused else b"")
        if not config.set_timing_cache(cache, False):
            raise UserError(f"timing cache {path} does not match this TensorRT or GPU; delete it")

    def save(self, config: trt_api.IBuilderConfig) -> None:
        write_bytes_atomic(self.path, bytes(config.get_timing_cache().serialize()))


def build_serialized(
    builder: trt_api.Builder,
    network: trt_api.INetworkDefinition,
    config: trt_api.IBuilderConfig,
    logger,  # make_logger(trt): an ILogger that keeps what TensorRT said
    features: TensorRTFeatures,
) -> tuple[bytes, float]:
    start = time.perf_counter()
    serialized: trt_api.IHostMemory | None = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log (-v)"
        raise UserError(f"{features.name} could not build the engine: {detail}")
    return bytes(serialized), seconds


def check_memory(
    memory: dict[str, int | None], budget: MemoryBudget | None, profile: Profile, min_side: int = 32
) -> str | None:
    """Refuse an engine whose activations and weights exceed the budget (nothing is written); return a
    note when there is no budget to check against."""
    needed = (memory.get("activation_bytes") or 0) + (memory.get("weights_bytes") or 0)
    if budget is None or not needed:
        return None if needed else "the builder did not state the engine's memory; not checked against a budget"
    if needed > budget.bytes:
        raise UserError(
            f"the engine needs {format_bytes(needed)} for its profile's largest shape {format_shape(profile.max)} "
            f"(activations {format_bytes(memory.get('activation_bytes'))}, weights "
            f"{format_bytes(memory.get('weights_bytes'))}); the budget is {format_bytes(budget.bytes)} "
            f"({budget.source}). Nothing was written. {_smaller_profile_hint(profile, min_side)}build FP16/INT8 "
            "instead of FP32, or raise --memory-budget if the device has room"
        )
    return None


def _smaller_profile_hint(profile: Profile, min_side: int) -> str:
    """'Lower the largest shape (e.g. --max-shape 1x3x768x768) or batch, ' where the profile has a range."""
    if profile.min == profile.max:
        return "This fixed shape does not fit: choose a smaller --opt-shape, "
    smaller = [max(min_side, lo, side * 3 // 4 // 32 * 32) for side, lo in zip(profile.max[2:], profile.min[2:])]
    return f"Lower the largest shape (e.g. --max-shape {profile.max[0]}x3x{smaller[0]}x{smaller[1]}) or batch, "


def engine_sidecar(
    features: TensorRTFeatures,
    device: DeviceInfo | None,
    plan: BuildPlan,
    profile: Profile,
    model: Path,
    onnx_sha256: str,
    seconds: float,
    settings: dict,
    meta: ModelMetadata,
    compute_capabilities: list[str],
    memory: dict[str, int | None],
) -> dict:
    return {
        "format": ENGINE_FORMAT,
        "target": features.target,
        "tensorrt": features.version,  # the version of the builder named by "target"
        "gpu": {"name": device.name, "compute_capability": device.compute_capability} if device else None,
        # TensorRT-RTX: the GPUs it may run on; [] for TensorRT (the build GPU only)
        "compute_capabilities": compute_capabilities,
        "precision": plan.precision,
        "typing": "strong" if plan.strongly_typed else "weak",
        "builder_flags": list(plan.flags),
        "profile": profile.as_dict(),
        "memory": memory,
        "onnx": {"file": model.name, "sha256": onnx_sha256},
        "build_seconds": round(seconds, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": settings,
        "model": {**asdict(meta), "precision": plan.precision},
    }


def build_engine(
    options: EngineOptions,
    progress: Callable[[str], None] | None = None,
    *,
    trt: ModuleType | None = None,
    cuda: CudaApi | None = None,
) -> EngineResult:
    """Build, write atomically with its JSON sidecar (and report), and return what was built. `trt`
    and `cuda` default to the installed TensorRT (options.target) and libcudart (tests pass fakes)."""
    say = progress or log.info
    model = Path(options.model)
    if not model.is_file():
        raise UserError(f"model file not found: {model}")
    meta = model_metadata(model)
    trt = trt or import_tensorrt(options.target)
    features = TensorRTFeatures.detect(trt)
    check_target(features, options)
    plan = plan_build(meta.precision, options.precision, features)
    profile = resolve_profile(meta, options)
    output = check_model_output(
        options.output or default_engine_path(model, plan.precision, meta.precision), options.force
    )
    if options.dla_core is not None and plan.precision == "fp32":
        raise UserError("DLA runs FP16 and INT8 only; build an FP16 or INT8 model for --dla-core")
    no_fp32 = sorted(set(RTX_NO_FP32_GEMM) & set(options.compute_capabilities)) if features.compute_capabilities else []
    if no_fp32 and plan.precision == "fp32":
        raise UserError(
            f"--compute-capability {', '.join(no_fp32)} (Turing): {features.name} has no FP32 matrix products there; "
            "build the FP16 or INT8 model (msdeploy quantize MODEL.onnx --precision fp16), or leave out 7.5"
        )
    if plan.implicit_int8 and options.calib_data is None:
        # also with a cache: its key holds a fingerprint of the images it was made from
        raise UserError("implicit INT8 needs calibration images: pass --calib-data DIR")
    device = build_device(features, cuda, options)
    # an ahead-of-time engine is for other GPUs: this machine's memory says nothing about theirs
    runs_here = not features.spec.builds_without_gpu or "current" in options.compute_capabilities
    budget = resolve_budget(options.memory_budget, options.board, device if runs_here else None)
    onnx_sha256 = model_sha256(model)

    logger = make_logger(trt, keep_layers=options.report)
    builder: trt_api.Builder = start_tensorrt(trt.Builder, logger, "a builder", features.spec.label)
    say(f"parsing {model} with {features.name} ({'strongly' if plan.strongly_typed else 'weakly'} typed)")
    # the parser owns the weights the network points at: it stays referenced until the build is done
    network, _parser = network_from_onnx(trt, builder, logger, model, plan, features, options.dla_core is not None)
    config = make_config(trt, builder, plan, options, options.report)
    targets = set_compute_capabilities(trt, config, features, options.compute_capabilities, device)
    add_profile(trt, builder, config, profile)
    if options.dla_core is not None:
        configure_dla(trt, builder, config, options.dla_core)
    calibration = None
    if plan.implicit_int8:
        calibration = _ImplicitCalibration(trt, cuda or CudaApi(), model, onnx_sha256, meta, profile, options, say)
        calibration.attach(builder, config, profile)
    timing = None
    if features.spec.timing_cache:
        timing = TimingCache(config, Path(options.timing_cache or output.with_name("msdeploy.timing-cache")))
    where = f"for compute capabilities {', '.join(targets)}" if targets else f"on {device.name}" if device else ""
    cache_note = f"; timing cache {'reused' if timing.reused else 'new'}: {timing.path}" if timing else ""
    say(
        f"building {plan.precision} engine {where}, profile {format_shape(profile.min)} .. "
        f"{format_shape(profile.max)}{cache_note}"
    )
    engine_bytes, seconds = build_serialized(builder, network, config, logger, features)
    memory = parse_memory(logger.infos)
    notes = [n for n in [check_memory(memory, budget, profile, meta.min_size)] if n]
    if budget is None and memory.get("activation_bytes"):
        notes.append("no memory budget for the GPUs this engine is for; pass --memory-budget to check it fits")
    if timing is not None:
        timing.save(config)
    if calibration is not None:
        calibration.save()

    settings = {
        "workspace_bytes": options.workspace,
        "opt_level": options.opt_level,
        "dla_core": options.dla_core,
        "timing_cache": str(timing.path) if timing else None,
        "implicit_int8": calibration.record() if calibration else None,
        "memory_budget": {"bytes": budget.bytes, "source": budget.source} if budget else None,
        "compute_capabilities_asked": list(options.compute_capabilities),  # []: the builder's default set
    }
    sidecar = engine_sidecar(
        features, device, plan, profile, model, onnx_sha256, seconds, settings, meta, targets, memory
    )
    write_bytes_atomic(output, engine_bytes)  # the engine file alone: trtexec and Triton load it as is
    write_json_atomic(sidecar_path(output), sidecar)
    result = EngineResult(
        output,
        sidecar,
        len(engine_bytes),
        seconds,
        timing.path if timing else None,
        calibration.reused if calibration else None,
        notes,
    )
    if device is None:
        notes.append(f"built without a GPU; running it needs {features.spec.runs_on}")
    if options.report:
        result.report = BuildReport(
            engine=output.name,
            onnx=model.name,
            builder=features.name,
            precision=plan.precision,
            typing=sidecar["typing"],
            profile=profile.as_dict(),
            compute_capabilities=targets or None,
            network_layers=int(network.num_layers),
            build_seconds=seconds,
            engine_bytes=len(engine_bytes),
            memory=memory,
            warnings=summarize_warnings(logger.warnings),
            layers=parse_layers(logger.layer_listings),
            layer_note="" if logger.layer_listings else f"{features.name} printed none for this build",
        )
        from runtime.environment import stamp

        result.report_files = write_report(result.report, output, stamp(options.command or "msdeploy export engine"))
    return result


class _ImplicitCalibration:
    """The legacy TensorRT-10 INT8 path: images, a keyed cache (ours, wrapping TensorRT's), the calibrator."""

    def __init__(self, trt, cuda, model: Path, onnx_sha256: str, meta: ModelMetadata, profile: Profile, options, say):
        from calibration.cache import CalibrationSettings, cache_key, load_tensorrt_cache
        from calibration.data import load_calibration_set

        self.shape = (1, 3, *profile.opt[2:])
        self.path = Path(options.calib_cache or model.with_name(f"{model.name}.calib-tensorrt-implicit.json"))
        settings = CalibrationSettings(
            method=IMPLICIT_INT8_METHOD,
            count=options.calib_count,
            seed=options.calib_seed,
            size=(profile.opt[2], profile.opt[3]),
            calibrated_ops=("tensorrt-implicit",),
        )
        self.key, _ = cache_key(onnx_sha256, settings, options.calib_data)
        replace_old = options.replace_cache_of_old_export and options.calib_cache is None
        cached = None if options.recalibrate else load_tensorrt_cache(self.path, self.key, replace_old, say)
        self.reused = cached is not None
        batches: list[np.ndarray] = []
        if cached is not None:
            say(f"reusing calibration cache {self.path} (no image read, no calibration run)")
        else:
            calib = load_calibration_set(
                options.calib_data, meta, count=options.calib_count, seed=options.calib_seed, size=settings.size
            )
            batches = [feed[meta.input_name] for feed in calib.feeds]
            say(f"calibrating (TensorRT implicit INT8, entropy) on {len(batches)} images")
        self.images = len(batches)
        self._new_cache: bytes | None = None
        self.calibrator = make_calibrator(trt, cuda, batches, cached, self._keep)
        self.trt = trt

    def attach(self, builder, config, profile: Profile) -> None:
        """The calibrator, and a one-shape calibration profile at the profile's optimum size."""
        config.int8_calibrator = self.calibrator
        calib_profile: trt_api.IOptimizationProfile = builder.create_optimization_profile()
        calib_shape = self.trt.Dims(list(self.shape))
        calib_profile.set_shape(profile.input, calib_shape, calib_shape, calib_shape)
        config.set_calibration_profile(calib_profile)

    def _keep(self, data: bytes) -> None:
        self._new_cache = data

    def save(self) -> None:
        from calibration.cache import save_tensorrt_cache

        if self._new_cache is not None and not self.reused:
            save_tensorrt_cache(self.path, self.key, self._new_cache)

    def record(self) -> dict:
        return {"cache": str(self.path), "reused": self.reused, "images": self.images, "method": IMPLICIT_INT8_METHOD}
