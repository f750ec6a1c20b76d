"""TensorRT backend behind the same runner interface as ONNX Runtime, for engines of both NVIDIA
builders: TensorRT and TensorRT for RTX (the engine's sidecar names which; runtime.tensorrt_common).

Name-based tensor API (set_input_shape, set_tensor_address, execute_async_v3), device buffers reused
across calls and grown only when needed, inputs checked against the engine's profile before running,
optional CUDA graphs (one per input shape), GPU time from CUDA events. An engine built for another
version or GPU is refused with a message saying how to rebuild it from the ONNX. TensorRT-RTX compiles
its kernels on the GPU at first use; they are kept in a runtime cache file beside the engine
(ENGINE.runtime-cache), loaded when the runner opens and saved when it closes.

Written against NVIDIA's documentation and the tensorrt-stubs package; its logic is tested with a
recording fake, and its calls are checked against the real TensorRT 11 lean and TensorRT-RTX
bindings. Unverified on a GPU until `msdeploy selftest --gpu` runs on one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from runtime.cuda import CudaApi, DeviceBuffer
from runtime.errors import UserError
from runtime.files import write_bytes_atomic
from runtime.runner import Runner, TensorSpec
from runtime.tensorrt_common import (
    TARGETS,
    TensorRTFeatures,
    dims,
    format_shape,
    import_tensorrt,
    make_logger,
    read_engine_sidecar,
    start_tensorrt,
)

if TYPE_CHECKING:  # the tensorrt-stubs package: mypy checks our calls against TensorRT's API
    import tensorrt as trt_api

log = logging.getLogger(__name__)


def _onnx_file(sidecar: dict) -> str:
    """The ONNX model an engine was built from, as rebuild commands name it."""
    return sidecar.get("onnx", {}).get("file", "MODEL.onnx")


def _rebuild_hint(sidecar: dict, compute_capability: str | None = None) -> str:
    onnx = _onnx_file(sidecar)
    target = sidecar.get("target", "tensorrt")
    extra = f" --target {target}" if target != "tensorrt" else ""
    if compute_capability and sidecar.get("compute_capabilities"):
        extra += f" --compute-capability {compute_capability}"
    return f"rebuild it from the ONNX: msdeploy export engine {onnx}{extra} --force (engines are not portable)"


def _capability(text: str) -> tuple[int, ...]:
    """'12.0' -> (12, 0), so compute capabilities compare as numbers."""
    return tuple(int(part) for part in text.split("."))


def runtime_cache_path(engine_path: str | Path) -> Path:
    """model.engine -> model.engine.runtime-cache: TensorRT-RTX's just-in-time kernels for this GPU."""
    return Path(engine_path).with_name(Path(engine_path).name + ".runtime-cache")


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(
        self, path: str, *, cuda_graphs: bool = False, trt: ModuleType | None = None, cuda: CudaApi | None = None
    ) -> None:
        metadata, sidecar = read_engine_sidecar(path)
        super().__init__(path, metadata)
        self.sidecar = sidecar
        self.trt = trt or import_tensorrt(sidecar.get("target", "tensorrt"))
        self.features = TensorRTFeatures.detect(self.trt)
        self.cuda = cuda or CudaApi()
        self._check_compatible()

        self._logger = make_logger(self.trt)
        self._trt_runtime: trt_api.Runtime = start_tensorrt(
            self.trt.Runtime, self._logger, "its runtime", self.features.spec.label
        )
        self.engine: trt_api.ICudaEngine | None = self._trt_runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise UserError(f"{self.features.name} could not load {path}; {_rebuild_hint(sidecar)}")
        self._runtime_cache = None
        if self.features.runtime_cache:
            self.context = self._context_with_runtime_cache()
        else:
            self.context = self.engine.create_execution_context()
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(None if d < 0 else d for d in dims(self.engine.get_tensor_shape(name)))
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                self.inputs.append(TensorSpec(name, shape, dtype))
                lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
                self.profile[name] = (dims(lo), dims(opt), dims(hi))
            else:
                self.outputs.append(TensorSpec(name, shape, dtype))
        self.cuda_graphs = cuda_graphs
        self.stream = self.cuda.stream_create()
        self._closed = False
        self._start, self._end = self.cuda.event_create(), self.cuda.event_create()
        self._buffers = {spec.name: DeviceBuffer(self.cuda) for spec in (*self.inputs, *self.outputs)}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._graphs: dict[tuple, int] = {}
        self.last_gpu_ms: float | None = None  # GPU time of the last call (CUDA events; no copies)

    def _context_with_runtime_cache(self):
        """TensorRT-RTX: an execution context whose just-in-time kernels are read from, and later saved
        to, the runtime cache file beside the engine. The config and cache must outlive the context."""
        assert self.engine is not None
        self._runtime_config = self.engine.create_runtime_config()
        self._runtime_cache = self._runtime_config.create_runtime_cache()
        cache_file = runtime_cache_path(self.path)
        if cache_file.is_file() and not self._runtime_cache.deserialize(cache_file.read_bytes()):
            # another GPU, driver or TensorRT-RTX version: TensorRT-RTX compiles the kernels again
            log.warning("runtime cache %s does not match this GPU or driver; kernels are compiled again", cache_file)
        self._runtime_config.set_runtime_cache(self._runtime_cache)
        return self.engine.create_execution_context(self._runtime_config)

    def save_runtime_cache(self) -> Path | None:
        """Write the just-in-time kernels compiled so far beside the engine (also done on close)."""
        if self._runtime_cache is None:
            return None
        cache_file = runtime_cache_path(self.path)
        write_bytes_atomic(cache_file, bytes(self._runtime_cache.serialize()))
        return cache_file

    def _check_compatible(self) -> None:
        target = self.sidecar.get("target", "tensorrt")
        if target != self.features.target:
            raise UserError(
                f"{self.path} is a {TARGETS[target].label} engine, but the module given is {self.features.name}; "
                + _rebuild_hint(self.sidecar)
            )
        built_trt = self.sidecar.get("tensorrt")
        if built_trt != self.features.version:
            raise UserError(
                f"{self.path} was built with {TARGETS[target].label} {built_trt}, this machine has "
                f"{self.features.version}; " + _rebuild_hint(self.sidecar)
            )
        here = self.cuda.device()
        targets = self.sidecar.get("compute_capabilities") or []
        if targets:  # TensorRT-RTX: built ahead of time for a list of GPUs
            asked = (self.sidecar.get("settings") or {}).get("compute_capabilities_asked")
            if asked == [] and _capability(here.compute_capability) > max(map(_capability, targets)):
                # the builder's default set also runs on GPUs newer than its newest target (its documentation)
                log.warning(
                    "%s runs on %s through forward-compatible code; rebuild for best speed", self.path, here.name
                )
                return
            if here.compute_capability not in targets:
                built_for = f"{self.path} was built for compute capabilities {', '.join(targets)}"
                if here.compute_capability not in self.features.compute_capabilities:
                    raise UserError(
                        f"{built_for}; this GPU, {here.name} ({here.compute_capability}), is not one "
                        f"{self.features.name} builds for. Build with TensorRT on it: msdeploy export engine "
                        f"{_onnx_file(self.sidecar)} --target tensorrt"
                    )
                raise UserError(
                    f"{built_for}; this GPU is {here.name} ({here.compute_capability}); "
                    + _rebuild_hint(self.sidecar, here.compute_capability)
                )
            return
        built = self.sidecar.get("gpu") or {}
        if built.get("compute_capability") != here.compute_capability:
            raise UserError(
                f"{self.path} was built for {built.get('name')} (compute capability "
                f"{built.get('compute_capability')}), this GPU is {here.name} ({here.compute_capability}); "
                + _rebuild_hint(self.sidecar)
            )
        if built.get("name") != here.name:
            log.warning(
                "%s was built on %s, running on %s: rebuild for best speed", self.path, built["name"], here.name
            )

    def _image_profile(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return self.profile[self.require_metadata().input_name]

    def max_batch(self) -> int | None:
        """The profile's largest batch: a bigger one would be refused."""
        return self._image_profile()[2][0]

    def fixed_image_size(self) -> tuple[int, int] | None:
        lo, _, hi = self._image_profile()
        return (lo[2], lo[3]) if len(lo) == 4 and lo[2:] == hi[2:] else None

    def check_feed(self, feed: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        checked = super().check_feed(feed)
        for name, array in checked.items():
            lo, _, hi = self.profile[name]
            if any(not a <= s <= b for a, s, b in zip(lo, array.shape, hi)):
                raise UserError(
                    f"input {name} has shape {format_shape(array.shape)}; this engine's profile allows "
                    f"{format_shape(lo)} to {format_shape(hi)}. Resize the image, or rebuild with "
                    "msdeploy export engine --min-shape/--max-shape"
                )
        return checked

    def _bind(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set shapes and addresses where they changed; return empty host arrays for the outputs."""
        moved = False
        for name, array in feed.items():
            if self._shapes.get(name) != array.shape:
                if not self.context.set_input_shape(name, array.shape):
                    raise UserError(f"TensorRT refused shape {list(array.shape)} for input {name}")
                self._shapes[name] = array.shape
            if self._buffers[name].ensure(array.nbytes):
                self.context.set_tensor_address(name, self._buffers[name].ptr)
                moved = True
        outputs = {}
        for spec in self.outputs:
            shape = dims(self.context.get_tensor_shape(spec.name))
            outputs[spec.name] = np.empty(shape, dtype=spec.dtype)
            if self._buffers[spec.name].ensure(outputs[spec.name].nbytes):
                self.context.set_tensor_address(spec.name, self._buffers[spec.name].ptr)
                moved = True
        if moved:  # a captured graph holds the old addresses
            self._drop_graphs()
        return outputs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError(f"TensorRT failed to run {self.path} (see the TensorRT log, -v)")

    def _execute(self, shape_key: tuple) -> None:
        if not self.cuda_graphs:
            self._enqueue()
            return
        graph = self._graphs.get(shape_key)
        if graph is None:
            self._enqueue()  # one run outside the capture first: TensorRT sets up on the first enqueue
            self.cuda.capture_begin(self.stream)
            self._enqueue()
            graph = self._graphs[shape_key] = self.cuda.capture_end(self.stream)
        self.cuda.graph_launch(graph, self.stream)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._bind(feed)
        for name, array in feed.items():
            self.cuda.copy_to_device(self._buffers[name].ptr, array, self.stream)
        self.cuda.event_record(self._start, self.stream)
        self._execute(tuple(sorted((n, a.shape) for n, a in feed.items())))
        self.cuda.event_record(self._end, self.stream)
        for name, array in outputs.items():
            self.cuda.copy_to_host(array, self._buffers[name].ptr, self.stream)
        self.cuda.stream_synchronize(self.stream)
        self.last_gpu_ms = self.cuda.event_elapsed_ms(self._start, self._end)
        return outputs

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            self.cuda.graph_destroy(graph)
        self._graphs.clear()

    def close(self) -> None:
        """Save the runtime cache (TensorRT-RTX); free device memory, graphs, events and the stream (also
        done when the runner is collected)."""
        if getattr(self, "_closed", True):  # closed, or __init__ failed before the stream existed
            return
        try:
            self.save_runtime_cache()
        except Exception as exc:  # a read-only folder or a failed serialization must not stop the clean-up
            log.warning("could not save the runtime cache beside %s: %s", self.path, exc)
        self._drop_graphs()
        for buffer in self._buffers.values():
            buffer.release()
        for event in (self._start, self._end):
            self.cuda.event_destroy(event)
        self.cuda.stream_destroy(self.stream)
        self._closed = True

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the CUDA library may be gone already
            self.close()


# the TensorRT objects the runner calls into, by the attribute it holds them in; the runtime config and
# cache are used only where the module has a runtime cache (TensorRTFeatures.runtime_cache)
_CALLED_OBJECTS = {
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "_trt_runtime": "Runtime",
    "_runtime_config": "IRuntimeConfig",
    "_runtime_cache": "IRuntimeCache",
}
CORE_CLASSES = ("ICudaEngine", "IExecutionContext", "Runtime")


def runner_calls() -> dict[str, set[str]]:
    """The methods TensorRTRunner calls on each TensorRT class, read off this module's source."""
    import re

    source = Path(__file__).read_text()
    return {cls: set(re.findall(rf"self\.{attr}\.(\w+)", source)) for attr, cls in _CALLED_OBJECTS.items()}


def missing_runner_calls(trt: ModuleType, classes: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """The methods TensorRTRunner calls on `classes` of TensorRT that `trt` lacks, per class; empty lists
    when every call exists. Default: the engine, context and runtime, plus the runtime config and cache
    where the module has a runtime cache (the runner then uses them). Checks a TensorRT module against
    the runner where no GPU can run it (the lean wheel on x86, the aarch64 wheels)."""
    calls = runner_calls()
    if classes is None:
        classes = tuple(c for c in calls if c in CORE_CLASSES or hasattr(trt, "IRuntimeCache"))
    out = {}
    for class_name in classes:
        cls = getattr(trt, class_name, None)
        out[class_name] = sorted(n for n in calls[class_name] if cls is None or not hasattr(cls, n))
    return out
