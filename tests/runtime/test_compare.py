"""The pass/fail arithmetic behind every parity table."""

import numpy as np

from runtime.compare import TOLERANCES, Tolerance, compare


def test_limit_is_absolute_plus_relative_to_the_reference_magnitude():
    tol = Tolerance(atol=1e-4, min_cosine=0.9, rtol=1e-5)
    want = np.array([0.0, 30.0, -50.0])
    assert np.isclose(tol.limit(want), 1e-4 + 1e-5 * 50.0)
    assert compare(want + 5e-4, want, tol).passed  # 5e-4 < 6e-4
    assert not compare(want + 7e-4, want, tol).passed


def test_a_float64_reference_judges_the_model_by_its_own_error_within_twice_pytorchs():
    """As measured on the trained demo checkpoint at 1024x1024: PyTorch FP32 4e-4 below exact
    arithmetic, ONNX Runtime 5.9e-4 above it, so the two differ by 9.9e-4 although ONNX Runtime is
    about as accurate as PyTorch."""
    tol = TOLERANCES["fp32"]
    exact = np.ones((2, 8), dtype=np.float64)
    want = (exact - 4e-4).astype(np.float32)
    got = (exact + 5.9e-4).astype(np.float32)
    plain = compare(got, want, tol)
    judged = compare(got, want, tol, exact)
    assert not plain.passed and plain.reference_error is None and plain.exact_error is None
    assert judged.passed and np.isclose(judged.reference_error, 4e-4, atol=1e-7)
    assert np.isclose(judged.limit, 8e-4, atol=2e-7) and np.isclose(judged.exact_error, 5.9e-4, atol=1e-7)
    assert np.isclose(judged.max_abs, 9.9e-4, atol=1e-7)  # the table still shows the distance to PyTorch
    assert not compare((exact + 9e-4).astype(np.float32), want, tol, exact).passed  # beyond twice PyTorch's error


def test_shape_mismatch_and_non_finite_outputs_fail():
    tol = TOLERANCES["fp32"]
    want = np.zeros((1, 4), dtype=np.float32)
    assert compare(np.zeros((1, 5), dtype=np.float32), want, tol).shape_mismatch
    assert not compare(np.full((1, 4), np.nan, dtype=np.float32), want, tol).passed


def test_cosine_below_the_minimum_fails_even_when_errors_are_small():
    tol = Tolerance(atol=1.0, min_cosine=0.999)
    want = np.array([1e-3, 0.0])
    assert not compare(np.array([0.0, 1e-3]), want, tol).passed
