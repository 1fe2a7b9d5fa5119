"""`Triangular`: a lower or upper triangular matrix, solved by substitution."""

from __future__ import annotations

import numpy as np

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.product import Product
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator


class Triangular(LinearOperator):
    """The lower (`lower=True`) or upper triangle of a square matrix, as an operator.

    Stored as the dense `(n, n)` array it is given, of which only the triangle is read:
    the entries on the other side of the diagonal are ignored, as LAPACK's triangular
    routines ignore them (so the factor `L` of a Cholesky or an LU factorisation can be
    passed as it is, whatever its other half holds). `to_dense` gives the triangle with
    zeros elsewhere.

    Costs: `A @ X` is one matmul with the triangle, `O(n^2 k)`; `solve` a triangular
    solve (forward or back substitution), `O(n^2 k)`, where a general solve costs an
    `O(n^3)` factorisation; `slogdet` is read off the diagonal, `O(n)`
    (`log|det A| = sum log|A_ii|`); `inv` is the inverse triangle (a triangular solve
    with the identity, `O(n^3 / 3)`), again `Triangular`; `diag` and `trace` `O(n)`.
    `A^T` is the upper triangle of `A`'s transpose (lower and upper swap), `A^H` its
    conjugate. Products and sums of triangles on one side stay triangular.

    Args:
        matrix: Floating-point or complex array of shape `(n, n)`.
        lower: Whether the lower triangle (`True`) or the upper one is meant.

    Raises:
        TypeError: `matrix` is not a floating-point array, or `lower` not a bool.
        ValueError: `matrix` is not square and 2-D.
        SingularOperatorError: from `inv`/`solve`, naming the zero diagonal entries.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> L = sl.Triangular(np.array([[2.0, 9.0], [1.0, 4.0]]))  # the 9 is ignored
        >>> L.to_dense()
        array([[2., 0.],
               [1., 4.]])
        >>> sl.solve(L, np.array([2.0, 9.0]))
        array([1., 2.])
        >>> round(float(sl.logdet(L)), 4)  # log(2 * 4)
        2.0794
    """

    _children = ("matrix",)
    _static = ("lower",)
    _matmul_like = True  # its rules are one backend matmul with the triangle

    matrix: Array
    lower: bool

    def __init__(self, matrix: Array, lower: bool = True):
        matrix, _ = _checks.float_array(matrix, "Triangular matrix", ndim=2)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"Triangular matrix must be square, got shape {_checks.shape_str(matrix.shape)}; "
                "a triangular solve needs a square triangle (for a trapezoid use sl.Dense)"
            )
        if not isinstance(lower, (bool, np.bool_)):
            raise TypeError(
                f"Triangular lower must be True (the lower triangle) or False (the upper one), "
                f"got {lower!r}"
            )
        self._set(matrix=matrix, lower=bool(lower))

    @property
    def shape(self) -> tuple[int, int]:
        n = self.matrix.shape[0]
        return (n, n)


def _wrap(matrix: Array, lower: bool) -> Triangular:
    op = object.__new__(Triangular)
    op._set(matrix=matrix, lower=lower)
    return op


def _triangle(A: Triangular) -> Array:
    return A.backend.triangle(A.matrix, A.lower)


@dispatch
def matmat(A: Triangular, X: object):
    return A.backend.matmul(_triangle(A), X)


@dispatch
def rmatmat(X: object, A: Triangular):
    return A.backend.matmul(X, _triangle(A))


@dispatch
def to_dense(A: Triangular):
    return _triangle(A)


@dispatch
def transpose(A: Triangular):
    return _wrap(A.backend.swap_last(A.matrix), not A.lower)


@dispatch
def adjoint(A: Triangular):
    return _wrap(A.backend.conj(A.backend.swap_last(A.matrix)), not A.lower)


def _check_invertible(A: Triangular) -> None:
    """`SingularOperatorError` naming the zero diagonal entries, where values can be read
    (under `jax.jit` a zero pivot gives inf entries, as a dense solve does)."""
    backend = A.backend
    d = backend.diagonal(A.matrix)
    if not backend.is_concrete(d):
        return
    zeros = np.flatnonzero(backend.to_numpy(d) == 0)
    if zeros.size:
        raise SingularOperatorError(
            f"Triangular of size {A.shape[0]} is singular: its diagonal is zero at "
            f"ind{'ex' if zeros.size == 1 else 'ices'} {zeros[:10].tolist()}; a triangular "
            "matrix is invertible exactly when no diagonal entry is zero"
        )


@dispatch
def solve(A: Triangular, B: object):
    _check_invertible(A)
    return A.backend.solve_triangular(A.matrix, B, A.lower)


@dispatch
def inv(A: Triangular):
    _check_invertible(A)
    backend = A.backend
    eye = backend.eye(A.shape[0], A.dtype, A.device)
    return _wrap(backend.solve_triangular(A.matrix, eye, A.lower), A.lower)


@dispatch
def slogdet(A: Triangular):
    backend = A.backend
    d = backend.diagonal(A.matrix)
    mag = backend.abs(d)
    # A zero entry gives sign 0 and log|det| = -inf, as numpy.linalg.slogdet does.
    return backend.prod(d / (mag + (mag == 0))), backend.sum(backend.log(mag))


@dispatch
def diag(A: Triangular):
    return A.backend.diagonal(A.matrix)


@dispatch
def trace(A: Triangular):
    return A.backend.sum(A.backend.diagonal(A.matrix))


@dispatch
def compose(A: Triangular, B: Triangular):
    """Two lower (upper) triangles multiply to a lower (upper) triangle: `O(n^3)`, one matmul."""
    if A.lower != B.lower:
        return Product(A, B)
    return _wrap(A.backend.matmul(_triangle(A), _triangle(B)), A.lower)


@dispatch
def add(A: Triangular, B: Triangular):
    if A.lower != B.lower:
        return Sum(A, B)
    return _wrap(_triangle(A) + _triangle(B), A.lower)


@dispatch
def scale(c: object, A: Triangular):
    return _wrap(c * A.matrix, A.lower)


@dispatch
def components(A: Triangular):
    # Stored (and initialised, for a layer) as a dense n x n matrix, of which half is read.
    n = A.shape[0]
    return (Component(1, n, n),)
