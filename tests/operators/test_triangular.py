"""`Triangular`: triangular solves that ignore the other half, the determinant from the
diagonal, structure kept by products and sums, gradients on PyTorch and JAX, bad input.

The rules on every backend and dtype are checked by `test_conformance.py`."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import structlin as sl

rng = np.random.default_rng(0)
A = rng.standard_normal((5, 5)) + 3 * np.eye(5)


@pytest.mark.parametrize("lower", [True, False])
def test_solve_reads_only_its_triangle(lower: bool) -> None:
    T = sl.Triangular(A, lower)
    ref = np.tril(A) if lower else np.triu(A)
    b = rng.standard_normal((5, 2))
    np.testing.assert_allclose(sl.solve(T, b), np.linalg.solve(ref, b))
    assert sl.explain(sl.solve, T, b).path == "structured"
    inverse = T.inv()
    assert type(inverse) is sl.Triangular
    assert inverse.lower == lower
    np.testing.assert_allclose(inverse.to_dense(), np.linalg.inv(ref), atol=1e-12)
    assert T.T.lower != lower
    np.testing.assert_allclose(T.T.to_dense(), ref.T)
    sign, logabsdet = sl.slogdet(T)
    np.testing.assert_allclose([sign, logabsdet], np.linalg.slogdet(ref))


def test_products_and_sums_of_one_side_stay_triangular() -> None:
    L, U = sl.Triangular(A), sl.Triangular(A, lower=False)
    for op, ref, kind in [
        (L @ L, np.tril(A) @ np.tril(A), sl.Triangular),
        (L + 2 * L, 3 * np.tril(A), sl.Triangular),
        (L @ U, np.tril(A) @ np.triu(A), sl.Product),
        (L + U, np.tril(A) + np.triu(A), sl.Sum),
    ]:
        assert type(op) is kind
        np.testing.assert_allclose(op.to_dense(), ref, atol=1e-12)


def test_a_zero_diagonal_entry_is_named() -> None:
    a = A.copy()
    a[3, 3] = 0.0
    T = sl.Triangular(a)
    with pytest.raises(sl.SingularOperatorError, match=r"diagonal is zero at index \[3\]"):
        sl.solve(T, np.ones(5))
    with pytest.raises(sl.SingularOperatorError, match=r"index \[3\]"):
        T.inv()
    sign, logabsdet = sl.slogdet(T)
    assert float(sign) == 0.0
    assert logabsdet == -np.inf


@pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="needs PyTorch")
def test_torch_gradient_of_solve_and_logdet() -> None:
    import torch

    a = torch.tensor(A, requires_grad=True)
    b = torch.tensor(rng.standard_normal(5))
    (sl.solve(sl.Triangular(a), b).sum() + sl.logdet(sl.Triangular(a))).backward()
    ref = torch.tensor(A, requires_grad=True)
    L = torch.tril(ref)
    (torch.linalg.solve(L, b).sum() + torch.linalg.slogdet(L)[1]).backward()
    assert torch.allclose(a.grad, ref.grad)
    assert torch.all(torch.triu(a.grad, 1) == 0)  # the ignored half gets no gradient


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs JAX")
def test_jax_gradient_of_solve_under_jit() -> None:
    import jax
    import jax.numpy as jnp

    b = jnp.asarray(rng.standard_normal(5))

    def f(a: jax.Array) -> jax.Array:
        return sl.solve(sl.Triangular(a, lower=False), b).sum() + sl.logdet(
            sl.Triangular(a, lower=False)
        )

    def ref(a: jax.Array) -> jax.Array:
        U = jnp.triu(a)
        return jnp.linalg.solve(U, b).sum() + jnp.linalg.slogdet(U)[1]

    a = jnp.asarray(A)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(a), jax.grad(ref)(a), rtol=1e-10)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"must be square, got shape \(2, 3\)"):
        sl.Triangular(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"lower must be True .* got 'upper'"):
        sl.Triangular(A, "upper")
    with pytest.raises(TypeError, match=r"floating-point"):
        sl.Triangular(np.eye(3, dtype=np.int64))
