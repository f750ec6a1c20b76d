"""PyTorch rows of the benchmark: eager on the CPU, eager on a CUDA GPU (FP32, FP16) and CUDA graphs,
and the tables that need the PyTorch model (parameters, FLOPs, memory per part)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch

from bench.cases import Case, Target
from models import DEFAULT_SCALES, build_model
from models.complexity import flop_table
from models.runner import TorchRunner
from runtime.backends import BACKENDS
from runtime.errors import UserError
from runtime.timing import time_interleaved


def torch_unavailable(case: Case) -> str | None:
    """Why PyTorch cannot run `case` here, or None."""
    on_gpu = case.backend != "torch-cpu"
    if on_gpu and not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch"
    if case.precision == "int8":
        return "PyTorch INT8 is not a deployment path here: INT8 runs through ONNX Runtime or TensorRT"
    if case.precision == "fp16" and not on_gpu:
        return "PyTorch has no fast FP16 CPU kernels; FP16 is timed on the GPU"
    return None


@lru_cache(maxsize=8)
def _network(backbone: str, fusion: str, weights: str | None, device: str, half: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(backbone, fusion, weights=weights).eval().to(device)
    return net.half() if half else net


def torch_target(case: Case, backbone: str, weights: str | None, threads: int | None) -> Target:
    """A PyTorch model for `case`: on the CPU the PyTorch runner (numpy in and out, like every other
    runner); on a GPU the module itself, input already on the device, timed by CUDA events."""
    if threads:
        torch.set_num_threads(threads)
    device = BACKENDS[case.backend].device
    half = case.precision == "fp16"
    if device == "cpu":
        runner = TorchRunner(_network(backbone, case.fusion, weights, device, half))
        image = np.zeros((case.batch, 3, case.size, case.size), np.float32)
        return Target(lambda: runner.infer(image), "host clock, PyTorch eager (PyTorch runner), input in memory")
    net = _network(backbone, case.fusion, weights, device, half)
    x = torch.zeros(case.batch, 3, case.size, case.size, device=device, dtype=torch.float16 if half else torch.float32)
    if case.backend == "torch-cuda-graphs":
        return _graph_target(net, x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run_cuda() -> float:
        with torch.inference_mode():
            start.record()
            net(x)
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return Target(run_cuda, f"CUDA events around the forward pass; input already on the GPU, no host copies; {_tf32()}")


def _tf32() -> str:
    """PyTorch's TF32 switches, which decide what an FP32 row on an Ampere-or-newer GPU computes."""
    on = {True: "on", False: "off"}
    return (
        f"TF32 convolutions {on[torch.backends.cudnn.allow_tf32]}, matmul {on[torch.backends.cuda.matmul.allow_tf32]}"
    )


def _graph_target(net: torch.nn.Module, x: torch.Tensor) -> Target:
    stream = torch.cuda.Stream()
    with torch.inference_mode():
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream before capture, as PyTorch advises
            for _ in range(3):
                net(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run() -> float:
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return Target(run, f"CUDA events around a CUDA graph replay; input already on the GPU, no host copies; {_tf32()}")


def matmul_gflops(device: str, precision: str, n: int = 8192, seconds: float = 1.0) -> float:
    """Best rate of n x n matrix products on `device` at `precision` ("fp32" or "fp16"), PyTorch's
    TF32 setting as it is: the ceiling a GPU row's achieved GFLOP/s is set against."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    reps = 10  # products per timing, so one host-clock reading covers many kernels

    def products() -> None:
        for _ in range(reps):
            a @ b
        sync()

    with torch.inference_mode():  # one warm-up call (library load, kernel choice), then `seconds` of calls
        stats = time_interleaved({"matmul": products}, warmup=1, iterations=1, min_time=seconds)["matmul"]
    return 2 * n**3 / (stats.min_ms / 1e3 / reps) / 1e9


def cuda_matmul_rates(precisions: Sequence[str], n: int = 8192) -> tuple[dict[str, float], str]:
    """`matmul_gflops` on the GPU for each precision (a `Case.matmul_precision`), and how it was measured."""
    if not torch.cuda.is_available():  # e.g. TensorRT rows beside a CPU-only PyTorch
        return {}, "cuda: not measured (no CUDA GPU visible to PyTorch)"
    rates = {f"cuda {p}": matmul_gflops("cuda", p, n) for p in precisions}
    return rates, f"cuda: PyTorch {n}x{n} products on {torch.cuda.get_device_name()}, {_tf32()}"


def model_tables(
    backbone: str, fusions: Sequence[str], size: int, weights: str | None, device: str = "cpu"
) -> tuple[list[dict], dict[str, list[dict]], dict[str, dict[str, float]], str]:
    """Parameter rows, GFLOPs per part and fusion, and peak memory per part and fusion (each part
    in a fresh process), at `size`, batch 1."""
    from models.params import parameter_table
    from runtime import memory

    params = [
        {"key": r.key, "component": r.component, "params": r.params, "guide": r.guide}
        for r in parameter_table(backbone)
    ]
    flops = {}
    for fusion in fusions:
        torch.manual_seed(0)
        flops[fusion] = [row.as_dict() for row in flop_table(build_model(backbone, fusion), (size, size))]
    mem: dict[str, dict[str, float]] = {}
    if device == "cpu" and not memory.supported():
        return params, flops, mem, "not measured: needs Linux /proc"
    parts = [*(f"backbone@{s:g}" for s in DEFAULT_SCALES), "fusion", "network"]
    jobs = [(fusion, part) for fusion in fusions for part in parts]

    def measure(job: tuple[str, str]) -> float:
        fusion, part = job
        args = [backbone, fusion, "1", str(size), str(size), part, device]
        try:
            return memory.measure_in_child("models.complexity", args)["peak_added_mb"]
        except UserError as exc:
            raise UserError(f"memory of {part} ({fusion}) could not be measured: {exc}") from exc

    # each probe is its own process with its own peak, so they may run side by side (mostly imports)
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        for (fusion, part), peak in zip(jobs, pool.map(measure, jobs)):
            mem.setdefault(fusion, {})[part] = peak
    where = "GPU, torch.cuda.max_memory_allocated" if device != "cpu" else "CPU, peak resident memory (VmHWM)"
    return params, flops, mem, f"PyTorch eager, {where}, one inference in a fresh process, weights excluded"
