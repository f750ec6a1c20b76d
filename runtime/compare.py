"""Comparing a model's outputs with a reference: the figures behind every parity and accuracy table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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


# FP32: a correct export measures 2e-6..1.3e-5 on random-init models (deployment-facts.md); trained
# models with larger logits are also judged against PyTorch's own float64 error (see `limit`).
TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, min_cosine=0.99999, rtol=1e-5),
    "fp16": Tolerance(atol=5e-2, min_cosine=0.999, rtol=1e-2),
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
