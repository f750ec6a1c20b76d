"""OpenVINO backend (`openvino-cpu`): our ONNX files (FP32, FP16, INT8 Q/DQ) on an x86 CPU.

OpenVINO reads the ONNX file itself (no conversion step, no second artifact) and compiles it for the
CPU once per input shape (a static shape runs far faster than the dynamic graph), keeping compiled
blobs in its model cache, so the next process starts in a fraction of the compile time. Floats run
in the inference precision: BF16 where the CPU has AVX-512 BF16 or AMX (OpenVINO's own default on
AMX CPUs), FP32 elsewhere; `inference_precision` overrides it. An INT8 Q/DQ model runs its quantized
layers in INT8 (VNNI/AMX) and the rest in that precision.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.cpu_features import cpu_features
from runtime.errors import UserError
from runtime.metadata import ModelMetadata, read_model_metadata, read_sidecar
from runtime.runner import Runner, TensorSpec

log = logging.getLogger("msdeploy.openvino")
INFERENCE_PRECISIONS = ("auto", "bf16", "f32")  # auto: bf16 where the CPU computes it natively
CACHE_ENV = "MSDEPLOY_OPENVINO_CACHE"  # the model cache folder; "off" disables it
STATIC_SHAPES_KEPT = 4  # compiled input shapes held at once (each holds its own plan and buffers)


def amx_int8_conv_hazard(in_channels: int, kernel: Sequence[int]) -> bool:
    """A Conv that OpenVINO 2026.4's AMX INT8 kernels computed wrongly when its input was quantized,
    as a rule that covers every wrong shape seen: 16 to 63 input channels and a kernel of 4x4 or more
    (pvt_v2_b0's stage-1 spatial reduction: 32 channels, 8x8). Found layer by layer against ONNX
    Runtime; the shapes tried, and which were wrong, are in docs/results/openvino-int8-convs.md
    (benchmarks/check_openvino_amx_convs.py). The openvino INT8 layout leaves such Convs float."""
    return 16 <= in_channels < 64 and min(kernel) >= 4


def _dequantized(value) -> bool:
    """Whether an OpenVINO graph value is a dequantized integer tensor (Convert from int8/uint8, then
    the Subtract/Multiply that OpenVINO's ONNX reader makes of a DequantizeLinear, maybe a Cast, and
    the Transposes and Reshapes the openvino layout leaves after it)."""
    node = value.get_node()
    while node.get_type_name() in ("Multiply", "Subtract", "Reshape", "Transpose", "Convert"):
        if node.get_type_name() == "Convert" and node.get_input_element_type(0).get_type_name() in ("i8", "u8"):
            return True
        node = node.input_value(0).get_node()  # a Convert between floats: the FP16 layout's Cast
    return False


def amx_int8_hazards(model) -> list[str]:
    """Convolutions of an OpenVINO model (as read) with a quantized input that fit
    `amx_int8_conv_hazard`."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution" or not _dequantized(op.input_value(0)):
            continue
        weight = op.get_input_partial_shape(1)
        if weight.rank.is_static and len(weight) == 4 and all(d.is_static for d in weight):
            _, cin, kh, kw = (d.get_length() for d in weight)
            if amx_int8_conv_hazard(cin, (kh, kw)):
                found.append(op.get_friendly_name())
    return found


def default_inference_precision() -> str:
    return "bf16" if cpu_features().bf16 else "f32"


def resolve_inference_precision(asked: str | None) -> str:
    """`auto`/None -> what this CPU runs best; `bf16` is refused where the CPU cannot run it."""
    asked = asked or "auto"
    if asked not in INFERENCE_PRECISIONS:
        raise UserError(f"inference precision {asked!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    if asked == "auto":
        return default_inference_precision()
    if asked == "bf16" and not cpu_features().bf16:
        raise UserError(
            "this CPU has neither AVX-512 BF16 nor AMX, so OpenVINO would emulate BF16 slowly; "
            "use --inference-precision f32 (or auto)"
        )
    return asked


def cache_dir() -> Path | None:
    """Where compiled models are cached: $MSDEPLOY_OPENVINO_CACHE, else ~/.cache/msdeploy/openvino."""
    value = os.environ.get(CACHE_ENV)
    if value and value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "msdeploy" / "openvino"


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def _metadata(path: str, model) -> ModelMetadata | None:
    """Our metadata as the file itself carries it (the ONNX metadata_props OpenVINO keeps in the
    model's rt_info; a sidecar may be stale), else the sidecar's, else None (not our file)."""
    info = model.get_rt_info()
    if "framework" in info:
        props = {key: str(_plain(value, str)) for key, value in _plain(info["framework"], dict).items()}
        if "format" in props:
            return ModelMetadata.from_props(props, path)
    return read_model_metadata(path)[0] if read_sidecar(path) is not None else None


def _plain(value, kind: type):
    """An rt_info entry as a Python value: OpenVINO hands some out wrapped (OVAny), some already plain."""
    return value.astype(kind) if hasattr(value, "astype") else value


def _last_line(exc: Exception) -> str:
    """OpenVINO's messages end with the useful line (after its source locations)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _spec(port) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))


class OpenVINORunner(Runner):
    backend = "openvino-cpu"

    def __init__(
        self,
        path: str,
        *,
        threads: int | None = None,
        inference_precision: str | None = None,
        cache: bool = True,
    ):
        try:
            import openvino as ov
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as exc:
            raise UserError("OpenVINO is not installed: pip install 'multiscale-deploy[openvino]'") from exc
        if not str(path).endswith(".onnx"):
            raise UserError(f"{path}: openvino-cpu runs .onnx models (ours, with their sidecar)")
        self.inference_precision = resolve_inference_precision(inference_precision)
        core = ov.Core()
        folder = cache_dir() if cache else None
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                core.set_property({props.cache_dir: str(folder)})
            except OSError:  # a read-only home (containers): run without the cache
                folder = None
                log.warning("OpenVINO model cache %s cannot be written; compiling without it", folder)
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,  # one stream: a request uses every thread
            hints.inference_precision: ov.Type.bf16 if self.inference_precision == "bf16" else ov.Type.f32,
        }
        if threads:
            config[props.inference_num_threads] = threads
        self.core, self.config = core, config
        try:
            self.model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO's own error types (unreadable file, unsupported op)
            raise UserError(f"OpenVINO cannot read {path}: {_last_line(exc)}") from exc
        super().__init__(str(path), _metadata(str(path), self.model))
        hazards = amx_int8_hazards(self.model) if cpu_features().amx_int8 else []
        if hazards:
            log.warning(
                "%s has %d INT8 convolution(s) with 16-63 input channels and a 4x4 or larger kernel, which "
                "OpenVINO's AMX INT8 kernels computed wrongly (docs/openvino.md); write this model with "
                "`msdeploy quantize --target openvino`, which leaves them float",
                path,
                len(hazards),
            )
        self.inputs = [_spec(p) for p in self.model.inputs]
        self.outputs = [_spec(p) for p in self.model.outputs]
        self.compile_seconds = 0.0  # all compiles so far (each new input shape compiles once)
        self.from_cache: bool | None = None  # whether the latest compile came from the model cache
        self._static: OrderedDict[tuple, tuple] = OrderedDict()  # input shapes -> (compiled model, request)

    def _request(self, feed: dict[str, np.ndarray]):
        """An infer request compiled for exactly these input shapes. OpenVINO's CPU plugin runs a
        model reshaped to static sizes much faster than the dynamic one (it plans memory and picks
        kernels once), so each new shape is compiled once (then cached on disk) and reused."""
        key = tuple((name, array.shape) for name, array in sorted(feed.items()))
        if key in self._static:
            self._static.move_to_end(key)
            return self._static[key][1]
        start = time.perf_counter()
        try:
            model = self.model.clone()
            model.reshape({name: list(shape) for name, shape in key})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except Exception as exc:  # OpenVINO's own error types: unsupported ops, a shape the graph cannot take
            shapes = ", ".join(f"{name} {list(shape)}" for name, shape in key)
            raise UserError(f"OpenVINO cannot compile {self.path} for {shapes}: {_last_line(exc)}") from exc
        self.compile_seconds += time.perf_counter() - start
        request = compiled.create_infer_request()
        # the compiled model is kept beside its request: a request whose compiled model was freed
        # crashes the process on its next infer
        self._static[key] = (compiled, request)
        if len(self._static) > STATIC_SHAPES_KEPT:
            self._static.popitem(last=False)
        return request

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request(feed).infer(feed)
        # copied: the request reuses its output buffers on the next call
        return {spec.name: np.array(value) for spec, value in zip(self.outputs, results.values())}

    def close(self) -> None:
        self._static.clear()
        self.model = self.core = None
