"""A recording fake of the `tensorrt` module and of our CUDA layer, for testing OUR logic only.

It mimics the API surface that export/tensorrt_build.py and runtime/tensorrt_backend.py use, with the
feature sets of TensorRT 10 (weak-typing flags and the implicit INT8 calibrator present), 11 (both
removed) and TensorRT-RTX (`rtx=True`: compute-capability targets, a runtime cache; the builder
itself is tested for real in tests/export/test_tensorrt_rtx.py, the fake covers running its engines, which
needs a GPU). Every call is recorded. "Engines" are JSON that name the ONNX file; the fake execution
context runs that ONNX with ONNX Runtime on bytes in fake device memory, so address binding, buffer
growth, copies and CUDA-graph replay are exercised for real. None of this says TensorRT works.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from runtime.cuda import DeviceInfo


class FakeCuda:
    """Device memory as numpy byte arrays; streams run work at once unless a graph capture is open."""

    def __init__(self, device: DeviceInfo | None = None) -> None:
        self._device = device or DeviceInfo("Fake Orin", "8.7")
        self.memory: dict[int, np.ndarray] = {}
        self.calls: list[str] = []
        self._next = 0x10000
        self._capturing: list | None = None
        self.graphs: dict[int, list] = {}

    def _record(self, name: str) -> None:
        self.calls.append(name)

    def device(self) -> DeviceInfo:
        self._record("device")
        return self._device

    def malloc(self, nbytes: int) -> int:
        self._record(f"malloc {nbytes}")
        ptr, self._next = self._next, self._next + nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, dtype=np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        self._record("free")
        del self.memory[ptr]

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._record("h2d")
        self.memory[ptr][: host.nbytes] = np.ascontiguousarray(host).view(np.uint8).ravel()

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._record("d2h")
        host.view(np.uint8).ravel()[:] = self.memory[ptr][: host.nbytes]

    def enqueue(self, work) -> None:
        """Called by the fake execution context: run now, or record into the open capture."""
        if self._capturing is not None:
            self._capturing.append(work)
        else:
            work()

    def stream_create(self) -> int:
        return 1

    def stream_synchronize(self, stream: int) -> None:
        self._record("sync")

    def stream_destroy(self, stream: int) -> None:
        self._record("stream_destroy")

    def event_create(self) -> int:
        return 7

    def event_record(self, event: int, stream: int) -> None:
        self._record("event")

    def event_elapsed_ms(self, start: int, end: int) -> float:
        return 1.5

    def event_destroy(self, event: int) -> None:
        pass

    def capture_begin(self, stream: int) -> None:
        self._record("capture_begin")
        self._capturing = []

    def capture_end(self, stream: int) -> int:
        self._record("capture_end")
        graph = 0x900 + len(self.graphs)
        self.graphs[graph], self._capturing = self._capturing or [], None
        return graph

    def graph_launch(self, graph: int, stream: int) -> None:
        self._record("graph_launch")
        for work in self.graphs[graph]:
            work()

    def graph_destroy(self, graph: int) -> None:
        self._record("graph_destroy")
        del self.graphs[graph]


class DataType(Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT32 = np.int32


class TensorIOMode(Enum):
    INPUT = 1
    OUTPUT = 2


@dataclass
class Recorder:
    network_flags: list[int] = field(default_factory=list)
    builder_flags: list[str] = field(default_factory=list)
    profiles: list[tuple] = field(default_factory=list)
    calibration_profile: tuple | None = None
    parsed: list[str] = field(default_factory=list)
    workspace: int | None = None
    opt_level: int | None = None
    dla: tuple | None = None
    parser_flags: list[str] = field(default_factory=list)
    timing_cache_in: bytes | None = None
    timing_cache_calls: int = 0
    compute_capabilities: list[str] = field(default_factory=list)
    runtime_cache_in: bytes | None = None
    calibration_batches: int = 0
    calibration_cache_read: bool = False
    builds: int = 0


def make_fake_tensorrt(
    version: str = "10.3.0",
    *,
    legacy: bool = True,
    rtx: bool = False,
    dla_cores: int = 0,
    parser_flags: tuple[str, ...] = (),
    activation_bytes: int = 300 << 20,
    cuda: FakeCuda,
):
    """A module-like object with TensorRT 10's (legacy=True), 11's (legacy=False) or TensorRT-RTX's
    (rtx=True) feature set; `parser_flags` names the OnnxParserFlag members it has beyond those we
    never set; the builder logs `activation_bytes` as the engine's activation memory."""
    rec = Recorder()
    legacy = legacy and not rtx
    trt = types.ModuleType("tensorrt_rtx" if rtx else "tensorrt")
    trt.__version__ = version
    trt.recorder = rec

    class Severity(Enum):
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity

    class NetworkDefinitionCreationFlag(Enum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

        def __int__(self) -> int:
            return self.value

    flag_names = ["GPU_FALLBACK", "TF32"] + (["FP16", "INT8"] if legacy else [])
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")
    trt.BuilderFlag = types.SimpleNamespace(**{n: n for n in flag_names})
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = TensorIOMode
    trt.ILogger = ILogger
    trt.nptype = lambda dtype: dtype.value
    trt.Dims = tuple
    trt.OnnxParserFlag = types.SimpleNamespace(
        NATIVE_INSTANCENORM="NATIVE_INSTANCENORM", **{f: f for f in parser_flags}
    )

    if rtx:
        trt.ComputeCapability = Enum("ComputeCapability", ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120"])

        class IRuntimeCache:
            def __init__(self) -> None:
                self.data = b""

            def deserialize(self, data: bytes) -> bool:
                rec.runtime_cache_in = bytes(data)
                self.data = bytes(data)
                return data.startswith(b"rtx-kernels")

            def serialize(self) -> bytes:
                return b"rtx-kernels" + self.data[len(b"rtx-kernels") :] + b"+compiled"

        class IRuntimeConfig:
            def __init__(self) -> None:
                self.cache = None

            def create_runtime_cache(self) -> IRuntimeCache:
                return IRuntimeCache()

            def set_runtime_cache(self, cache: IRuntimeCache) -> bool:
                self.cache = cache
                return True

        trt.IRuntimeCache = IRuntimeCache
        trt.IRuntimeConfig = IRuntimeConfig

    if legacy:

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Network:
        num_layers = 42

        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx: str | None = None

        @property
        def num_inputs(self) -> int:
            return int(self.onnx is not None)

        num_outputs = num_inputs

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+timings"

    class Config:
        num_compute_capabilities = 0

        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.int8_calibrator = None
            self.default_device_type = "GPU"
            self.DLA_core = -1
            self.builder_optimization_level = 3
            self._timing_cache = None

        def set_flag(self, flag: str) -> None:
            rec.builder_flags.append(flag)

        def set_memory_pool_limit(self, pool, size: int) -> None:
            rec.workspace = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            rec.profiles.append(next(iter(profile.shapes.values())))
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: Profile) -> bool:
            rec.calibration_profile = next(iter(profile.shapes.values()))
            return True

        def set_compute_capability(self, cc, index: int) -> bool:
            if index >= self.num_compute_capabilities:
                return False
            rec.compute_capabilities.append(cc.name)
            return True

        def create_timing_cache(self, data: bytes) -> TimingCache:
            rec.timing_cache_calls += 1
            rec.timing_cache_in = bytes(data)
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self._timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._timing_cache

    class OnnxParser:
        def __init__(self, network: Network, logger) -> None:
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            rec.parsed.append(path)
            with open(path, "rb") as fh:
                ok = fh.read(64).strip()[:1] not in (b"", b"{")  # a JSON file is not an ONNX protobuf
            self.num_errors = 0 if ok else 1
            self.network.onnx = path
            return ok

        def get_error(self, i: int) -> str:
            return "fake parser: not an ONNX file"

        def set_flag(self, flag: str) -> None:
            rec.parser_flags.append(flag)

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            rec.network_flags.append(flags)
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            rec.builds += 1
            rec.opt_level = config.builder_optimization_level
            if config.default_device_type == "DLA":
                rec.dla = (config.DLA_core,)
            calibrator = config.int8_calibrator
            if calibrator is not None:
                cache = calibrator.read_calibration_cache()
                rec.calibration_cache_read = cache is not None
                if cache is None:
                    while calibrator.get_batch(["image"]) is not None:
                        rec.calibration_batches += 1
                    calibrator.write_calibration_cache(b"TRT-fake-EntropyCalibration2\nimage: 3c000000\n")
            self.logger.log(Severity.INFO, f"Total Activation Memory: {activation_bytes} bytes")
            self.logger.log(Severity.INFO, "Total Weights Memory: 1048576 bytes")
            profile = config.profiles[0].shapes
            return json.dumps({"fake_engine": version, "onnx": network.onnx, "profile": profile}).encode()

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.executions = 0

        def set_input_shape(self, name: str, shape) -> bool:
            lo, _, hi = self.engine.profile[name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return self.engine.output_shape(name, self.shapes)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            addresses, shapes = dict(self.addresses), dict(self.shapes)  # what a graph captures

            def work() -> None:
                self.executions += 1
                feed = {}
                for spec in self.engine.session.get_inputs():
                    nbytes = int(np.prod(shapes[spec.name])) * 4
                    feed[spec.name] = (
                        cuda.memory[addresses[spec.name]][:nbytes].view(np.float32).reshape(shapes[spec.name])
                    )
                names = [o.name for o in self.engine.session.get_outputs()]
                for name, value in zip(names, self.engine.session.run(names, feed)):
                    data = np.ascontiguousarray(value, dtype=np.float32).view(np.uint8).ravel()
                    cuda.memory[addresses[name]][: data.size] = data

            cuda.enqueue(work)
            return True

    class Engine:
        def __init__(self, blob: dict) -> None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(blob["onnx"], providers=["CPUExecutionProvider"])
            self.profile = {k: tuple(tuple(s) for s in v) for k, v in blob["profile"].items()}
            self.names = [i.name for i in self.session.get_inputs()] + [o.name for o in self.session.get_outputs()]
            self._out_shapes: dict[tuple, dict] = {}

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            inputs = {i.name for i in self.session.get_inputs()}
            return TensorIOMode.INPUT if name in inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple:
            return (-1, 3, -1, -1) if name in self.profile else (-1, -1, -1, -1)

        def get_tensor_profile_shape(self, name: str, index: int) -> list:
            return list(self.profile[name])

        def output_shape(self, name: str, shapes: dict) -> tuple:
            key = tuple(sorted(shapes.items()))
            if key not in self._out_shapes:
                feed = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
                outs = self.session.run(None, feed)
                self._out_shapes[key] = {o.name: v.shape for o, v in zip(self.session.get_outputs(), outs)}
            return self._out_shapes[key][name]

        def create_execution_context(self, runtime_config=None) -> ExecutionContext:
            self.context = ExecutionContext(self)
            self.runtime_config = runtime_config
            return self.context

        if rtx:

            def create_runtime_config(self):
                return trt.IRuntimeConfig()

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes):
            try:
                blob = json.loads(data)
            except ValueError:
                return None
            if blob.get("fake_engine") != version:  # TensorRT refuses plans from other versions
                return None
            return Engine(blob)

    trt.Builder = Builder
    trt.IBuilderConfig = Config
    trt.OnnxParser = OnnxParser
    trt.Runtime = Runtime
    return trt
