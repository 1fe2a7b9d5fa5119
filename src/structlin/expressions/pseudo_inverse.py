"""`PseudoInverse`: the lazy Moore-Penrose pseudo-inverse of an operator without a
structured one, and the generic `pinv`."""

from __future__ import annotations

from typing import Any

from structlin._checks import dense_backend
from structlin._dispatch import dense_method, dispatch
from structlin.operator import LinearOperator
from structlin.rules import pinv_array


class PseudoInverse(LinearOperator):
    """`A^+`, the Moore-Penrose pseudo-inverse of an `m x n` operator `A`; shape `(n, m)`.

    `A^+ b` is the least-squares solution of least norm, `argmin ||x||` among the
    minimisers of `||A x - b||`, as `numpy.linalg.lstsq(A, b, rcond=None)` gives it:
    singular values at most `max(m, n) eps` times the largest count as zero.

    Built by [`pinv`][structlin.pinv] for operators with no structured pseudo-inverse (a
    `Sum`, a `Product`, a Monarch, user operators). `A^+ @ X` then computes the thin SVD of
    the dense matrix of `A`: `O(m n min(m, n))` per application. To apply the same
    pseudo-inverse many times, materialise it once with `Dense(A_plus.to_dense())`.

    With an `alg` (built by `sl.pinv(A, alg=...)`, e.g. [`LSQR`][structlin.LSQR]), each
    application solves the least-squares problem with that algorithm instead.

    Args:
        op: The operator `A`, of any shape.
        alg: The algorithm object whose `lstsq` applies the pseudo-inverse, or `None` for
            the dense SVD.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> P = sl.PseudoInverse(sl.Dense(np.array([[1.0], [1.0]])))  # 2 x 1, rank 1
        >>> P.shape
        (1, 2)
        >>> P @ np.array([1.0, 3.0])  # the mean: least squares for a constant
        array([2.])
    """

    _children = ("op",)
    _static = ("alg",)

    op: LinearOperator
    alg: Any

    def __init__(self, op: LinearOperator, alg: Any = None):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"PseudoInverse: op must be an operator, got {type(op).__name__}")
        self._set(op=op, alg=alg)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.op.shape
        return (n, m)


@dispatch
@dense_method
def pinv(A: LinearOperator):
    """Fallback: a lazy [`PseudoInverse`][structlin.PseudoInverse]; `O(1)` to build."""
    return PseudoInverse(A)


@dispatch
def pinv(A: PseudoInverse):
    return A.op  # (A^+)^+ = A


@dispatch
def matmat(A: PseudoInverse, X: object):
    alg = getattr(A, "alg", None)
    if alg is not None:
        return alg.lstsq(A.op, X)
    return dense_backend(A)[0].matmul(pinv_array(to_dense(A.op)), X)


@dispatch
def to_dense(A: PseudoInverse):
    if getattr(A, "alg", None) is not None:
        backend, dtype, device = dense_backend(A)
        return matmat(A, backend.eye(A.shape[1], dtype, device))
    return pinv_array(to_dense(A.op))


# `(A^T)^+ = (A^+)^T`: the node wraps an operator without a structured pseudo-inverse,
# and its transpose has none either (dispatching to `pinv` here would loop with the
# rule of `Transpose`).
@dispatch
def transpose(A: PseudoInverse):
    return PseudoInverse(transpose(A.op), getattr(A, "alg", None))


@dispatch
def adjoint(A: PseudoInverse):
    return PseudoInverse(adjoint(A.op), getattr(A, "alg", None))


@dispatch
def components(A: PseudoInverse):
    # As for `Inverse`: A^+ maps A's output space to its input space (a heuristic).
    return tuple(
        None if c is None else c.transposed().placed(first=False, last=False)
        for c in components(A.op)
    )


# The pseudo-inverse of a Hermitian (positive semi-definite) matrix is Hermitian (PSD).
@dispatch
def is_symmetric(A: PseudoInverse):
    return is_symmetric(A.op)


@dispatch
def is_psd(A: PseudoInverse):
    return is_psd(A.op)
