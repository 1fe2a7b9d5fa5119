"""`sl.to_scipy`: SciPy's solvers and eigensolvers on structlin operators."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import structlin as sl


def spd(n: int, rng: np.random.Generator) -> np.ndarray:
    G = rng.standard_normal((n, n))
    return G @ G.T / n + np.eye(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_match_the_dense_matrix(dtype) -> None:
    rng = np.random.default_rng(0)
    M = sl.Monarch.random(12, 10, nblocks=3, rng=1, dtype=dtype)  # padded, rectangular
    D = M.to_dense().astype(np.float64)
    A = sl.to_scipy(M)
    assert A.shape == (10, 12)
    assert A.dtype == dtype
    x, X = rng.standard_normal(12), rng.standard_normal((12, 3))
    y, Y = rng.standard_normal(10), rng.standard_normal((10, 4))
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(A.matvec(x), D @ x, rtol=tol, atol=tol)
    np.testing.assert_allclose(A @ x, D @ x, rtol=tol, atol=tol)
    np.testing.assert_allclose(A.matvec(x[:, None]), (D @ x)[:, None], rtol=tol, atol=tol)
    np.testing.assert_allclose(A.matmat(X), D @ X, rtol=tol, atol=tol)
    np.testing.assert_allclose(A.rmatvec(y), D.T @ y, rtol=tol, atol=tol)
    np.testing.assert_allclose(A.rmatmat(Y), D.T @ Y, rtol=tol, atol=tol)
    np.testing.assert_allclose(A.H @ y, D.T @ y, rtol=tol, atol=tol)
    np.testing.assert_allclose(A.matvec(np.arange(12)), D @ np.arange(12.0), rtol=tol, atol=tol)


def test_rmatvec_is_the_conjugate_transpose() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 4)) + 1j * rng.standard_normal((5, 4))
    A = sl.to_scipy(sl.LowRank(a, np.eye(4)))
    y = rng.standard_normal(5)
    assert A.dtype == np.complex128
    np.testing.assert_allclose(A.rmatvec(y), a.conj().T @ y, rtol=1e-12)


def test_cg_solves_an_spd_kronecker_system() -> None:
    rng = np.random.default_rng(2)
    A, B, C = spd(6, rng), spd(5, rng), spd(4, rng)
    K = sl.Kron(A, B, C)  # 120 x 120, never formed
    b = rng.standard_normal(K.shape[0])
    x, info = spla.cg(sl.to_scipy(K), b, rtol=1e-12, atol=0.0)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(np.kron(np.kron(A, B), C), b), rtol=1e-8)
    np.testing.assert_allclose(x, sl.solve(K, b), rtol=1e-8)  # the structured direct solve


def test_gmres_and_eigsh() -> None:
    rng = np.random.default_rng(3)
    M = sl.Monarch.random(64, 64, nblocks=8, rng=4)
    S = M @ M.T + sl.Identity(64)  # SPD Sum of a Monarch product and the identity
    D = S.to_dense()
    b = rng.standard_normal(64)
    x, info = spla.gmres(sl.to_scipy(M + 4 * sl.Identity(64)), b, rtol=1e-12, atol=0.0)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(M.to_dense() + 4 * np.eye(64), b), rtol=1e-8)
    top = spla.eigsh(sl.to_scipy(S), k=3, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), np.linalg.eigvalsh(D)[-3:], rtol=1e-9)


def test_value_free_operators_report_float64() -> None:
    A = sl.to_scipy(sl.Identity(3))
    assert A.dtype == np.float64
    np.testing.assert_array_equal(A @ np.ones(3), np.ones(3))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends_are_refused_with_the_fix(backend: str) -> None:
    pytest.importorskip(backend)
    K = sl.Kron(np.eye(2), np.eye(3)).to(backend=backend)
    with pytest.raises(
        TypeError, match=rf"Kron of shape \(6, 6\) is {backend}.*op.to\(backend='numpy'\)"
    ):
        sl.to_scipy(K)
    A = sl.to_scipy(K.to(backend="numpy"))
    np.testing.assert_array_equal(A @ np.ones(6), np.ones(6))


def test_not_an_operator() -> None:
    with pytest.raises(TypeError, match=r"to_scipy needs a structlin operator, got ndarray"):
        sl.to_scipy(np.eye(3))
