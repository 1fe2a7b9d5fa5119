"""`Symmetric` and `PSD`: annotations that say what an operator's structure cannot.

An annotation is a thin wrapper node: one child (the operator), no arrays of its own,
every rule delegating to the operator. Being a node, it is part of the pytree (it
survives `jax.jit`, `.to(...)`, pickling) and of the lazy expressions (`PSD(K) + c I`
is a `Sum` with a `PSD` term). Being a wrapper rather than a flag, it needs no field
on every operator class, and operators stay immutable.

What annotations change: [`is_symmetric`][structlin.is_symmetric] and
[`is_psd`][structlin.is_psd] say so, and so the algorithms take the paths that need
it: Cholesky instead of LU for a dense solve or log-determinant, CG for a large
solve, the eigendecomposition of `A` for `A + c I`, Lanczos and the matrix functions.
"""

from __future__ import annotations

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.operator import LinearOperator
from structlin.rules import dense_slogdet, dense_solve, exact_path


class Symmetric(LinearOperator):
    """`A`, annotated as symmetric (`A^T = A`), or Hermitian (`A^H = A`) if complex.

    An annotation: the same matrix as `A`, with every rule delegating to `A`'s, and
    [`is_symmetric`][structlin.is_symmetric] true. The annotation is a promise, never
    checked (so that it costs nothing and works under `jax.jit`);
    [`PSD`][structlin.PSD] is the stronger one. It lets [`eigh`][structlin.eigh],
    the matrix functions and `A + c I` use the eigendecomposition of `A`. On a
    [`Kron`][structlin.Kron] it is taken to hold for every factor.

    `A.T` and `A.H` are `A` itself (`A.T` of a complex Hermitian `A` is its conjugate,
    annotated the same way).

    Args:
        op: A square operator.

    Raises:
        ValueError: `op` is not square.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a = np.array([[2.0, 1.0], [1.0, 3.0]])
        >>> S = sl.Symmetric(sl.Dense(a))
        >>> sl.is_symmetric(S), sl.is_symmetric(sl.Dense(a))
        (True, False)
        >>> S.T is S
        True
    """

    _children = ("op",)

    op: LinearOperator

    def __init__(self, op: LinearOperator):
        from structlin.expressions.dense import as_operator

        op = as_operator(op, f"{type(self).__name__} operand")
        _checks.square(op, type(self).__name__)
        if type(op) is Symmetric:  # PSD(Symmetric(A)) is PSD(A)
            op = op.op
        self._set(op=op)

    @property
    def shape(self) -> tuple[int, int]:
        return self.op.shape


class PSD(Symmetric):
    """`A`, annotated as Hermitian positive semi-definite: `x^H A x >= 0` for every `x`.

    An annotation (see [`Symmetric`][structlin.Symmetric], of which it is a subclass),
    never checked. [`is_psd`][structlin.is_psd] is then true, and what needs it follows:
    a dense solve or log-determinant uses Cholesky (half the work of LU; LU after all if
    the factorisation fails), `Auto` solves a large `A` by conjugate gradients, and the
    PSD-only rules apply (`sqrt(A ⊗ B) = sqrt(A) ⊗ sqrt(B)` for PSD factors). Rules
    propagate it where the maths says so: a Kron of PSD factors, a sum of PSD terms, a
    positive number times a PSD operator, `PSD + c I` with `c > 0`, the inverse of a PSD
    operator, and `A.H @ A`, `A @ A.H` are PSD.

    Args:
        op: A square operator.

    Raises:
        ValueError: `op` is not square.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> a = np.array([[2.0, 1.0], [1.0, 3.0]])
        >>> K = sl.Kron(sl.PSD(a), sl.PSD(a))
        >>> sl.is_psd(K), sl.is_psd(K + 0.1 * sl.Identity(4)), sl.is_psd(-1.0 * K)
        (True, True, False)
        >>> sl.explain(sl.solve, sl.PSD(sl.Dense(a)), np.ones(2)).path
        'cholesky'
    """


def _rewrap(A: Symmetric, op: LinearOperator) -> Symmetric:
    out = object.__new__(type(A))
    out._set(op=op)
    return out


@dispatch
def matmat(A: Symmetric, X: object):
    return matmat(A.op, X)


@dispatch
def rmatmat(X: object, A: Symmetric):
    return rmatmat(X, A.op)


@dispatch
def to_dense(A: Symmetric):
    return to_dense(A.op)


@dispatch
def transpose(A: Symmetric):
    dtype = A.dtype
    if dtype is None or not _checks.dense_backend(A)[0].is_complex(dtype):
        return A  # real symmetric: A^T = A
    return _rewrap(A, transpose(A.op))  # conj(A), Hermitian (PSD) as A is


@dispatch
def adjoint(A: Symmetric):
    return A


@dispatch
def inv(A: Symmetric):
    # The inverse of a Hermitian (positive definite) matrix is Hermitian (positive definite).
    return _rewrap(A, inv(A.op))


@dispatch
def pinv(A: Symmetric):
    # The pseudo-inverse of a Hermitian (PSD) matrix is Hermitian (PSD).
    return _rewrap(A, pinv(A.op))


@dispatch
def solve(A: Symmetric, B: object):
    if exact_path(A.op, "solve") == "dense":
        return dense_solve(A, B)  # Cholesky for PSD
    return solve(A.op, B)


@dispatch
def slogdet(A: Symmetric):
    if exact_path(A.op, "slogdet") == "dense":
        return dense_slogdet(A)
    return slogdet(A.op)


@dispatch
def diag(A: Symmetric):
    return diag(A.op)


@dispatch
def trace(A: Symmetric):
    return trace(A.op)


@dispatch
def eigh(A: Symmetric):
    return eigh(A.op)


@dispatch
def is_symmetric(A: Symmetric):
    return True


@dispatch
def is_psd(A: Symmetric):
    return is_psd(A.op)


@dispatch
def is_psd(A: PSD):
    return True


@dispatch
def _exact_path(A: Symmetric, operation: object):
    return exact_path(A.op, operation)


@dispatch
def components(A: Symmetric):
    return components(A.op)
