"""Our ctypes layer over libcudart (runtime/cuda.py) against a REAL CUDA runtime library where one is
installed (the nvidia-cuda-runtime wheel that CUDA builds of torch bring). There is no GPU here, so
this checks the symbols and the error path, not that memory moves; `msdeploy selftest --gpu` does."""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path

import pytest

import runtime.cuda
from runtime.cuda import CudaApi
from runtime.errors import UserError


def _find_libcudart() -> Path | None:
    for site in map(Path, sys.path):
        found = sorted(site.glob("nvidia/*/lib/libcudart.so*")) if site.is_dir() else []
        if found:
            return found[0]
    return None


LIBCUDART = _find_libcudart()
needs_libcudart = pytest.mark.skipif(LIBCUDART is None, reason="no libcudart installed (nvidia-cuda-runtime wheel)")


def _symbols_we_call() -> set[str]:
    source = Path(runtime.cuda.__file__).read_text()
    return set(re.findall(r"_lib\.(cuda\w+)", source)) | set(re.findall(r'_out_ptr\("(cuda\w+)"', source))


@needs_libcudart
def test_every_cuda_symbol_we_call_exists_in_the_runtime_library():
    lib = ctypes.CDLL(str(LIBCUDART))
    symbols = _symbols_we_call()
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaGraphInstantiateWithFlags", "cudaEventElapsedTime"} <= symbols
    missing = sorted(name for name in symbols if not hasattr(lib, name))
    assert not missing, f"{LIBCUDART.name} lacks {missing}"


@needs_libcudart
def test_no_gpu_is_a_user_error_with_cuda_s_own_reason():
    lib = ctypes.CDLL(str(LIBCUDART))
    if lib.cudaGetDevice(ctypes.byref(ctypes.c_int())) == 0:
        pytest.skip("a CUDA GPU is visible here")
    with pytest.raises(UserError, match=r"no usable CUDA GPU: CUDA error \d+ in cudaGetDevice: \w+"):
        CudaApi(lib).device()
