"""`Dense`: an operator that stores its matrix."""

from __future__ import annotations

from structlin import _checks
from structlin._dispatch import dense_method, dispatch
from structlin.backends import Array, asarray_hint, is_array
from structlin.component import Component
from structlin.operator import LinearOperator
from structlin.rules import pinv_array
from structlin.structure import Structure, register_structure


class Dense(LinearOperator):
    """A matrix stored as a 2-D array: `A = array`.

    Costs: `A @ X` is one matmul, `O(mnk)`; `inv` forms the explicit inverse
    (`O(n^3)` once, `O(n^2)` per application); `solve` is one LU solve;
    `slogdet` one LU factorisation; `to_dense` a copy of the array, `O(mn)`.
    The operator holds `array` itself (no copy), so later writes into it show through.

    Args:
        array: Floating-point or complex array of shape `(m, n)`.

    Raises:
        TypeError: `array` is not an array, or has an integer dtype.
        ValueError: `array` is not 2-D.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[2.0, 0.0], [1.0, 1.0]]))
        >>> A @ np.array([1.0, 1.0])
        array([2., 2.])
    """

    _children = ("array",)
    _matmul_like = True  # its rules are one backend matmul

    array: Array

    def __init__(self, array: Array):
        array, _ = _checks.float_array(array, "Dense array", ndim=2)
        self._set(array=array)

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.array.shape
        return (m, n)


@dispatch
def matmat(A: Dense, X: object):
    return A.backend.matmul(A.array, X)


@dispatch
def rmatmat(X: object, A: Dense):
    return A.backend.matmul(X, A.array)


@dispatch
def to_dense(A: Dense):
    return A.array


@dispatch
def transpose(A: Dense):
    return _wrap(A.backend.swap_last(A.array))


@dispatch
def adjoint(A: Dense):
    return _wrap(A.backend.conj(A.backend.swap_last(A.array)))


@dispatch
@dense_method
def inv(A: Dense):
    return _wrap(A.backend.inv(A.array))


@dispatch
@dense_method
def pinv(A: Dense):
    """The pseudo-inverse by the thin SVD, `O(m n min(m, n))` once (see
    [`pinv_array`][structlin.rules.pinv_array] for the cutoff)."""
    return _wrap(pinv_array(A.array))


@dispatch
@dense_method
def solve(A: Dense, B: object):
    return A.backend.solve(A.array, B)


@dispatch
@dense_method
def slogdet(A: Dense):
    return A.backend.slogdet(A.array)


@dispatch
def diag(A: Dense):
    return A.backend.diagonal(A.array)


def _wrap(array: Array) -> Dense:
    """A `Dense` around an array already known to be valid (no checks, works on tracers)."""
    op = object.__new__(Dense)
    op._set(array=array)
    return op


def as_operator(x: object, what: str = "operand") -> LinearOperator:
    """`x` itself if it is an operator, `Dense(x)` if it is a 2-D array."""
    if isinstance(x, LinearOperator):
        return x
    if not is_array(x):
        raise TypeError(
            f"{what} must be an operator or a 2-D array, got {type(x).__name__}; "
            f"convert it with {asarray_hint()}"
        )
    return Dense(x)


@dispatch
def project(W: object, structure: type[Dense]):
    """`W` itself: every matrix is dense (`O(1)`, no copy)."""
    return Dense(W)


@dispatch
def components(A: Dense):
    m, n = A.shape
    return (Component(1, m, n),)


# -- the layer structure "dense" (see structlin.structure) ------------------------------------

register_structure(
    Structure(
        "dense",
        Dense,
        lambda zeros, d_in, d_out: Dense(zeros(d_out, d_in)),
        doc_operator="[`Dense`][structlin.Dense]",
        doc_parameters="`d_out d_in`",
    )
)
