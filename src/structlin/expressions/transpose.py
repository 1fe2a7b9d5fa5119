"""`Transpose` and `Adjoint`: lazy (conjugate) transposes of operators without a structured rule.

Every operator in structlin has a structured transpose; these nodes exist for
user-defined operators. Applying them materialises the dense matrix of the
wrapped operator (`O(mn)` memory, `O(mn)` time per column).

They are one expression: `Adjoint` is a `Transpose` whose class sets the
conjugation flag `conjugate`, and every rule below is written once for both,
conjugating where the flag says so.
"""

from __future__ import annotations

from typing import ClassVar

from structlin._checks import dense_backend
from structlin._convert import to
from structlin._dispatch import dispatch
from structlin._protocol import dense_fallback
from structlin.backends import backend_of
from structlin.operator import LinearOperator


class Transpose(LinearOperator):
    """`A^T` for an operator `A` of shape `(m, n)`; shape `(n, m)`.

    [`Adjoint`][structlin.Adjoint] is the same node with `conjugate = True`
    (`A^H`); both are instances of `Transpose`.

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
    conjugate: ClassVar[bool] = False
    """Whether the node also conjugates (`A^H`): `False` here, `True` for `Adjoint`."""

    op: LinearOperator

    def __init__(self, op: LinearOperator):
        self._set(op=op)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.op.shape
        return (n, m)


class Adjoint(Transpose):
    """`A^H = conj(A)^T` for an operator `A` of shape `(m, n)`; shape `(n, m)`.

    A [`Transpose`][structlin.Transpose] with the conjugation flag set: every rule
    is the transpose's, conjugated.

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

    conjugate: ClassVar[bool] = True


def _is_real(A: LinearOperator) -> bool:
    return A.dtype is None or not dense_backend(A)[0].is_complex(A.dtype)


def _conj(A: Transpose, value: object) -> object:
    """`value`, conjugated if `A` is an `Adjoint`."""
    return dense_backend(A)[0].conj(value) if A.conjugate else value


@dispatch
def transpose(A: LinearOperator):
    """Fallback: a lazy [`Transpose`][structlin.Transpose]."""
    return Transpose(A)


@dispatch
def adjoint(A: LinearOperator):
    """Fallback: `transpose(A)` for real `A`, else a lazy [`Adjoint`][structlin.Adjoint]."""
    return transpose(A) if _is_real(A) else Adjoint(A)


@dispatch
def to_dense(A: Transpose):
    return _conj(A, dense_backend(A)[0].swap_last(to_dense(A.op)))


def _dense_like(A: LinearOperator, X: object):
    """`to_dense(A)` in `X`'s library, dtype and device where `A` is value-free (no backend)."""
    # Warn once per class without the rule; in nested lazy nodes that is the innermost class
    # (`Transpose(Adjoint(B))` is `conj(B)`, dense where `B` has no `adjoint`).
    inner, conjugate = A.op, A.conjugate
    while isinstance(inner, Transpose):
        inner, conjugate = inner.op, conjugate or inner.conjugate
    dense_fallback(inner, conjugate)
    if A.backend is not None:
        return to_dense(A)
    backend = backend_of(X)
    return to_dense(to(A, X.dtype, backend.device(X), backend))


@dispatch
def matmat(A: Transpose, X: object):
    return backend_of(X).matmul(_dense_like(A, X), X)


@dispatch
def rmatmat(X: object, A: Transpose):
    return backend_of(X).matmul(X, _dense_like(A, X))


@dispatch
def transpose(A: Transpose):
    # (A^T)^T = A; (A^H)^T = conj(A) has no node of its own: a lazy transpose of A^H.
    return Transpose(A) if A.conjugate else A.op


@dispatch
def adjoint(A: Transpose):
    # (A^H)^H = A, and (A^T)^H = conj(A), which is A for real A; else a lazy adjoint of A^T.
    return A.op if A.conjugate or _is_real(A) else Adjoint(A)


@dispatch
def inv(A: Transpose):
    return (adjoint if A.conjugate else transpose)(inv(A.op))


@dispatch
def pinv(A: Transpose):
    # (A^T)^+ = (A^+)^T and (A^H)^+ = (A^+)^H
    return (adjoint if A.conjugate else transpose)(pinv(A.op))


@dispatch
def _exact_path(A: Transpose, operation: object):
    if operation == "pinv":  # the transpose of the operator's, as structured as that is
        return _exact_path(A.op, operation)
    return _exact_path.resolve(LinearOperator, object)(A, operation)


@dispatch
def slogdet(A: Transpose):
    sign, logabsdet = slogdet(A.op)
    return _conj(A, sign), logabsdet


@dispatch
def diag(A: Transpose):
    return _conj(A, diag(A.op))


@dispatch
def components(A: Transpose):
    return tuple(None if c is None else c.transposed() for c in components(A.op))


# A (conjugate) transpose is as symmetric, and as positive semi-definite, as its operand.
@dispatch
def is_symmetric(A: Transpose):
    return is_symmetric(A.op)


@dispatch
def is_psd(A: Transpose):
    return is_psd(A.op)
