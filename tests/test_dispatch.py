"""The rules' call path: implementations resolved once per argument types, kept fresh."""

from __future__ import annotations

import numpy as np
import pytest

import structlin as sl
from structlin.rules import dispatch


class Twice(sl.LinearOperator):
    """`2 I`, with only a matmat rule at first."""

    _static = ("n",)

    def __init__(self, n: int):
        self._set(n=n)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)


@dispatch
def matmat(A: Twice, X: object):
    return 2 * X


def test_new_methods_replace_cached_resolutions():
    A = Twice(3)
    assert sl.rules.trace(A) == 6.0  # the fallback: sum of the dense diagonal
    calls = []

    @dispatch
    def trace(A: Twice):
        calls.append(A)
        return 2.0 * A.n

    assert sl.rules.trace(A) == 6.0
    assert calls == [A]  # the new method, not the cached fallback


def test_class_arguments_dispatch_by_value():
    W = np.arange(6.0).reshape(2, 3)
    assert isinstance(sl.rules.project(W, sl.Dense), sl.Dense)
    assert isinstance(sl.rules.project(np.eye(3), sl.Diagonal), sl.Diagonal)
    with pytest.raises(TypeError, match="no projection onto Twice"):
        sl.rules.project(W, Twice)


def test_a_rule_is_a_documented_plum_function():
    rule = sl.rules.matmat
    assert rule.__name__ == "matmat"
    assert "A @ X" in rule.__doc__
    assert len(rule.methods) > 10
    assert "structlin rule matmat" in repr(rule)
    impl = rule.resolve(sl.Dense, np.ndarray)
    assert impl(sl.Dense(np.eye(2)), np.ones((2, 1))).shape == (2, 1)


# -- the fast path of `A @ x` and `x @ A` ---------------------------------------------------
BACKENDS = ["numpy", "torch", "jax"]


def _arr(x: np.ndarray, backend: str) -> object:
    """`x` as an array of `backend`, dtype preserved."""
    if backend == "numpy":
        return x
    if backend == "torch":
        torch = pytest.importorskip("torch")
        return torch.as_tensor(x.copy())
    jnp = pytest.importorskip("jax.numpy")
    return jnp.asarray(x)


def _np(y: object) -> np.ndarray:
    return y.detach().numpy() if hasattr(y, "detach") else np.asarray(y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_path_still_checks_every_operand(backend: str) -> None:
    """After plain operands took the fast path, every other operand still gets the full checks."""
    W = np.arange(9.0, dtype=np.float32).reshape(3, 3) + np.eye(3, dtype=np.float32)
    A = sl.Dense(_arr(W, backend))
    x = np.arange(3.0, dtype=np.float32)
    for _ in range(2):  # a plain vector and matrix, from both sides
        np.testing.assert_allclose(_np(A @ _arr(x, backend)), W @ x, rtol=1e-6)
        np.testing.assert_allclose(_np(_arr(x, backend) @ A), x @ W, rtol=1e-6)
        np.testing.assert_allclose(_np(A @ _arr(W, backend)), W @ W, rtol=1e-5)
        np.testing.assert_allclose(_np(_arr(W[:2], backend) @ A), W[:2] @ W, rtol=1e-5)
    # promotion, not refusal, for another floating dtype
    y = A @ _arr(x.astype(np.float64), backend)
    assert "float64" in str(y.dtype)
    np.testing.assert_allclose(_np(y), W.astype(np.float64) @ x, rtol=1e-6)
    with pytest.raises(TypeError, match="int64"):
        A @ _arr(x.astype(np.int64), backend)
    with pytest.raises(TypeError, match="int64"):
        _arr(x.astype(np.int64), backend) @ A
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4,\)"):
        A @ _arr(np.ones(4, np.float32), backend)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(2, 4\)"):
        _arr(np.ones((2, 4), np.float32), backend) @ A
    with pytest.raises(ValueError, match=r"\(3, 2, 2\)"):  # the first axis fits, but 3-D
        A @ _arr(np.ones((3, 2, 2), np.float32), backend)
    other = "torch" if backend != "torch" else "numpy"
    with pytest.raises(TypeError, match=rf"{backend}.*{other}"):
        A @ _arr(x, other)
    with pytest.raises(TypeError, match="list"):
        A @ [1.0, 2.0, 3.0]
    # rows of any batch shape, and a value-free operator, which has no fast path
    rows = np.ones((2, 4, 3), np.float32)
    np.testing.assert_allclose(_np(_arr(rows, backend) @ A), rows @ W, rtol=1e-6)
    np.testing.assert_allclose(_np(sl.Identity(3) @ _arr(x, backend)), x)


class Doubled(sl.Dense):
    """A Dense subclass: it inherits Dense's rules until it registers its own."""


def test_fast_path_follows_new_methods():
    A = Doubled(np.eye(2))
    x = np.ones(2)
    np.testing.assert_allclose(A @ x, x)  # Dense's rule, cached for (Doubled, ndarray)

    @dispatch
    def matmat(A: Doubled, X: object):
        return 2 * X

    np.testing.assert_allclose(A @ np.ones((2, 1)), 2 * np.ones((2, 1)))


def test_tensor_times_operator():
    """`tensor @ op` is answered through `__torch_function__`; other PyTorch functions refuse operators."""
    torch = pytest.importorskip("torch")
    W = torch.randn(4, 3, dtype=torch.float64)
    A = sl.Dense(W)
    for X in (torch.randn(4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)):
        torch.testing.assert_close(X @ A, X @ W)
        torch.testing.assert_close(X.matmul(A), X @ W)
    with pytest.raises(TypeError):
        torch.matmul(torch.randn(4, dtype=torch.float64), A)
    with pytest.raises(TypeError):
        torch.add(torch.randn(4, 3, dtype=torch.float64), A)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\)"):
        torch.ones(3, dtype=torch.float64) @ A


def test_operator_products_under_torch_compile():
    """Dynamo hands `op @ tensor` to `__torch_function__` as `Tensor.matmul(tensor, op)`; the
    hook must not answer it there (that would compute `tensor @ op`), so the code falls back
    to running eagerly and both products stay right."""
    torch = pytest.importorskip("torch")
    W = torch.randn(4, 4, dtype=torch.float64)
    A = sl.Dense(W)
    x = torch.randn(4, dtype=torch.float64)
    torch._dynamo.reset()
    left = torch.compile(lambda v: A @ v, backend="eager")
    right = torch.compile(lambda v: v @ A, backend="eager")
    torch.testing.assert_close(left(x), W @ x)
    torch.testing.assert_close(right(x), x @ W)
