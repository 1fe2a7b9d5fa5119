"""`Diagonal`: a diagonal matrix stored as its diagonal."""

from __future__ import annotations

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array, backend_of
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.operator import LinearOperator
from structlin.operators.identity import Identity
from structlin.rules import pinv_cutoff


class Diagonal(LinearOperator):
    """`A = diag(d)`, the `n x n` matrix with `d` on its diagonal.

    Every rule is exact and `O(n)`: `A @ X` scales rows, `inv` is `diag(1/d)`,
    `slogdet` is `(prod sign(d_i), sum log|d_i|)`.

    Args:
        diag: Floating-point or complex array of shape `(n,)`.

    Raises:
        TypeError: `diag` is not a floating-point array.
        ValueError: `diag` is not 1-D.
        SingularOperatorError: from `inv`/`solve` when an entry is zero.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> D = sl.Diagonal(np.array([2.0, 4.0]))
        >>> D.inv() @ np.array([2.0, 2.0])
        array([1. , 0.5])
    """

    _children = ("diag",)

    diag: Array

    def __init__(self, diag: Array):
        diag, _ = _checks.float_array(diag, "Diagonal entries", ndim=1)
        self._set(diag=diag)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.diag.shape[0]
        return (n, n)


def _wrap(d: Array) -> Diagonal:
    op = object.__new__(Diagonal)
    op._set(diag=d)
    return op


@dispatch
def matmat(A: Diagonal, X: object):
    return A.diag[:, None] * X


@dispatch
def rmatmat(X: object, A: Diagonal):
    return X * A.diag


@dispatch
def to_dense(A: Diagonal):
    b = A.backend
    n = A.shape[0]
    return b.eye(n, A.dtype, A.device) * A.diag[None, :]


@dispatch
def transpose(A: Diagonal):
    return A


@dispatch
def adjoint(A: Diagonal):
    return _wrap(A.backend.conj(A.diag)) if A.backend.is_complex(A.dtype) else A


@dispatch
def inv(A: Diagonal):
    b = A.backend
    if b.is_concrete(A.diag):
        zeros = b.to_numpy(A.diag) == 0
        if zeros.any():
            raise SingularOperatorError(
                f"Diagonal of size {A.shape[0]} is singular: zero entries at indices "
                f"{zeros.nonzero()[0][:10].tolist()}"
            )
    return _wrap(1 / A.diag)


@dispatch
def solve(A: Diagonal, B: object):
    return matmat(inv(A), B)


@dispatch
def pinv(A: Diagonal):
    """`diag(d^+)`: `1 / d_i` for the entries with `|d_i| > n eps max |d|`, zero for the
    others (the cutoff of `numpy.linalg.lstsq` with `rcond=None`); `O(n log n)` (a sort
    finds the largest entry)."""
    b = A.backend
    mag = b.abs(A.diag)
    if A.shape[0] == 0:
        return A
    kept = mag > pinv_cutoff(mag.dtype, *A.shape) * b.sum(b.sort(mag)[-1:])
    # `where` twice: the dropped entries' 1/d must not be inf, or their gradient is NaN.
    return _wrap(b.where(kept, 1 / b.where(kept, A.diag, 1 + 0 * A.diag), 0 * A.diag))


@dispatch
def slogdet(A: Diagonal):
    b = A.backend
    mag = b.abs(A.diag)
    # A zero entry gives sign 0 and log|det| = -inf, as numpy.linalg.slogdet does.
    return b.prod(A.diag / (mag + (mag == 0))), b.sum(b.log(mag))


@dispatch
def diag(A: Diagonal):
    return A.diag


@dispatch
def is_symmetric(A: Diagonal):
    return not A.backend.is_complex(A.dtype)


@dispatch
def eigh(A: Diagonal):
    """`(d, I)`: the entries, not sorted, and the identity (the real part for a complex
    `Diagonal`, which is Hermitian only with real entries); `O(n)`."""
    return A.backend.real(A.diag), Identity.like(A)


@dispatch
def structured_eigh(A: Diagonal):
    return True


@dispatch
def monomial(A: Diagonal):
    return True


@dispatch
def monomial_eigenvectors(A: Diagonal):
    return True  # the identity


@dispatch
def abs_squared(A: Diagonal):
    return _wrap(A.backend.real(A.diag * A.backend.conj(A.diag)))


@dispatch
def matrix_function(A: Diagonal, f: object):
    """`diag(f(d))`, `O(n)`."""
    return _wrap(f(A.backend, A.backend.real(A.diag)))


@dispatch
def compose(A: Diagonal, B: Diagonal):
    return _wrap(A.diag * B.diag)


@dispatch
def add(A: Diagonal, B: Diagonal):
    return _wrap(A.diag + B.diag)


@dispatch
def project(W: object, structure: type[Diagonal]):
    """The diagonal of a square `W`: optimal, since the off-diagonal entries are fixed at zero."""
    _checks.square(W, "project(W, Diagonal)")
    return Diagonal(backend_of(W).diagonal(W))


@dispatch
def components(A: Diagonal):
    # A batch of n independent 1 x 1 matrices.
    return (Component(A.shape[0], 1, 1),)
