"""Kronecker-specific checks beyond the conformance kit."""

from __future__ import annotations

import tracemalloc

import numpy as np

import structlin as sl


def test_three_factor_inverse_never_forms_the_product() -> None:
    """Acceptance: `Kron(A, B, C).inv() @ x` for 16x16 factors, without a 4096x4096 matrix."""
    rng = np.random.default_rng(0)
    factors = [np.eye(16) + 0.2 * rng.standard_normal((16, 16)) / 4 for _ in range(3)]
    K = sl.Kron(*factors)
    x = rng.standard_normal(4096)

    tracemalloc.start()
    Kinv = K.inv()
    y = Kinv @ x
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A dense 4096x4096 float64 matrix is 128 MiB; the structured path needs a few vectors.
    assert peak < 4 * 4096 * 8 * 16, f"peak memory {peak} bytes suggests a dense matrix"
    assert isinstance(Kinv, sl.Kron)
    assert [f.shape for f in Kinv.factors] == [(16, 16)] * 3

    dense = np.kron(np.kron(factors[0], factors[1]), factors[2])
    expected = np.linalg.solve(dense, x)
    assert np.linalg.norm(y - expected) <= 1e-8 * np.linalg.norm(expected)
    assert np.linalg.norm(sl.solve(K, x) - expected) <= 1e-8 * np.linalg.norm(expected)


def test_logdet_uses_factor_sizes() -> None:
    rng = np.random.default_rng(1)
    a = np.eye(2) + 0.1 * rng.standard_normal((2, 2))
    b = np.eye(3) + 0.1 * rng.standard_normal((3, 3))
    b[0] *= -1  # negative determinant: sign^(n / n_i) must be tracked
    sign, logabsdet = sl.slogdet(sl.Kron(a, b))
    ref_sign, ref_logabsdet = np.linalg.slogdet(np.kron(a, b))
    assert sign == ref_sign
    assert np.isclose(logabsdet, ref_logabsdet, rtol=1e-12)


def test_product_of_matching_krons_stays_kron() -> None:
    rng = np.random.default_rng(2)
    a, b, c, d = (rng.standard_normal((3, 3)) for _ in range(4))
    P = sl.Kron(a, b) @ sl.Kron(c, d)
    assert isinstance(P, sl.Kron)
    np.testing.assert_allclose(P.to_dense(), np.kron(a, b) @ np.kron(c, d), rtol=1e-12, atol=1e-12)
    # Mismatched factor shapes fall back to a lazy product with the same value.
    Q = sl.Kron(rng.standard_normal((2, 6))) @ sl.Kron(a[:2, :2], c)
    assert isinstance(Q, sl.Product)


def test_empty_right_hand_sides_and_unit_factors() -> None:
    K = sl.Kron(np.ones((2, 3)), np.ones((1, 1)), np.ones((4, 2)))
    assert (K @ np.ones((6, 0))).shape == (8, 0)
    np.testing.assert_allclose(K @ np.ones(6), np.full(8, 6.0))
