"""Real TensorRT on a real GPU: run only where both exist (`pytest -m gpu`), skipped elsewhere.

These are the tests that say something about TensorRT itself; everything in test_tensorrt_fake.py
only checks our logic."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import copy_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="session")  # session scope: checked before the session's exports are made
def gpu_stack():
    try:
        import tensorrt

        from runtime.cuda import CudaApi

        if not hasattr(tensorrt, "Builder"):
            raise ImportError("only tensorrt-stubs installed")
        return tensorrt, CudaApi().device()
    except Exception as exc:  # no TensorRT, no libcudart or no GPU: skip with the reason
        pytest.skip(f"needs TensorRT and a CUDA GPU: {exc}")


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_fp32_engine_matches_onnxruntime(gpu_stack, exported, tmp_path, cuda_graphs):
    import runtime
    from export.tensorrt_build import EngineOptions, build_engine

    model = copy_model(exported["hierarchical"], tmp_path / "net.onnx")
    built = build_engine(EngineOptions(model=model, max_shape=(2, 3, 512, 512)))
    engine = runtime.load(built.path, cuda_graphs=cuda_graphs)
    reference = runtime.load(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 352, 352), (2, 3, 257, 190), (1, 3, 352, 352)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        got, want = engine.infer(x), reference.infer(x)
        for name in want:  # TF32 may be on: a loose absolute bound, tight cosine
            a, b = got[name].ravel().astype(np.float64), want[name].ravel().astype(np.float64)
            assert np.abs(a - b).max() < 5e-2 and a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.9999, name
        assert engine.last_gpu_ms and engine.last_gpu_ms > 0
