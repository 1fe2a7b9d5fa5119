"""`Transpose` and `Adjoint`: lazy (conjugate) transposes of operators without a structured rule.

Every operator in structlin has a structured transpose; these nodes exist for
user-defined operators. Applying them materialises the dense matrix of the
wrapped operator (`O(mn)` memory, `O(mn)` time per column).
"""

from __future__ import annotations

from structlin._checks import dense_backend
from structlin._convert import to
from structlin._dispatch import dispatch
from structlin._protocol import dense_fallback
from structlin.backends import backend_of
from structlin.operator import LinearOperator


class Transpose(LinearOperator):
    """`A^T` for an operator `A` of shape `(m, n)`; shape `(n, m)`.

    Args:
        op: The operator `A`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> L = sl.LowRank(np.ones((3, 1)), np.arange(2.0).reshape(1, 2))
        >>> type(L.T).__name__  # A.T is structured where a rule exists
        'LowRank'
        >>> T = sl.Transpose(L)  # the lazy wrapper, for operators without one
        >>> T.to_dense()
        array([[0., 0., 0.],
               [1., 1., 1.]])
    """

    _children = ("op",)

    op: LinearOperator

    def __init__(self, op: LinearOperator):
        self._set(op=op)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.op.shape
        return (n, m)


class Adjoint(LinearOperator):
    """`A^H = conj(A)^T` for an operator `A` of shape `(m, n)`; shape `(n, m)`.

    Args:
        op: The operator `A`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Adjoint(sl.Dense(np.array([[1j, 2.0]])))
        >>> A.shape
        (2, 1)
        >>> A.to_dense()
        array([[0.-1.j],
               [2.-0.j]])
    """

    _children = ("op",)

    op: LinearOperator

    def __init__(self, op: LinearOperator):
        self._set(op=op)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.op.shape
        return (n, m)


@dispatch
def transpose(A: LinearOperator):
    """Fallback: a lazy [`Transpose`][structlin.Transpose]."""
    return Transpose(A)


@dispatch
def adjoint(A: LinearOperator):
    """Fallback: `transpose(A)` for real `A`, else a lazy [`Adjoint`][structlin.Adjoint]."""
    if A.dtype is None or not dense_backend(A)[0].is_complex(A.dtype):
        return transpose(A)
    return Adjoint(A)


@dispatch
def to_dense(A: Transpose):
    return dense_backend(A)[0].swap_last(to_dense(A.op))


@dispatch
def to_dense(A: Adjoint):
    backend = dense_backend(A)[0]
    return backend.conj(backend.swap_last(to_dense(A.op)))


def _dense_like(A: LinearOperator, X: object):
    """`to_dense(A)` in `X`'s library, dtype and device where `A` is value-free (no backend)."""
    dense_fallback(A.op, isinstance(A, Adjoint))  # warns once per class without the rule
    if A.backend is not None:
        return to_dense(A)
    backend = backend_of(X)
    return to_dense(to(A, X.dtype, backend.device(X), backend))


@dispatch
def matmat(A: Transpose | Adjoint, X: object):
    return backend_of(X).matmul(_dense_like(A, X), X)


@dispatch
def rmatmat(X: object, A: Transpose | Adjoint):
    return backend_of(X).matmul(X, _dense_like(A, X))


@dispatch
def transpose(A: Transpose):
    return A.op


@dispatch
def adjoint(A: Adjoint):
    return A.op


@dispatch
def inv(A: Transpose):
    return transpose(inv(A.op))


@dispatch
def inv(A: Adjoint):
    return adjoint(inv(A.op))


@dispatch
def slogdet(A: Transpose):
    return slogdet(A.op)


@dispatch
def slogdet(A: Adjoint):
    sign, logabsdet = slogdet(A.op)
    return dense_backend(A)[0].conj(sign), logabsdet


@dispatch
def diag(A: Transpose):
    return diag(A.op)


@dispatch
def diag(A: Adjoint):
    return dense_backend(A)[0].conj(diag(A.op))


@dispatch
def components(A: Transpose):
    return tuple(None if c is None else c.transposed() for c in components(A.op))


@dispatch
def components(A: Adjoint):
    return tuple(None if c is None else c.transposed() for c in components(A.op))
