"""The CUDA calls the TensorRT backend needs, through the CUDA runtime library (libcudart) and ctypes.

polygraphy.cuda finds libcudart (system CUDA, JetPack, or the nvidia-cuda-runtime wheels) and gives
streams and device memory; events, CUDA graphs and device properties are a few more ctypes calls on
the same library. Neither pycuda, cuda-python nor torch is needed, so this installs on JetPack 6
(Python 3.10), where cuda-python 12.9 does not.

Everything goes through one `CudaApi` object, so tests can hand the TensorRT backend a recording fake.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from runtime.errors import UserError

# cudaMemcpyKind and the two cudaDeviceAttr values we read
_HOST_TO_DEVICE, _DEVICE_TO_HOST = 1, 2
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
_ATTR_INTEGRATED = 18  # cudaDevAttrIntegrated: 1 on a Jetson, whose GPU shares the board's memory
_CAPTURE_MODE_THREAD_LOCAL = 1
_PROP_NAME_BYTES = 256  # cudaDeviceProp starts with char name[256]
_PROP_BUFFER_BYTES = 4096  # larger than cudaDeviceProp in every CUDA 11-13 release


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "9.0"
    total_memory: int | None = None  # bytes (on a Jetson: the memory the CPU and GPU share)
    integrated: bool = False  # a Jetson's GPU


class CudaApi:
    """libcudart through ctypes. Pointers and handles are plain ints."""

    def __init__(self, library: ctypes.CDLL | None = None) -> None:
        """`library`: a libcudart already loaded; default: the one polygraphy finds."""
        if library is not None:
            self._lib = library
            return
        try:
            from polygraphy import cuda as pg_cuda
        except ImportError as exc:
            raise UserError("the TensorRT backend needs polygraphy: pip install polygraphy") from exc
        try:
            self._lib = pg_cuda.wrapper().handle
        except Exception as exc:  # polygraphy raises its own errors when libcudart is missing
            raise UserError(f"cannot load the CUDA runtime library (libcudart): {exc}") from exc

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            name = self._lib.cudaGetErrorString
            name.restype = ctypes.c_char_p
            raise RuntimeError(f"CUDA error {status} in {what}: {name(status).decode()}")

    def _out_ptr(self, fn_name: str, *args) -> int:
        out = ctypes.c_void_p()
        self._check(getattr(self._lib, fn_name)(ctypes.byref(out), *args), fn_name)
        return out.value or 0

    def device(self) -> DeviceInfo:
        """The current GPU; a UserError when CUDA has none (no GPU, or a driver older than libcudart)."""
        try:
            return self._read_device()
        except Exception as exc:  # a CUDA error, or a libcudart without these calls
            raise UserError(f"no usable CUDA GPU: {exc}") from exc

    def _read_device(self) -> DeviceInfo:
        dev = ctypes.c_int()
        self._check(self._lib.cudaGetDevice(ctypes.byref(dev)), "cudaGetDevice")
        attrs = []
        for attr in (_ATTR_CC_MAJOR, _ATTR_CC_MINOR, _ATTR_INTEGRATED):
            value = ctypes.c_int()
            self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(value), attr, dev), "cudaDeviceGetAttribute")
            attrs.append(value.value)
        props = ctypes.create_string_buffer(_PROP_BUFFER_BYTES)
        self._check(self._lib.cudaGetDeviceProperties(props, dev), "cudaGetDeviceProperties")
        name = props.raw[:_PROP_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace")
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self._lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return DeviceInfo(name, f"{attrs[0]}.{attrs[1]}", total.value, bool(attrs[2]))

    def malloc(self, nbytes: int) -> int:
        return self._out_ptr("cudaMalloc", ctypes.c_size_t(nbytes))

    def free(self, ptr: int) -> None:
        self._check(self._lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def copy_to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(ptr),
                ctypes.c_void_p(host.ctypes.data),
                ctypes.c_size_t(host.nbytes),
                _HOST_TO_DEVICE,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (host to device)",
        )

    def copy_to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(host.ctypes.data),
                ctypes.c_void_p(ptr),
                ctypes.c_size_t(host.nbytes),
                _DEVICE_TO_HOST,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync (device to host)",
        )

    def stream_create(self) -> int:
        return self._out_ptr("cudaStreamCreate")

    def stream_synchronize(self, stream: int) -> None:
        self._check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int) -> None:
        self._check(self._lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def event_create(self) -> int:
        return self._out_ptr("cudaEventCreate")

    def event_record(self, event: int, stream: int) -> None:
        self._check(self._lib.cudaEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream)), "cudaEventRecord")

    def event_elapsed_ms(self, start: int, end: int) -> float:
        self._check(self._lib.cudaEventSynchronize(ctypes.c_void_p(end)), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self._check(
            self._lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)),
            "cudaEventElapsedTime",
        )
        return float(ms.value)

    def event_destroy(self, event: int) -> None:
        self._check(self._lib.cudaEventDestroy(ctypes.c_void_p(event)), "cudaEventDestroy")

    def capture_begin(self, stream: int) -> None:
        self._check(
            self._lib.cudaStreamBeginCapture(ctypes.c_void_p(stream), _CAPTURE_MODE_THREAD_LOCAL),
            "cudaStreamBeginCapture",
        )

    def capture_end(self, stream: int) -> int:
        """End the capture and return an instantiated, launchable graph."""
        graph = ctypes.c_void_p()
        self._check(
            self._lib.cudaStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "cudaStreamEndCapture"
        )
        try:
            executable = ctypes.c_void_p()
            # the WithFlags form has one signature in CUDA 11.4-13; cudaGraphInstantiate's changed in 12
            self._check(
                self._lib.cudaGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0)),
                "cudaGraphInstantiateWithFlags",
            )
        finally:
            self._lib.cudaGraphDestroy(graph)
        return executable.value or 0

    def graph_launch(self, executable: int, stream: int) -> None:
        self._check(self._lib.cudaGraphLaunch(ctypes.c_void_p(executable), ctypes.c_void_p(stream)), "cudaGraphLaunch")

    def graph_destroy(self, executable: int) -> None:
        self._check(self._lib.cudaGraphExecDestroy(ctypes.c_void_p(executable)), "cudaGraphExecDestroy")


class DeviceBuffer:
    """Device memory that is reused across calls and grown only when a larger tensor comes."""

    def __init__(self, cuda: CudaApi) -> None:
        self.cuda = cuda
        self.ptr = 0
        self.capacity = 0

    def ensure(self, nbytes: int) -> bool:
        """Make room for `nbytes`; True when the address changed (bindings and CUDA graphs are stale)."""
        if nbytes <= self.capacity:
            return False
        self.release()
        self.ptr = self.cuda.malloc(max(nbytes, 1))
        self.capacity = nbytes
        return True

    def release(self) -> None:
        if self.ptr:
            self.cuda.free(self.ptr)
        self.ptr, self.capacity = 0, 0
