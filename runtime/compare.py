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

    def limit(self, reference: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.abs(reference).max(initial=0.0))

    def describe(self) -> str:
        rel = f" + {self.rtol:g} * max|ref|" if self.rtol else ""
        return f"max abs <= {self.atol:g}{rel} and cosine >= {self.min_cosine}"


# FP32: a correct export measures 2e-6..1.3e-5 (deployment-facts.md), so 1e-4 leaves room to spare.
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
    required_atol: float  # the smallest absolute tolerance that would pass (= max_abs)
    passed: bool
    shape_mismatch: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare(got: np.ndarray, want: np.ndarray, tolerance: Tolerance) -> Agreement:
    if got.shape != want.shape:  # e.g. a size baked into the graph: a FAIL, not a crash
        return Agreement(float("inf"), float("inf"), float("inf"), 0.0, float("inf"), False, shape_mismatch=True)
    got64 = got.astype(np.float64)
    want64 = want.astype(np.float64)
    diff = np.abs(got64 - want64)
    if not np.isfinite(got64).all():
        return Agreement(float("inf"), float("inf"), float("inf"), 0.0, float("inf"), False)
    max_abs = float(diff.max(initial=0.0))
    # Relative error with a floor on the denominator, so values near zero do not dominate.
    floor = max(float(np.abs(want64).max(initial=0.0)) * 1e-3, 1e-12)
    max_rel = float((diff / np.maximum(np.abs(want64), floor)).max(initial=0.0))
    cos = cosine_similarity(got64, want64)
    passed = max_abs <= tolerance.limit(want64) and cos >= tolerance.min_cosine
    return Agreement(max_abs, max_rel, float(diff.mean()) if diff.size else 0.0, cos, max_abs, passed)
