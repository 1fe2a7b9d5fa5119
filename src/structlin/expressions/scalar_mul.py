"""`ScalarMul`: a scalar multiple `c A` of an operator."""

from __future__ import annotations

import math
import numbers
from typing import Any

from structlin import _checks
from structlin._convert import bind
from structlin._dispatch import dispatch
from structlin.backends import DType, backend_of, get_backend, is_array
from structlin.errors import SingularOperatorError
from structlin.operator import LinearOperator, cached_property


def is_scalar(c: Any) -> bool:
    """Whether `c` is a Python number or a 0-d array."""
    if isinstance(c, numbers.Number) and not isinstance(c, bool):
        return True
    return is_array(c) and len(c.shape) == 0


class ScalarMul(LinearOperator):
    """`c A` for a scalar `c` (a Python number or a 0-d array) and an operator `A`.

    Lazy and exact: `(cA)^T = c A^T`, `(cA)^H = conj(c) A^H`,
    `(cA)^{-1} = A^{-1} / c`, `log|det(cA)| = n log|c| + log|det A|`,
    each at the cost of the same rule for `A`. Built by `c * A`, `A / c` and `-A`.
    Array scalars are leaves of the pytree, so JAX can differentiate with respect to `c`.

    Args:
        scalar: Python number or 0-d floating-point array.
        op: The operator.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> C = sl.ScalarMul(2.0, sl.Kron(np.eye(2), np.eye(2)))  # also spelled 2.0 * Kron(...)
        >>> C @ np.ones(4)
        array([2., 2., 2., 2.])
    """

    _children = ("scalar", "op")

    scalar: Any
    op: LinearOperator

    def __init__(self, scalar: Any, op: LinearOperator):
        if not is_scalar(scalar):
            raise TypeError(
                f"ScalarMul needs a Python number or a 0-d array, got {type(scalar).__name__}"
                + (
                    f" of shape {_checks.shape_str(scalar.shape)}"
                    if hasattr(scalar, "shape")
                    else ""
                )
            )
        if is_array(scalar):
            scalar, _ = _checks.float_array(scalar, "ScalarMul scalar")
            _checks.same_backend((scalar, op), "ScalarMul")
        self._set(scalar=scalar, op=op)
        # The rules hand `A`'s operands to `op` as they are, so `op` takes `A`'s dtype (a
        # copy, once): PyTorch multiplies no real matrix by a complex one, which `1j * A`
        # and a complex 0-d scalar would otherwise ask of it.
        backend = backend_of(scalar) if is_array(scalar) else op.backend
        if backend is not None and (is_array(scalar) or op.dtype != self.dtype):
            device = backend.device(scalar) if is_array(scalar) else op.device
            (op,) = bind((op,), backend, self.dtype, device)
            self._set(op=op)

    @property
    def shape(self) -> tuple[int, int]:
        return self.op.shape

    @cached_property
    def dtype(self) -> DType:
        c, dtype = self.scalar, self.op.dtype
        if dtype is None:
            return c.dtype if is_array(c) else None
        # An Identity may carry a dtype but no backend: its dtypes are NumPy's.
        backend = backend_of(c) if is_array(c) else self.op.backend
        if backend is None:
            backend = get_backend("numpy")
        dtype = backend.canonical_dtype(dtype)
        if is_array(c):
            return backend.result_type(c.dtype, dtype)
        if isinstance(c, complex) and not backend.is_complex(dtype):
            # The complex type of the operator's precision, as `1j * x` gives for an array x.
            return backend.result_type(dtype, backend.canonical_dtype("complex64"))
        return dtype


def _wrap(c: Any, op: LinearOperator) -> ScalarMul:
    out = object.__new__(ScalarMul)
    out._set(scalar=c, op=op)
    return out


def _conj(c: Any) -> Any:
    return backend_of(c).conj(c) if is_array(c) else c.conjugate()


@dispatch
def matmat(A: ScalarMul, X: object):
    return A.scalar * matmat(A.op, X)


@dispatch
def rmatmat(X: object, A: ScalarMul):
    return A.scalar * rmatmat(X, A.op)


@dispatch
def to_dense(A: ScalarMul):
    return A.scalar * to_dense(A.op)


@dispatch
def transpose(A: ScalarMul):
    return _wrap(A.scalar, transpose(A.op))


@dispatch
def adjoint(A: ScalarMul):
    return _wrap(_conj(A.scalar), adjoint(A.op))


def _check_nonzero(A: ScalarMul) -> None:
    c = A.scalar
    concrete = not is_array(c) or backend_of(c).is_concrete(c)
    if concrete and c == 0:
        raise SingularOperatorError(
            f"ScalarMul of shape {_checks.shape_str(A.shape)} with scalar 0 is singular"
        )


@dispatch
def inv(A: ScalarMul):
    _check_nonzero(A)
    return _wrap(1 / A.scalar, inv(A.op))


@dispatch
def pinv(A: ScalarMul):
    """`(c A)^+ = A^+ / c`; for `c = 0` (where it can be read) the zero operator `0 A^H`."""
    c = A.scalar
    concrete = not is_array(c) or backend_of(c).is_concrete(c)
    if concrete and c == 0:
        return _wrap(c, adjoint(A.op))
    return _wrap(1 / c, pinv(A.op))


@dispatch
def solve(A: ScalarMul, B: object):
    _check_nonzero(A)
    return solve(A.op, B) / A.scalar


@dispatch
def slogdet(A: ScalarMul):
    sign, logabsdet = slogdet(A.op)
    c = A.scalar
    n = A.shape[0]
    magnitude = abs(c)
    unit = c / (magnitude + (magnitude == 0))  # 0 when c == 0, as numpy.linalg.slogdet
    if is_array(c):
        log_magnitude = backend_of(c).log(magnitude)
    else:
        log_magnitude = math.log(magnitude) if magnitude > 0 else -math.inf
    return sign * unit**n, logabsdet + n * log_magnitude


@dispatch
def diag(A: ScalarMul):
    return A.scalar * diag(A.op)


@dispatch
def trace(A: ScalarMul):
    return A.scalar * trace(A.op)


@dispatch
def scale(c: object, A: LinearOperator):
    """`c A` as a lazy [`ScalarMul`][structlin.ScalarMul]; `O(1)`."""
    return ScalarMul(c, A)


@dispatch
def scale(c: object, A: ScalarMul):
    return ScalarMul(c * A.scalar, A.op)


@dispatch
def components(A: ScalarMul):
    return (None, *components(A.op))  # the scalar is fixed, not a learnable matrix


def _real_scalar(c: Any) -> bool:
    if is_array(c):
        return not backend_of(c).is_complex(c.dtype)
    return isinstance(c, numbers.Real)


@dispatch
def is_symmetric(A: ScalarMul):
    return _real_scalar(A.scalar) and is_symmetric(A.op)


@dispatch
def is_psd(A: ScalarMul):
    # Only a Python number can be told positive without reading an array's value.
    c = A.scalar
    return isinstance(c, numbers.Real) and not isinstance(c, bool) and c > 0 and is_psd(A.op)


@dispatch
def eigh(A: ScalarMul):
    w, Q = eigh(A.op)
    return A.scalar * w, Q


@dispatch
def structured_eigh(A: ScalarMul):
    return structured_eigh(A.op)


@dispatch
def monomial(A: ScalarMul):
    return monomial(A.op)


@dispatch
def monomial_eigenvectors(A: ScalarMul):
    return monomial_eigenvectors(A.op)


@dispatch
def _exact_path(A: ScalarMul, operation: object):
    return _exact_path(A.op, operation)
