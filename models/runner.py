"""PyTorch as one more runner: the same `infer(array) -> {name: array}` as ONNX Runtime and
TensorRT, so parity, the benchmark and the self-test compare runners through one interface."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoint import state_sha256
from models.network import MultiScaleCODNet, build_model
from runtime.backends import Backend
from runtime.errors import UserError
from runtime.metadata import ModelMetadata, read_model_metadata
from runtime.runner import Runner, TensorSpec

MASK_OUTPUT = "mask_logits"
FEATURE_OUTPUTS = ("fused_s4", "fused_s8", "fused_s16", "fused_s32")


def output_names(features: bool) -> list[str]:
    return [MASK_OUTPUT, *FEATURE_OUTPUTS] if features else [MASK_OUTPUT]


class TorchRunner(Runner):
    """An `nn.Module` behind the runner interface: numpy in, numpy out, inference mode.

    For our network the outputs follow an export's order (mask logits, then the fused maps when
    `features`); any other module's outputs (a tuple or one tensor) are taken as they come.
    `exact(x)` runs a float64 copy: how far PyTorch's own FP32 result is from exact arithmetic, which
    bounds how far any other correct FP32 computation may honestly be from it."""

    def __init__(
        self,
        module: nn.Module,
        *,
        features: bool = False,
        device: str = "cpu",
        metadata: ModelMetadata | None = None,
        path: str | Path = "pytorch",
    ) -> None:
        super().__init__(str(path), metadata)
        self.module = module.eval().to(device)
        self.features = features
        self.device = device
        self.backend = "torch-cpu" if device == "cpu" else "torch-cuda"
        self._float64: nn.Module | None = None
        self.inputs = [TensorSpec("image", ("batch", 3, "height", "width"), np.dtype(np.float32))]
        names = output_names(features) if isinstance(module, MultiScaleCODNet) else ["output"]
        self.outputs = [TensorSpec(n, ("batch", None, None, None), np.dtype(np.float32)) for n in names]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(feed["image"]).to(self.device)
        return self._named(self._run(self.module, x))

    def exact(self, x: np.ndarray) -> list[np.ndarray]:
        """The float64 outputs for `x` (on the CPU)."""
        if self._float64 is None:
            self._float64 = copy.deepcopy(self.module).cpu().double()
        return self._run(self._float64, torch.from_numpy(np.asarray(x)).double())

    def _named(self, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        if len(outputs) != len(names):  # a generic module with several outputs
            names = [f"output_{i}" for i in range(len(outputs))]
        return dict(zip(names, outputs))

    def _run(self, module: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            if isinstance(module, MultiScaleCODNet) and self.features:
                logits, fused = module.forward_features(x)
                out = (logits, *fused)
            else:
                out = module(x)
                out = out if isinstance(out, (tuple, list)) else (out,)
            return [t.cpu().numpy() for t in out]

    def close(self) -> None:
        self._float64 = None
        if self.device != "cpu":
            torch.cuda.empty_cache()


def network_for(metadata: ModelMetadata, weights: str | Path | None) -> MultiScaleCODNet:
    """The PyTorch network a model was exported from, rebuilt from its metadata, and checked to hold
    the same weights (hash of the state), so a parity table never compares two different networks."""
    record = metadata.weights or {}
    if weights is None and record.get("source") != "random-init":
        raise UserError(
            f"this model was exported from weights ({record.get('file', 'a state dict')}); pass --weights PATH"
        )
    torch.manual_seed(int(record.get("seed", 0)))
    net = build_model(metadata.backbone, metadata.fusion, metadata.scales, weights)
    expected = record.get("state_sha256")
    if expected and state_sha256(net) != expected:
        raise UserError(
            "the PyTorch weights differ from the ones this model was exported from "
            f"(state hash {state_sha256(net)[:12]} vs {expected[:12]}); pass the --weights used at export"
        )
    return net


def torch_runner_for(
    metadata: ModelMetadata, weights: str | Path | None = None, device: str = "cpu", path: str | Path = "pytorch"
) -> TorchRunner:
    """The network a model with `metadata` was exported from, as a runner."""
    net = network_for(metadata, weights)
    return TorchRunner(net, features=len(metadata.outputs) > 1, device=device, metadata=metadata, path=path)


def open_torch_runner(
    model: str | Path, backend: Backend, *, weights: str | Path | None = None, threads: int | None = None
) -> TorchRunner:
    """The `msdeploy.runners` entry point: the network behind an exported model file (ONNX or engine),
    as a runner. torch-cuda-graphs runs eager here: CUDA graphs are how the benchmark times it
    (bench.torch_rows), not another way to compute."""
    if threads:
        torch.set_num_threads(threads)
    metadata, _ = read_model_metadata(model)
    return torch_runner_for(metadata, weights, backend.device, model)
