"""The TensorRT runner against REAL TensorRT: NVIDIA's lean runtime wheel (tensorrt-lean-cu12, in the
[dev] extra), which installs from PyPI without a GPU. With no GPU nothing can be deserialized or run,
so this checks what can be checked against the real binary: feature detection on a TensorRT 11
module, that every engine and context call the runner makes exists in the real bindings, TensorRT's
own log reaching our logger, and that a runtime that could not start is refused with TensorRT's
reason (the real 11.4 runtime otherwise crashes the process on its first call)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest

from export.tensorrt_build import plan_build
from runtime.errors import UserError
from runtime.metadata import ModelMetadata, sidecar_path
from runtime.tensorrt_backend import missing_runner_calls
from runtime.tensorrt_common import ENGINE_FORMAT, TensorRTFeatures, dims, make_logger
from tests.helpers import ROOT

trt = pytest.importorskip(
    "tensorrt_lean", reason="the TensorRT lean runtime (tensorrt-lean-cu12, [dev]) is not installed"
)


def test_feature_detection_on_the_real_tensorrt_11_module():
    features = TensorRTFeatures.detect(trt)
    assert features.version == trt.__version__ and int(features.version.split(".")[0]) >= 11
    assert hasattr(trt.BuilderFlag, "GPU_FALLBACK")  # a real BuilderFlag, read for FP16/INT8 and found without
    assert not features.weak_fp16 and not features.implicit_int8
    with pytest.raises(UserError, match="run `msdeploy quantize MODEL.onnx --precision fp16` first"):
        plan_build("fp32", "fp16", features)


def test_every_engine_and_context_call_of_the_runner_exists_in_the_real_bindings():
    assert missing_runner_calls(trt) == {"ICudaEngine": [], "IExecutionContext": [], "Runtime": []}
    assert trt.nptype(trt.DataType.HALF) is np.float16 and trt.nptype(trt.DataType.FLOAT) is np.float32
    assert dims(trt.Dims([2, 3, 352, 352])) == (2, 3, 352, 352)


def test_the_call_check_reads_the_runner_s_calls():
    """missing_runner_calls must see the calls the runner makes, and name one a module lacks."""

    class Bare:  # a TensorRT module whose classes have no methods
        class ICudaEngine:
            pass

        class IExecutionContext:
            pass

        class Runtime:
            pass

    missing = missing_runner_calls(Bare)
    assert {"get_tensor_profile_shape", "create_execution_context"} <= set(missing["ICudaEngine"])
    assert {"set_input_shape", "set_tensor_address", "execute_async_v3"} <= set(missing["IExecutionContext"])
    assert "deserialize_cuda_engine" in missing["Runtime"]


def test_our_logger_is_a_real_ilogger():
    logger = make_logger(trt)
    assert isinstance(logger, trt.ILogger)
    logger.log(trt.ILogger.Severity.ERROR, "an error")
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    assert logger.errors == ["an error"]  # severities mapped by name, only errors kept


# In a child process: if the guard ever fails, the real runtime's crash must not take pytest with it.
_LOAD = """
import sys
import tensorrt_lean
from runtime.errors import UserError
from runtime.tensorrt_backend import TensorRTRunner
from tests.fake_tensorrt import FakeCuda

try:
    TensorRTRunner(sys.argv[1], trt=tensorrt_lean, cuda=FakeCuda())
except UserError as exc:
    print("REFUSED:", exc)
"""


def test_a_runtime_that_could_not_start_is_refused_with_tensorrt_s_reason(tmp_path):
    """No GPU here: TensorRT's runtime cannot start. The device check is given a fake GPU, so the runner
    reaches the real `Runtime(logger)`; it must stop there, not call into the half-made runtime."""
    if _gpu_visible():
        pytest.skip("a GPU is visible: the runtime would start")
    meta = ModelMetadata("hierarchical", "pvt_v2_b0", [0.5, 1.0, 1.5], [32, 64, 160, 256], ["mask_logits"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not read: the runtime is refused before it deserializes anything")
    sidecar = {
        "format": ENGINE_FORMAT,
        "tensorrt": trt.__version__,
        "gpu": {"name": "Fake Orin", "compute_capability": "8.7"},  # what FakeCuda reports
        "onnx": {"file": "m.onnx"},
        "model": asdict(meta),
    }
    sidecar_path(engine).write_text(json.dumps(sidecar))
    root = ROOT
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_LOAD), str(engine)], capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stderr[-2000:]}"
    assert "REFUSED: TensorRT could not start its runtime:" in done.stdout, done.stdout + done.stderr
    assert "CUDA" in done.stdout  # TensorRT's own reason, from its log


def _gpu_visible() -> bool:
    import ctypes

    from tests.runtime.test_cuda_layer import LIBCUDART

    return LIBCUDART is not None and ctypes.CDLL(str(LIBCUDART)).cudaGetDevice(ctypes.byref(ctypes.c_int())) == 0
