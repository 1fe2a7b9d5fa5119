"""`BlockDiagonal` and `sl.BlockDiag([...])`: the equal-block fast path kept, blocks of any
shape and structure by their own rules, annotations propagated, singular blocks named.

The rules on every backend and dtype are checked by `test_conformance.py`."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg

import structlin as sl

rng = np.random.default_rng(0)
a = rng.standard_normal((3, 3))
P = a @ a.T + np.eye(3)
f = np.array([[2.0, 1.0], [1.0, 2.0]])


def test_a_list_of_equal_arrays_is_the_batched_block_diag() -> None:
    B = sl.BlockDiag([P, 2 * P])
    assert type(B) is sl.BlockDiag
    assert B.blocks.shape == (2, 3, 3)
    np.testing.assert_allclose(B.to_dense(), scipy.linalg.block_diag(P, 2 * P))
    assert type(sl.BlockDiag(np.stack([P, P]))) is sl.BlockDiag  # the tensor, as before
    for blocks in ([P, np.eye(2)], [P, sl.Dense(P)], [P, P.astype(np.float32)]):
        assert type(sl.BlockDiag(blocks)) is sl.BlockDiagonal
    for op in (B, sl.BlockDiag([P, f])):
        assert type(pickle.loads(pickle.dumps(op))) is type(op)


def test_blocks_keep_their_structure() -> None:
    K = sl.Kron(sl.PSD(f), sl.PSD(f))
    A = sl.BlockDiag([sl.PSD(P), K, sl.PSD(sl.Diagonal(np.array([3.0])))])
    D = scipy.linalg.block_diag(P, np.kron(f, f), [[3.0]])
    inverse = A.inv()
    assert [type(b).__name__ for b in inverse.blocks] == ["PSD", "Kron", "PSD"]
    np.testing.assert_allclose(inverse.to_dense(), np.linalg.inv(D), atol=1e-12)
    assert sl.explain(sl.solve, A, np.ones(8)).path == "structured"
    b = rng.standard_normal((8, 2))
    np.testing.assert_allclose(sl.solve(A, b), np.linalg.solve(D, b))
    np.testing.assert_allclose(sl.logdet(A), np.linalg.slogdet(D)[1])
    np.testing.assert_allclose(sl.diag(A), np.diag(D))
    # Annotations: every block PSD, so the whole is.
    assert sl.is_psd(A)
    assert sl.is_symmetric(A)
    assert not sl.is_psd(sl.BlockDiag([sl.PSD(P), f]))
    w, Q = sl.eigh(A)
    assert type(Q) is sl.BlockDiagonal
    assert type(Q.blocks[1]) is sl.Kron
    np.testing.assert_allclose((Q @ np.diag(w) @ Q.H.to_dense()), D, atol=1e-12)
    R = sl.sqrt(A)
    assert sl.is_psd(R)
    np.testing.assert_allclose((R @ R).to_dense(), D, atol=1e-12)


def test_blockwise_products_and_sums() -> None:
    A = sl.BlockDiag([P, sl.Diagonal(np.array([1.0, 2.0]))])
    B = sl.BlockDiag([np.ones((3, 1)), sl.Diagonal(np.array([3.0, 4.0]))])
    D_A, D_B = A.to_dense(), B.to_dense()
    assert type(A @ B) is sl.BlockDiagonal
    assert type((A @ B).blocks[1]) is sl.Diagonal
    np.testing.assert_allclose((A @ B).to_dense(), D_A @ D_B)
    assert type(A + A) is sl.BlockDiagonal
    assert type(2 * A) is sl.BlockDiagonal
    np.testing.assert_allclose((A + 2 * A).to_dense(), 3 * D_A)
    C = sl.BlockDiag([np.eye(2), np.eye(3)])  # partitioned otherwise: lazy
    assert type(A @ C) is sl.Product
    assert type(A + C) is sl.Sum
    np.testing.assert_allclose((A + C).to_dense(), D_A + np.eye(5))


def test_singular_and_rectangular_blocks() -> None:
    S = sl.BlockDiag([P, np.zeros((2, 2))])
    with pytest.raises(sl.SingularOperatorError, match=r"block 1 \(Dense of shape \(2, 2\)\)"):
        S.inv()
    R = sl.BlockDiag([np.ones((1, 2)), np.ones((2, 1))])  # square, rank 2 < 3
    with pytest.raises(sl.SingularOperatorError, match=r"block 0 has shape \(1, 2\)"):
        sl.solve(R, np.ones(3))
    sign, logabsdet = sl.slogdet(R)
    assert float(sign) == 0.0
    assert logabsdet == -np.inf
    np.testing.assert_allclose(sl.diag(R), np.diag(R.to_dense()))
    np.testing.assert_allclose(sl.trace(R), np.trace(R.to_dense()))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"at least one block"):
        sl.BlockDiagonal([])
    with pytest.raises(TypeError, match=r"takes a list of blocks"):
        sl.BlockDiagonal(P)
    with pytest.raises(TypeError, match=r"BlockDiagonal block 1 must be an operator"):
        sl.BlockDiag([P, "x"])
