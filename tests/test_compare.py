"""The pass/fail arithmetic behind every parity table."""

import numpy as np

from runtime.compare import TOLERANCES, Tolerance, compare


def test_limit_is_absolute_plus_relative_to_the_reference_magnitude():
    tol = Tolerance(atol=1e-4, min_cosine=0.9, rtol=1e-5)
    want = np.array([0.0, 30.0, -50.0])
    assert np.isclose(tol.limit(want), 1e-4 + 1e-5 * 50.0)
    assert compare(want + 5e-4, want, tol).passed  # 5e-4 < 6e-4
    assert not compare(want + 7e-4, want, tol).passed


def test_reference_float64_error_widens_the_fp32_limit_to_twice_it():
    tol = TOLERANCES["fp32"]
    want = np.ones((2, 8), dtype=np.float32)
    exact = want.astype(np.float64) + 3e-4  # PyTorch FP32 is 3e-4 from exact arithmetic
    got = want + 5e-4  # another FP32 computation 2e-4 from exact, on the other side
    plain = compare(got, want, tol)
    widened = compare(got, want, tol, exact)
    assert not plain.passed and plain.reference_error is None
    assert widened.passed and np.isclose(widened.reference_error, 3e-4) and np.isclose(widened.limit, 6e-4)
    assert not compare(want + 7e-4, want, tol, exact).passed  # beyond twice the reference's own error


def test_shape_mismatch_and_non_finite_outputs_fail():
    tol = TOLERANCES["fp32"]
    want = np.zeros((1, 4), dtype=np.float32)
    assert compare(np.zeros((1, 5), dtype=np.float32), want, tol).shape_mismatch
    assert not compare(np.full((1, 4), np.nan, dtype=np.float32), want, tol).passed


def test_cosine_below_the_minimum_fails_even_when_errors_are_small():
    tol = Tolerance(atol=1.0, min_cosine=0.999)
    want = np.array([1e-3, 0.0])
    assert not compare(np.array([0.0, 1e-3]), want, tol).passed
