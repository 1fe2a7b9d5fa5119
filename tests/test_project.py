"""`sl.project` onto the classic structures: exact minimisers, every backend, clear errors.

Monarch, TT and BTT projections are tested next to their operators in `tests/operators/`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structlin as sl
from conformance import BACKENDS, to_backend, to_numpy


def error(W: np.ndarray, A: sl.LinearOperator) -> float:
    return float(np.linalg.norm(W - to_numpy(A.to_dense())))


def perturbations_do_not_help(W, A, rebuild, rng, trials=20) -> None:
    """No small random perturbation of the operator's leaves lowers the error."""
    leaves, treedef = sl.pytree.tree_flatten(A)
    base = error(W, A)
    for _ in range(trials):
        eps = 10.0 ** rng.uniform(-6, -2)
        moved = [leaf + eps * rng.standard_normal(np.shape(leaf)) for leaf in leaves]
        assert error(W, rebuild(sl.pytree.tree_unflatten(treedef, moved))) >= base - 1e-12


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), m=st.integers(1, 6), n=st.integers(1, 6), rank=st.integers(1, 7))
def test_low_rank_is_eckart_young(seed, m, n, rank) -> None:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    A = sl.project(W, sl.LowRank, rank=rank)
    assert (A.U.shape, A.V.shape) == ((m, rank), (rank, n))
    sv = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(error(W, A), np.sqrt(np.sum(sv[rank:] ** 2)), atol=1e-10)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), shapes=st.lists(st.integers(1, 4), min_size=4, max_size=4))
def test_kron_is_nearest_kronecker_product(seed, shapes) -> None:
    m1, n1, m2, n2 = shapes
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))
    exact = sl.project(np.kron(A, B), sl.Kron, factor_shapes=((m1, n1), (m2, n2)))
    assert error(np.kron(A, B), exact) <= 1e-10 * np.linalg.norm(np.kron(A, B))
    W = rng.standard_normal((m1 * m2, n1 * n2))
    K = sl.project(W, sl.Kron, factor_shapes=((m1, n1), (m2, n2)))
    perturbations_do_not_help(W, K, lambda k: k, rng)


def test_block_diag_and_diagonal_keep_what_they_can() -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 9))
    B = sl.project(W, sl.BlockDiag, nblocks=3)
    np.testing.assert_array_equal(B.blocks[1], W[2:4, 3:6])
    mask = B.to_dense() != 0
    np.testing.assert_allclose(error(W, B), np.linalg.norm(W[~mask]))
    S = rng.standard_normal((5, 5))
    np.testing.assert_array_equal(sl.project(S, sl.Diagonal).diag, np.diag(S))
    D = sl.project(S, sl.Dense)
    assert D.array is S  # held as it is, like every operator's arrays
    assert D.to_dense() is not S  # results are new arrays
    np.testing.assert_array_equal(D.to_dense(), S)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_every_backend(backend: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 8)) + (
        1j * rng.standard_normal((8, 8)) if dtype == "complex128" else 0
    )
    Wb = to_backend(W.astype(dtype), backend)
    tol = 1e-4 if dtype == "float32" else 1e-10
    specs = [
        (sl.Diagonal, {}),
        (sl.BlockDiag, {"nblocks": 2}),
        (sl.LowRank, {"rank": 3}),
        (sl.Kron, {"factor_shapes": ((2, 4), (4, 2))}),
    ]
    for structure, spec in specs:
        A = sl.project(Wb, structure, **spec)
        assert type(A) is structure
        assert A.backend.name == backend
        assert str(A.dtype).replace("torch.", "") == dtype
        reference = sl.project(W, structure, **spec)
        assert abs(error(W, A) - error(W, reference)) <= tol * np.linalg.norm(W)


def test_errors() -> None:
    W = np.ones((6, 9))
    with pytest.raises(ValueError, match="dividing both sides"):
        sl.project(W, sl.BlockDiag, nblocks=2)
    with pytest.raises(ValueError, match="square"):
        sl.project(W, sl.Diagonal)
    with pytest.raises(ValueError, match="positive integer"):
        sl.project(W, sl.LowRank, rank=0)
    with pytest.raises(ValueError, match="give a 6 x 6 matrix"):
        sl.project(W, sl.Kron, factor_shapes=((2, 3), (3, 2)))
    with pytest.raises(TypeError, match=r"project\(W, LowRank\) needs the option rank="):
        sl.project(W, sl.LowRank)
    with pytest.raises(TypeError, match="floating-point"):
        sl.project(np.ones((4, 4), dtype=int), sl.LowRank, rank=1)
