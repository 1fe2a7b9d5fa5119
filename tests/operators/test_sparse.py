"""`Sparse`: the libraries' sparse formats in, products and gradients against the dense
matrix, SciPy's sparse LU on NumPy, the general solve paths elsewhere, and bad input.

The rules on every backend and dtype are checked by `test_conformance.py`."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse

import structlin as sl
from structlin.testing import to_numpy

rng = np.random.default_rng(0)
M = scipy.sparse.random(8, 8, density=0.3, random_state=0, format="csr") + 4 * scipy.sparse.eye(8)
D = M.toarray()
needs_torch = pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="needs PyTorch")
needs_jax = pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs JAX")


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"])
def test_every_scipy_format(fmt: str) -> None:
    S = sl.Sparse(M.asformat(fmt))
    np.testing.assert_allclose(S.to_dense(), D)
    x = rng.standard_normal((8, 2))
    np.testing.assert_allclose(S @ x, D @ x)
    np.testing.assert_allclose(x.T @ S, x.T @ D)


def test_sums_scalings_and_transposes_stay_sparse() -> None:
    S = sl.Sparse(M)
    for op, ref in [(S + S.T, D + D.T), (2.5 * S, 2.5 * D), (S - S, 0 * D), (S.T, D.T)]:
        assert type(op) is sl.Sparse
        np.testing.assert_allclose(op.to_dense(), ref, atol=1e-12)
    np.testing.assert_allclose(sl.diag(S + S), 2 * np.diag(D))
    np.testing.assert_allclose(sl.trace(S + S), 2 * np.trace(D))
    assert S.nnz == M.nnz


def test_numpy_solves_with_scipy_sparse_lu() -> None:
    S = sl.Sparse(M)
    plan = sl.explain(sl.solve, S, np.ones(8))
    assert plan.path == "structured"
    b = rng.standard_normal((8, 3))
    np.testing.assert_allclose(sl.solve(S, b), np.linalg.solve(D, b))
    np.testing.assert_allclose(S.inv() @ b, np.linalg.solve(D, b))
    big = sl.Auto(dense_limit=4)  # exact at any size: no iterative method is planned
    assert sl.explain(sl.solve, S, b, alg=big).path == "structured"
    assert sl.explain(sl.inv, S, alg=big).path == "structured"
    np.testing.assert_allclose(sl.solve(S, b, alg=big), np.linalg.solve(D, b))
    Z = sl.Sparse(M.multiply(scipy.sparse.csr_array(np.arange(8) != 0)))  # column 0 zeroed
    sign, logabsdet = sl.slogdet(Z)
    assert float(sign) == 0.0
    assert logabsdet == -np.inf
    with pytest.raises(sl.SingularOperatorError, match=r"singular sparse matrix"):
        sl.solve(Z, b)
    # a permuted, complex matrix: the signs of the LU's row and column permutations count
    P = scipy.sparse.csr_array(np.eye(8)[rng.permutation(8)]) @ (M + 1j * M.T)
    sign, logabsdet = sl.slogdet(sl.Sparse(P))
    ref_sign, ref_logabsdet = np.linalg.slogdet(P.toarray())
    np.testing.assert_allclose([sign, logabsdet], [ref_sign, ref_logabsdet])


@needs_torch
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_torch_formats_gradients_and_solve_paths() -> None:
    import torch

    dense = torch.tensor(D)
    for t in (dense.to_sparse_coo(), dense.to_sparse_csr()):
        assert torch.allclose(sl.Sparse(t).to_dense(), dense)
    # Gradients reach the sparse tensor the operator was made from.
    leaf = dense.to_sparse_coo().requires_grad_(True)
    x, y = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    torch.dot(y, sl.Sparse(leaf) @ x).backward()
    expected = (y[:, None] * x[None, :]) * (dense != 0)  # d <y, S x> / dS_ij on the pattern
    assert torch.allclose(leaf.grad.to_dense(), expected)
    # ... and the values of the triples, as for a layer's parameter.
    coo = M.tocoo()
    values = torch.tensor(coo.data, requires_grad=True)
    S = sl.Sparse.from_coo(values, torch.tensor(coo.row), torch.tensor(coo.col), (8, 8))
    torch.dot(y, x @ S).backward()
    assert torch.allclose(values.grad, x[coo.row] * y[coo.col])

    S = S.to(dtype=torch.float64)
    b = torch.ones(8, dtype=torch.float64)
    assert sl.explain(sl.solve, S, b).path == "lu"  # no sparse factorisation: dense
    assert sl.explain(sl.solve, S, b, alg=sl.Auto(dense_limit=4)).path == "gmres"
    SPD = sl.PSD(S @ S.T + S.T @ S)
    assert sl.explain(sl.solve, SPD, b, alg=sl.Auto(dense_limit=4)).path == "cg"
    dense_spd = SPD.to_dense().detach()
    x = sl.solve(SPD, b, alg=sl.CG(tol=1e-12))
    assert torch.allclose(x, torch.linalg.solve(dense_spd, b))


@needs_jax
def test_jax_formats_gradients_under_jit() -> None:
    import jax
    import jax.numpy as jnp
    from jax.experimental import sparse

    dense = jnp.asarray(D, jnp.float32)
    for s in (sparse.BCOO.fromdense(dense), sparse.BCSR.fromdense(dense)):
        np.testing.assert_allclose(sl.Sparse(s).to_dense(), D, rtol=1e-6)
    padded = sparse.BCOO.fromdense(dense, nse=M.nnz + 3)  # padding entries out of range
    np.testing.assert_allclose(sl.diag(sl.Sparse(padded)), np.diag(D), rtol=1e-6)
    np.testing.assert_allclose(sl.trace(sl.Sparse(padded)), np.trace(D), rtol=1e-6)

    B = sparse.BCOO.fromdense(dense)
    x, y = jnp.arange(8.0), jnp.ones(8)

    @jax.jit
    def f(data: jax.Array) -> jax.Array:
        return jnp.vdot(y, sl.Sparse(sparse.BCOO((data, B.indices), shape=B.shape)) @ x)

    grad = jax.grad(f)(B.data)
    rows, cols = np.asarray(B.indices).T
    np.testing.assert_allclose(grad, np.asarray(y)[rows] * np.asarray(x)[cols])


@needs_torch
@needs_jax
def test_conversion_between_backends() -> None:
    S = sl.Sparse(M)
    T = S.to(backend="torch", dtype="float32")
    J = T.to(backend="jax")
    for op in (T, J):
        np.testing.assert_allclose(to_numpy(op.to_dense()), D, rtol=1e-6)
    assert str(J.dtype) == "float32"
    assert J.rows.dtype == J.backend.index_dtype()


def test_bad_input() -> None:
    with pytest.raises(TypeError, match=r"got a dense ndarray.*use sl\.Dense"):
        sl.Sparse(D)
    with pytest.raises(TypeError, match=r"Sparse takes a scipy\.sparse matrix.*got list"):
        sl.Sparse([[1.0]])
    with pytest.raises(TypeError, match=r"dtype int64.*floating-point"):
        sl.Sparse(scipy.sparse.csr_array(np.eye(3, dtype=np.int64)))
    with pytest.raises(ValueError, match=r"2-D sparse matrix"):
        sl.Sparse(scipy.sparse.coo_array(np.ones(3)))
    with pytest.raises(ValueError, match=r"rows must lie in 0\.\.1.*\[5\]"):
        sl.Sparse.from_coo(np.ones(2), np.array([0, 5]), np.array([0, 1]), (2, 2))
    with pytest.raises(ValueError, match=r"cols must be 1-D of the values' length 2"):
        sl.Sparse.from_coo(np.ones(2), np.array([0, 1]), np.array([0]), (2, 2))
    with pytest.raises(TypeError, match=r"rows must be an integer array"):
        sl.Sparse.from_coo(np.ones(2), np.array([0.0, 1.0]), np.array([0, 1]), (2, 2))


@needs_torch
def test_bad_torch_layouts() -> None:
    import torch

    with pytest.raises(
        TypeError, match=r"torch\.sparse_coo or torch\.sparse_csr, got torch\.sparse_csc"
    ):
        sl.Sparse(torch.eye(3).to_sparse_csc())
    hybrid = torch.ones(3, 3, 2).to_sparse(sparse_dim=2)
    with pytest.raises(ValueError, match=r"2-D sparse matrix.*1 dense dimensions"):
        sl.Sparse(hybrid)
