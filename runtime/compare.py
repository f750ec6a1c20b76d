"""Comparing a model's outputs with a reference: the figures behind every parity and accuracy table.

Parity compares two runners (an exported model and PyTorch, or an INT8 model and its FP32 ONNX) on
the same inputs; numpy only, so it runs wherever the runtime does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import UserError

if TYPE_CHECKING:
    from runtime.runner import Runner


@dataclass(frozen=True)
class Tolerance:
    """PASS needs max abs error <= atol + rtol * max |reference| and cosine similarity >= min_cosine.

    The relative part matters for trained networks: their logits reach tens, and FP32 reordering
    errors grow with the magnitude (random-init logits stay near 0, where atol alone is right)."""

    atol: float
    min_cosine: float
    rtol: float = 0.0

    def limit(self, reference: np.ndarray, reference_error: float | None = None) -> float:
        """The allowed max abs error. `reference_error` is the reference's own error against a float64
        run; when there is one, the model is judged by its own distance from that float64 result,
        allowed up to twice PyTorch's (an FP32 computation as accurate as PyTorch's passes, even
        where the two err in opposite directions), so a correct export is never failed for rounding."""
        limit = self.atol + self.rtol * float(np.abs(reference).max(initial=0.0))
        return max(limit, 2.0 * reference_error) if reference_error is not None else limit

    def describe(self, reference_error: bool = False) -> str:
        limit = f"{self.atol:g}" + (f" + {self.rtol:g} * max|ref|" if self.rtol else "")
        if reference_error:
            limit += " (with a float64 reference: the model's error vs float64, within 2x PyTorch's own if larger)"
        return f"max abs <= {limit} and cosine >= {self.min_cosine}"


# FP32: a correct export measures 2e-6..1.3e-5 on random-init models (docs/onnx-export.md); trained
# models with larger logits are also judged against PyTorch's own float64 error (see `limit`).
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, min_cosine=0.99999, rtol=1e-5),
    "fp16": Tolerance(atol=5e-2, min_cosine=0.999, rtol=1e-2),
    # BF16 keeps 8 significand bits to FP16's 11: the same check, four to eight times wider
    "bf16": Tolerance(atol=2e-1, min_cosine=0.998, rtol=5e-2),
    # INT8: a gate against broken quantization; `msdeploy accuracy` judges the quality
    "int8": Tolerance(atol=1.0, min_cosine=0.98, rtol=0.2),
}


@dataclass(frozen=True)
class Agreement:
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    limit: float  # the max abs error this comparison allowed
    passed: bool
    shape_mismatch: bool = False
    reference_error: float | None = None  # the reference's own max abs error against float64
    exact_error: float | None = None  # the model's max abs error against float64 (what is judged, when known)

    def as_dict(self) -> dict:
        return asdict(self)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare(got: np.ndarray, want: np.ndarray, tolerance: Tolerance, exact: np.ndarray | None = None) -> Agreement:
    """`exact`: the same reference computed in float64, when there is one (see `Tolerance.limit`)."""
    if got.shape != want.shape:  # e.g. a size baked into the graph: a FAIL, not a crash
        return Agreement(float("inf"), float("inf"), float("inf"), 0.0, 0.0, False, shape_mismatch=True)
    got64 = got.astype(np.float64)
    want64 = want.astype(np.float64)
    diff = np.abs(got64 - want64)
    reference_error = None if exact is None else float(np.abs(want64 - exact).max(initial=0.0))
    limit = tolerance.limit(want64, reference_error)
    if not np.isfinite(got64).all():
        return Agreement(float("inf"), float("inf"), float("inf"), 0.0, limit, False, reference_error=reference_error)
    max_abs = float(diff.max(initial=0.0))
    # Relative error with a floor on the denominator, so values near zero do not dominate.
    floor = max(float(np.abs(want64).max(initial=0.0)) * 1e-3, 1e-12)
    max_rel = float((diff / np.maximum(np.abs(want64), floor)).max(initial=0.0))
    cos = cosine_similarity(got64, want64)
    exact_error = None if exact is None else float(np.abs(got64 - exact).max(initial=0.0))
    judged = max_abs if exact_error is None else exact_error
    passed = judged <= limit and cos >= tolerance.min_cosine
    mean_abs = float(diff.mean()) if diff.size else 0.0
    return Agreement(
        max_abs, max_rel, mean_abs, cos, limit, passed, reference_error=reference_error, exact_error=exact_error
    )


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
    reference: str = "PyTorch"  # what the model was compared with
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
            "reference": self.reference,
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
            "reference": self.reference,
            "tolerance": {
                "atol": self.tolerance.atol,
                "rtol": self.tolerance.rtol,
                "min_cosine": self.tolerance.min_cosine,
            },
            "passed": self.passed,
            "rows": [{"output": r.output, "input_shape": list(r.shape), **r.agreement.as_dict()} for r in self.rows],
        }


def random_images(shapes: Sequence[Sequence[int]], seed: int = 1234) -> list[np.ndarray]:
    """Seeded standard-normal inputs (images on the normalised scale), one per shape."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for shape in shapes]


def run_parity(
    runner: Runner,
    reference: Runner,
    shapes: Sequence[Sequence[int]],
    *,
    precision: str = "fp32",
    seed: int = 1234,
    inputs: Sequence[np.ndarray] = (),
) -> ParityReport:
    """Compare every output of `runner` with `reference` (outputs matched by position) at every input
    shape: seeded random images, then `inputs` as given (real images: what calibrated INT8 models
    must be judged on). Where the reference can run in float64 (`exact`, the PyTorch runner), FP32
    models are judged against that too (see `Tolerance.limit`)."""
    names = [o.name for o in runner.outputs]
    tolerance = TOLERANCES[precision]
    against = f"{Path(reference.path).name} ({reference.backend})"
    if reference.backend.startswith("torch"):
        against = "PyTorch"
    report = ParityReport(str(runner.path), precision, tolerance, runner.backend, against)
    exact_fn = getattr(reference, "exact", None) if precision == "fp32" else None
    for x in [*random_images(shapes, seed), *(np.asarray(a) for a in inputs)]:
        want = list(reference.infer(x).values())
        if len(want) != len(names):
            raise UserError(f"{runner.path} has outputs {names}, the reference gives {len(want)}: not the same network")
        got = runner.infer(x)
        exact = exact_fn(x) if exact_fn else [None] * len(want)
        for name, expected, exact_out in zip(names, want, exact):
            report.rows.append(ParityRow(name, tuple(x.shape), compare(got[name], expected, tolerance, exact_out)))
    return report
