"""Parity: run an exported model and the PyTorch network on the same inputs and compare outputs."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import runtime
from models.network import MultiScaleCODNet
from runtime.compare import TOLERANCES, Agreement, Tolerance, compare
from runtime.errors import UserError


@dataclass
class ParityRow:
    output: str
    shape: tuple[int, ...]  # input shape [B, 3, H, W]
    agreement: Agreement


@dataclass
class ParityReport:
    model: str
    precision: str
    tolerance: Tolerance
    backend: str
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.agreement.passed for r in self.rows)

    def worst(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.rows:
            out[r.output] = max(out.get(r.output, 0.0), r.agreement.max_abs)
        return out

    def summary(self) -> str:
        lines = [
            f"{r.output} at {list(r.shape)}: max abs {r.agreement.max_abs:.3g}, cosine {r.agreement.cosine:.6f} "
            f"-> {'PASS' if r.agreement.passed else 'FAIL'}"
            for r in self.rows
        ]
        return "\n".join(lines)

    def as_metadata(self) -> dict:
        """The compact form stored in a model's metadata."""
        return {
            "precision": self.precision,
            "backend": self.backend,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "shapes": sorted({str(list(r.shape)) for r in self.rows}),
            "max_abs": self.worst(),
            "min_cosine": min((r.agreement.cosine for r in self.rows), default=None),
        }

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "precision": self.precision,
            "backend": self.backend,
            "tolerance": {
                "atol": self.tolerance.atol,
                "rtol": self.tolerance.rtol,
                "min_cosine": self.tolerance.min_cosine,
            },
            "passed": self.passed,
            "rows": [{"output": r.output, "input_shape": list(r.shape), **r.agreement.as_dict()} for r in self.rows],
        }


class Reference:
    """PyTorch outputs in the exported model's order: mask logits, then the fused maps if exported.
    Any other module's outputs (a tuple or one tensor) are taken as they come.

    `exact(x)` runs a float64 copy of the module: how far PyTorch's own FP32 result is from exact
    arithmetic, which bounds how far any other correct FP32 computation may honestly be from it."""

    def __init__(self, module: nn.Module, features: bool = False) -> None:
        self.module = module
        self.features = features
        self._float64: nn.Module | None = None

    def __call__(self, x: torch.Tensor) -> list[np.ndarray]:
        return self._run(self.module, x)

    def exact(self, x: torch.Tensor) -> list[np.ndarray]:
        if self._float64 is None:
            self._float64 = copy.deepcopy(self.module).double()
        return self._run(self._float64, x.double())

    def _run(self, module: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            if isinstance(module, MultiScaleCODNet):
                if self.features:
                    logits, fused = module.forward_features(x)
                    return [t.numpy() for t in (logits, *fused)]
                return [module(x).numpy()]
            out = module(x)
            return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def reference_fn(module: nn.Module, features: bool = False) -> Reference:
    return Reference(module, features)


def run_parity(
    model_path: str | Path,
    reference: Reference,
    shapes: Sequence[Sequence[int]],
    *,
    precision: str = "fp32",
    seed: int = 1234,
    runner: runtime.Runner | None = None,
    inputs: Sequence[np.ndarray] = (),
) -> ParityReport:
    """Compare every output at every input shape. Inputs are seeded random images (normalised scale),
    then `inputs` as given (real images: what calibrated INT8 models must be judged on).
    FP32 models are also given PyTorch's own error against float64 (see `Reference.exact`)."""
    runner = runner or runtime.load(model_path)
    names = [o.name for o in runner.outputs]
    tolerance = TOLERANCES[precision]
    report = ParityReport(str(model_path), precision, tolerance, runner.backend)
    generator = torch.Generator().manual_seed(seed)
    examples = [torch.randn(*shape, generator=generator) for shape in shapes]
    for x in [*examples, *(torch.from_numpy(a) for a in inputs)]:
        shape = tuple(x.shape)
        want = reference(x)
        if len(want) != len(names):
            raise UserError(f"{model_path} has outputs {names}, PyTorch gives {len(want)}: not the same network")
        got = runner.infer(x.numpy())
        exact = reference.exact(x) if precision == "fp32" else [None] * len(want)
        for name, expected, exact_out in zip(names, want, exact):
            report.rows.append(ParityRow(name, tuple(shape), compare(got[name], expected, tolerance, exact_out)))
    return report


def rebuild_reference(metadata, weights: str | Path | None) -> MultiScaleCODNet:
    """The PyTorch network a model was exported from, rebuilt from its metadata, and checked to hold
    the same weights (hash of the state), so a parity table never compares two different networks."""
    from export.provenance import state_sha256
    from models import build_model

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


def reference_probability(net: nn.Module, image: np.ndarray, metadata) -> np.ndarray:
    """PyTorch's probabilities for one RGB uint8 image at its own size: the model's preprocessing,
    the network, logits resized by torch (antialiased bilinear), then the sigmoid. What runtime
    masks (`runtime.Predictor`, `msdeploy infer`, served models) are compared with."""
    import torch.nn.functional as F

    from runtime.preprocess import preprocess

    with torch.inference_mode():
        logits = net(torch.from_numpy(preprocess(image, metadata)))
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False, antialias=True)
    return torch.sigmoid(logits)[0, 0].numpy()


def parity_shapes(sizes: Sequence[tuple[int, int]], batches: Sequence[int], static: Sequence[int] | None):
    if static:
        sizes = [tuple(static)]
    return [(b, 3, h, w) for h, w in sizes for b in batches]


def check_model_parity(
    model_path: str | Path,
    sizes: Sequence[tuple[int, int]] = ((256, 256), (320, 320), (352, 352), (416, 416)),
    batches: Sequence[int] = (1, 2),
    weights: str | Path | None = None,
) -> ParityReport:
    """`msdeploy parity`: the model (any backend runtime.load supports) against PyTorch."""
    runner = runtime.load(model_path)
    meta = runner.require_metadata()
    for h, w in sizes:
        if min(h, w) < meta.min_size:
            raise UserError(f"size {h}x{w} is below the model's minimum {meta.min_size}x{meta.min_size}")
    net = rebuild_reference(meta, weights)
    return run_parity(
        model_path,
        reference_fn(net, features=len(meta.outputs) > 1),
        parity_shapes(sizes, batches, meta.static_size),
        precision=meta.precision,
        runner=runner,
    )
