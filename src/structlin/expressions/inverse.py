"""`Inverse`: the lazy inverse of an operator without a structured one, and `solve`."""

from __future__ import annotations

from typing import Any

from structlin import _checks
from structlin._checks import dense_backend
from structlin._dispatch import dense_method, dispatch
from structlin.operator import LinearOperator
from structlin.rules import dense_solve


class Inverse(LinearOperator):
    """`A^{-1}` for a square operator `A`, applied by solving with `A`.

    Built by `inv` for operators with no structured inverse (a `Sum`, a
    full-rank `LowRank`, a `Product` with non-square factors, user operators).
    `A^{-1} @ X` calls [`solve`][structlin.solve]`(A, X)`, which for those
    operators is a dense LU solve: `O(n^3)` per application. To apply the same
    inverse many times, materialise it once with `Dense(A.inv().to_dense())`.

    With an `alg` (built by `sl.inv(A, alg=...)`, e.g. [`CG`][structlin.CG]), each
    application solves with that algorithm instead.

    Args:
        op: A square operator.
        alg: The algorithm object whose `solve` applies the inverse, or `None` for
            [`solve`][structlin.solve]'s rules.

    Raises:
        ValueError: `op` is not square.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Inverse(sl.Dense(np.array([[2.0, 1.0], [1.0, 1.0]])))
        >>> A @ np.array([3.0, 2.0])  # solves [[2, 1], [1, 1]] y = [3, 2]
        array([1., 1.])
    """

    _children = ("op",)
    _static = ("alg",)

    op: LinearOperator
    alg: Any

    def __init__(self, op: LinearOperator, alg: Any = None):
        _checks.square(op, "Inverse")
        self._set(op=op, alg=alg)

    @property
    def shape(self) -> tuple[int, int]:
        return self.op.shape


@dispatch
@dense_method
def inv(A: LinearOperator):
    """Fallback: a lazy [`Inverse`][structlin.Inverse]; `O(1)` to build."""
    return Inverse(A)


@dispatch
def inv(A: Inverse):
    return A.op


@dispatch
@dense_method
def solve(A: LinearOperator, B: object):
    """Fallback: LU solve with the dense matrix, `O(n^3 + n^2 k)` time, `O(n^2)` memory
    (Cholesky where [`is_psd`][structlin.rules.is_psd]; see `structlin.rules.dense_solve`)."""
    return dense_solve(A, B)


@dispatch
def solve(A: Inverse, B: object):
    return matmat(A.op, B)


@dispatch
def matmat(A: Inverse, X: object):
    alg = getattr(A, "alg", None)
    return solve(A.op, X) if alg is None else alg.solve(A.op, X)


@dispatch
def to_dense(A: Inverse):
    if getattr(A, "alg", None) is not None:
        backend, dtype, device = dense_backend(A)
        return matmat(A, backend.eye(A.shape[0], dtype, device))
    return dense_backend(A)[0].inv(to_dense(A.op))


# `Inverse` only wraps operators without a structured inverse, and their transposes
# have none either, so these build the node directly (dispatching to `inv` here
# would loop with `inv(Transpose)` below).
@dispatch
def transpose(A: Inverse):
    return Inverse(transpose(A.op), getattr(A, "alg", None))


@dispatch
def adjoint(A: Inverse):
    return Inverse(adjoint(A.op), getattr(A, "alg", None))


@dispatch
def pinv(A: Inverse):
    # An `Inverse` stands for the inverse of a nonsingular `A`, whose pseudo-inverse is `A`.
    return A.op


@dispatch
def slogdet(A: Inverse):
    sign, logabsdet = slogdet(A.op)
    return dense_backend(A)[0].conj(sign), -logabsdet


@dispatch
def components(A: Inverse):
    # A^{-1} maps A's output space to its input space, so each component acts with its
    # fans swapped (a heuristic: μP does not cover inverses). Never zero-initialised.
    return tuple(
        None if c is None else c.transposed().placed(first=False, last=False)
        for c in components(A.op)
    )


# The inverse of a Hermitian (positive definite) matrix is Hermitian (positive definite).
@dispatch
def is_symmetric(A: Inverse):
    return is_symmetric(A.op)


@dispatch
def is_psd(A: Inverse):
    return is_psd(A.op)
