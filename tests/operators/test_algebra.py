"""Structured results of composition, addition and scaling (the `compose`/`add`/`scale` rules)."""

from __future__ import annotations

import numpy as np
import pytest

import structlin as sl

rng = np.random.default_rng(0)


def _close(op: sl.LinearOperator, dense: np.ndarray) -> None:
    np.testing.assert_allclose(op.to_dense(), dense, rtol=1e-12, atol=1e-12)


def test_diagonal_products_and_sums_stay_diagonal() -> None:
    d1, d2 = rng.standard_normal(4), rng.standard_normal(4)
    A, B = sl.Diagonal(d1), sl.Diagonal(d2)
    assert isinstance(A @ B, sl.Diagonal)
    assert isinstance(A + B, sl.Diagonal)
    _close(A @ B, np.diag(d1 * d2))
    _close(A + B, np.diag(d1 + d2))


def test_permutation_products_compose_indices() -> None:
    p, q = rng.permutation(5), rng.permutation(5)
    P, Q = sl.Permutation(p), sl.Permutation(q)
    assert isinstance(P @ Q, sl.Permutation)
    _close(P @ Q, np.eye(5)[p] @ np.eye(5)[q])


def test_stride_permutation_and_its_transpose_cancel() -> None:
    S = sl.Permutation.stride(3, 4)
    assert isinstance(S.T, sl.StridePermutation)
    assert (S.T.rows, S.T.cols) == (4, 3)
    assert isinstance(S @ S.T, sl.Identity)
    x = np.arange(12.0)
    np.testing.assert_array_equal(S @ x, x.reshape(3, 4).T.reshape(-1))


def test_block_diag_products_multiply_blocks() -> None:
    a, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 4, 5))
    P = sl.BlockDiag(a) @ sl.BlockDiag(b)
    assert isinstance(P, sl.BlockDiag)
    _close(P, sl.BlockDiag(a).to_dense() @ sl.BlockDiag(b).to_dense())


def test_identity_is_absorbed_and_keeps_the_dtype() -> None:
    A = sl.Dense(rng.standard_normal((3, 3)).astype(np.float32))
    assert A @ sl.Identity(3) is A
    assert sl.Identity(3) @ A is A
    # A float64 identity widens the product: A is cast once, then the identity drops out.
    widened = A @ sl.Identity(3, dtype=np.float64)
    assert widened.dtype == np.float64
    _close(widened, A.array.astype(np.float64))


def test_nested_products_and_sums_are_flattened() -> None:
    A, B, C = (sl.Dense(rng.standard_normal((3, 3))) for _ in range(3))
    assert len(((A @ B) @ C).ops) == 3
    assert len((A + (B + C)).ops) == 3


def test_scalars_fold_and_expressions_match_dense() -> None:
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    A, B = sl.Dense(a), sl.Dense(b)
    expr = 2 * (3 * A)
    assert isinstance(expr, sl.ScalarMul)
    assert expr.scalar == 6
    _close(expr, 6 * a)
    _close(A - B / 4, a - b / 4)
    _close(-(A @ B) + sl.Identity(3), np.eye(3) - a @ b)


def test_value_free_identity_adopts_backend_in_composites() -> None:
    torch = pytest.importorskip("torch")
    A = sl.Dense(torch.eye(2, dtype=torch.float64))
    K = sl.Kron(A, sl.Identity(3))
    assert K.factors[1].backend is A.backend
    assert K.factors[1].dtype == torch.float64
    dense = K.to_dense()
    assert isinstance(dense, torch.Tensor)
    torch.testing.assert_close(dense, torch.eye(6, dtype=torch.float64))


def test_composites_cast_members_to_common_dtype() -> None:
    torch = pytest.importorskip("torch")
    A = sl.Dense(torch.ones(2, 2, dtype=torch.float32))
    B = sl.Dense(torch.ones(2, 2, dtype=torch.float64))
    S = A + B
    assert S.dtype == torch.float64
    assert all(op.dtype == torch.float64 for op in S.ops)
    torch.testing.assert_close(
        S @ torch.ones(2, dtype=torch.float64), torch.full((2,), 4.0, dtype=torch.float64)
    )


def test_identity_with_a_dtype_but_no_backend() -> None:
    """Such an identity uses NumPy dtypes; complex scaling and absorption must not need a backend."""
    eye = sl.Identity(3, dtype=np.float64)
    scaled = 1j * eye
    assert scaled.dtype == np.complex128
    np.testing.assert_allclose(scaled.to_dense(), 1j * np.eye(3))
    assert (eye @ sl.Identity(3)).shape == (3, 3)


def test_identity_with_a_foreign_dtype_joins_torch_composites() -> None:
    torch = pytest.importorskip("torch")
    T = sl.Dense(torch.eye(3, dtype=torch.float32))
    for op in (sl.Identity(3, dtype="float64") @ T, T + sl.Identity(3, dtype=np.float64)):
        assert op.dtype == torch.float64
        assert isinstance(op.to_dense(), torch.Tensor)
