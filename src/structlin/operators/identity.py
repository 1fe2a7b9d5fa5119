"""`Identity`: the `n x n` identity, stored as nothing."""

from __future__ import annotations

from typing import Any

from structlin import _checks
from structlin._checks import dense_backend
from structlin._convert import static_dtype, static_meta
from structlin._dispatch import dispatch
from structlin.backends import Backend, Device, DType, backend_of, get_backend
from structlin.expressions.product import Product
from structlin.expressions.scalar_mul import ScalarMul
from structlin.operator import LinearOperator


class Identity(LinearOperator):
    """The identity `I_n`.

    With no `dtype`/`backend` it is value-free: it adopts the dtype, backend and
    device of whatever it is applied to or combined with, so `A + sl.Identity(n)`
    works for an operator `A` of any backend. Every rule is exact and `O(1)`
    except `A @ X` and `solve`, which return a copy of `X` (`O(nk)`), and
    `to_dense`, `O(n^2)`.

    Args:
        n: Size, a non-negative integer (an `int` or a NumPy integer; bools and
            floats are refused).
        dtype: Optional floating-point or complex dtype of the entries (any library's,
            or a name); `.dtype` holds it as the backend's dtype object.
        backend: Optional [`Backend`][structlin.backends.Backend] (or its name).
        device: Optional device, only with a `backend`; `.device` holds it as the
            backend's device object (PyTorch: its default device if not given).

    Raises:
        TypeError: `n` is not an integer, or `dtype` is not floating point.
        ValueError: `n < 0`, or a `device` without a `backend`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.Identity(3) @ np.arange(3.0)
        array([0., 1., 2.])
        >>> type(sl.Identity(3) @ sl.Kron(np.eye(3), np.eye(1))).__name__  # absorbed
        'Kron'
    """

    _static = ("n", "_dtype", "_backend", "_device")

    def __init__(
        self,
        n: int,
        dtype: DType = None,
        backend: Backend | str | None = None,
        device: Device = None,
    ):
        n = _checks.size(n, "Identity size n", minimum=0)
        dtype, backend, device = static_meta("Identity", dtype, backend, device)
        self._set(n=n, _dtype=dtype, _backend=backend, _device=device)

    @classmethod
    def like(cls, A: LinearOperator) -> Identity:
        """The identity of `A`'s size (`A.shape[1]`), dtype, backend and device."""
        return cls(A.shape[1], A.dtype, A.backend, A.device)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @property
    def device(self) -> Device:
        return self._device


# `I @ X` is a copy of `X`, not `X` itself: a result never aliases the operand, as
# with `numpy.eye(n) @ X` (`O(nk)`; free for JAX, whose arrays are immutable).
@dispatch
def matmat(A: Identity, X: object):
    return backend_of(X).copy(X)


@dispatch
def rmatmat(X: object, A: Identity):
    return backend_of(X).copy(X)


@dispatch
def to_dense(A: Identity):
    backend, dtype, device = dense_backend(A)
    return backend.eye(A.n, dtype, device)


@dispatch
def transpose(A: Identity):
    return A


@dispatch
def adjoint(A: Identity):
    return A


@dispatch
def inv(A: Identity):
    return A


@dispatch
def pinv(A: Identity):
    return A


@dispatch
def solve(A: Identity, B: object):
    return backend_of(B).copy(B)


@dispatch
def slogdet(A: Identity):
    backend, dtype, device = dense_backend(A)
    zero = backend.zeros((), dtype, device)
    return zero + 1, backend.abs(zero)


@dispatch
def diag(A: Identity):
    backend, dtype, device = dense_backend(A)
    return backend.zeros((A.n,), dtype, device) + 1  # not the diagonal of an n x n eye


@dispatch
def trace(A: Identity):
    backend, dtype, device = dense_backend(A)
    return backend.zeros((), dtype, device) + A.n


@dispatch
def compose(A: Identity, B: LinearOperator):
    return B if _absorbed(A, B) else _product(A, B)


@dispatch
def compose(A: LinearOperator, B: Identity):
    return A if _absorbed(B, A) else _product(A, B)


@dispatch
def compose(A: Identity, B: Identity):
    return B if _absorbed(A, B) else A if _absorbed(B, A) else _product(A, B)


@dispatch
def to(A: Identity, dtype: object, device: object, backend: object):
    backend = backend if backend is not None else A.backend
    return Identity(
        A.n,
        static_dtype(dtype, A.dtype, backend, A.backend),
        backend,
        # A value-free identity has no device (it adopts its operand's).
        None if backend is None else device if device is not None else A.device,
    )


def _absorbed(identity: Identity, other: LinearOperator) -> bool:
    """Whether dropping `identity` from a product with `other` changes nothing, dtype included."""
    if identity.dtype is None:
        return True
    if other.dtype is None:
        return False
    backend = dense_backend(other)[0]
    # Value-free operators may carry another library's dtype (or a name).
    ours, theirs = backend.canonical_dtype(identity.dtype), backend.canonical_dtype(other.dtype)
    return backend.result_type(ours, theirs) == theirs


def _product(*ops: Any) -> LinearOperator:
    return Product(*ops)


@dispatch
def components(A: Identity):
    return ()


@dispatch
def is_symmetric(A: Identity):
    return True


@dispatch
def is_psd(A: Identity):
    return True


@dispatch
def eigh(A: Identity):
    backend, dtype, device = dense_backend(A)
    ones = backend.zeros((A.n,), dtype, device) + 1
    return backend.real(ones), A


@dispatch
def structured_eigh(A: Identity):
    return True


@dispatch
def abs_squared(A: Identity):
    return A


@dispatch
def monomial(A: Identity):
    return True


@dispatch
def monomial_eigenvectors(A: Identity):
    return True


@dispatch
def matrix_function(A: Identity, f: object):
    """`f(1) I`, `O(1)`."""
    numpy = get_backend("numpy")
    value = float(numpy.to_numpy(f(numpy, numpy.asarray([1.0])))[0])
    return ScalarMul(value, A)
