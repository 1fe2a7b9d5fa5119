"""`Permutation`: a permutation matrix stored as an index array."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from structlin import _checks
from structlin._checks import dense_backend
from structlin._convert import convert_array, static_dtype, static_meta
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, Device, DType, backend_of, get_backend, is_array
from structlin.expressions.product import Product
from structlin.expressions.scalar_mul import ScalarMul
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator
from structlin.operators.diagonal import Diagonal
from structlin.operators.identity import Identity


class Permutation(LinearOperator):
    """The permutation matrix `P` with `P @ x == x[perm]`, i.e. `P[i, perm[i]] = 1`.

    Applying it is a gather, `O(nk)`; `P^T = P^{-1}` is the permutation
    `argsort(perm)`; `det P = (-1)^(n - #cycles)`, found in `O(n log n)` by
    pointer jumping (so it also works under `jax.jit`). Products of
    permutations are permutations.

    Args:
        perm: Integer array of shape `(n,)` holding each of `0..n-1` once.
        dtype: Optional floating-point or complex dtype of the matrix entries (for
            `to_dense`); by default it adopts the dtype of what it acts on.

    The indices are copied (and stored as the backend's 64-bit index dtype; JAX's
    default `int32` without x64): unlike the other operators, which hold the
    caller's arrays as they are, a permutation must stay the permutation it was
    checked to be, whatever the caller later writes into `perm`.

    Raises:
        TypeError: `perm` is not an integer array (bool and floating-point are
            refused), or `dtype` is not floating point.
        ValueError: `perm` is not 1-D or not a permutation of `0..n-1` (checked
            whenever the values are concrete, i.e. everywhere but inside a JAX trace).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> P = sl.Permutation(np.array([2, 0, 1]))
        >>> P @ np.array([10.0, 20.0, 30.0])
        array([30., 10., 20.])
    """

    _children = ("perm",)
    _static = ("_dtype",)

    perm: Array

    def __init__(self, perm: Array, dtype: DType = None):
        if not is_array(perm):
            raise TypeError(
                f"Permutation indices must be an integer array, got {type(perm).__name__}; "
                "use numpy.asarray(perm)"
            )
        perm = _checks.plain_array(perm, "Permutation indices")
        backend = backend_of(perm)
        if not backend.is_integer(perm.dtype):
            raise TypeError(
                f"Permutation indices must have an integer dtype, got {perm.dtype}; pass the "
                "indices 0..n-1 as integers (e.g. numpy.argsort(keys) or perm.astype(numpy.int64))"
            )
        if len(perm.shape) != 1:
            raise ValueError(
                f"Permutation indices must be 1-D, got shape {_checks.shape_str(perm.shape)}"
            )
        dtype = _checks.float_dtype(dtype, backend, "Permutation dtype")
        # Own the indices (a copy, in the index dtype every backend's gather takes), so
        # that the caller's later writes cannot break the check below.
        index_dtype = backend.index_dtype()
        perm = (
            backend.copy(perm) if perm.dtype == index_dtype else backend.astype(perm, index_dtype)
        )
        if backend.is_concrete(perm):
            _check_permutation(backend.to_numpy(perm))
        self._set(perm=perm, _dtype=dtype)

    @staticmethod
    def stride(rows: int, cols: int, dtype: DType = None) -> StridePermutation:
        """The reshape-transpose permutation: `P @ x == x.reshape(rows, cols).T.reshape(-1)`.

        Used between the block-diagonal factors of Monarch matrices. It is
        value-free (applied by a reshape and a transpose, no index array).
        """
        return StridePermutation(rows, cols, dtype)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.perm.shape[0]
        return (n, n)

    @property
    def dtype(self) -> DType:
        return self._dtype


def _check_permutation(perm: np.ndarray) -> None:
    n = perm.shape[0]
    counts = np.bincount(perm[(perm >= 0) & (perm < n)], minlength=n)
    if counts.sum() != n or (counts != 1).any():
        bad = perm[(perm < 0) | (perm >= n)]
        missing = np.flatnonzero(counts == 0)
        raise ValueError(
            f"Permutation indices of length {n} are not a permutation of 0..{n - 1}: "
            f"out of range {bad[:10].tolist()}, missing {missing[:10].tolist()}"
        )


def _wrap(perm: Array, dtype: DType) -> Permutation:
    op = object.__new__(Permutation)
    op._set(perm=perm, _dtype=dtype)
    return op


def _backend(A: Permutation) -> Backend:
    return dense_backend(A)[0]


@dispatch
def matmat(A: Permutation, X: object):
    return A.backend.take(X, A.perm, 0)


@dispatch
def rmatmat(X: object, A: Permutation):
    return A.backend.take(X, A.backend.argsort(A.perm), len(X.shape) - 1)


@dispatch
def to_dense(A: Permutation):
    backend, dtype, device = dense_backend(A)
    return backend.take(backend.eye(A.shape[0], dtype, device), A.perm, 0)


@dispatch
def transpose(A: Permutation):
    return _wrap(_backend(A).argsort(A.perm), A.dtype)


@dispatch
def adjoint(A: Permutation):
    return transpose(A)


@dispatch
def inv(A: Permutation):
    return transpose(A)


@dispatch
def pinv(A: Permutation):
    return transpose(A)  # orthogonal: A^+ = A^T = A^{-1}


@dispatch
def solve(A: Permutation, B: object):
    return matmat(transpose(A), B)


@dispatch
def slogdet(A: Permutation):
    backend, dtype, device = dense_backend(A)
    n = A.shape[0]
    perm = A.perm
    index = backend.arange(n, device)
    labels, jump = index, perm
    # After j rounds labels[i] is the least index among the first 2^j successors
    # of i, so ceil(log2 n) rounds give each cycle's least member.
    for _ in range(max(1, math.ceil(math.log2(max(n, 1))))):
        labels = backend.minimum(labels, backend.take(labels, jump, 0))
        jump = backend.take(jump, jump, 0)
    cycles = backend.sum(backend.astype(labels == index, backend.index_dtype()))
    parity = (n - cycles) % 2
    zero = backend.zeros((), dtype, device)
    return backend.astype(1 - 2 * parity, dtype), backend.abs(zero)


@dispatch
def diag(A: Permutation):
    backend, dtype, device = dense_backend(A)
    return backend.astype(A.perm == backend.arange(A.shape[0], device), dtype)


@dispatch
def compose(A: Permutation, B: Permutation):
    backend = _backend(A)
    return _wrap(backend.take(B.perm, A.perm, 0), _checks.common_dtype((A, B), backend))


@dispatch
def to(A: Permutation, dtype: object, device: object, backend: object):
    perm = convert_array(A.perm, None, device, backend)
    return _wrap(perm, static_dtype(dtype, A.dtype, backend_of(perm), A.backend))


class StridePermutation(Permutation):
    """`P @ x == x.reshape(rows, cols).T.reshape(-1)`: a transpose of the vector viewed as a matrix.

    Value-free, like a generic [`Identity`][structlin.Identity]: it holds no
    arrays and is applied by a reshape and a transpose (`O(nk)`, one copy).
    Its transpose and inverse is `StridePermutation(cols, rows)`.
    Build it with [`Permutation.stride`][structlin.Permutation.stride].

    Examples:
        >>> import numpy as np, structlin as sl
        >>> P = sl.Permutation.stride(2, 3)
        >>> type(P).__name__
        'StridePermutation'
        >>> P @ np.arange(6.0)  # np.arange(6.0).reshape(2, 3).T.reshape(-1)
        array([0., 3., 1., 4., 2., 5.])
    """

    _children = ()
    _static = ("rows", "cols", "_dtype", "_backend", "_device")

    def __init__(
        self,
        rows: int,
        cols: int,
        dtype: DType = None,
        backend: Backend | None = None,
        device: Device = None,
    ):
        rows = _checks.size(rows, "StridePermutation rows")
        cols = _checks.size(cols, "StridePermutation cols")
        dtype, backend, device = static_meta("StridePermutation", dtype, backend, device)
        self._set(rows=rows, cols=cols, _dtype=dtype, _backend=backend, _device=device)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.rows * self.cols
        return (n, n)

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @property
    def device(self) -> Device:
        return self._device

    @property
    def perm(self) -> Array:
        """The index array, built in the operator's backend (NumPy if value-free)."""
        backend = _backend(self)
        index = backend.arange(self.rows * self.cols, self.device)
        return backend.reshape(
            backend.swap_last(backend.reshape(index, (self.rows, self.cols))), (-1,)
        )


def stride_permute(X: Any, rows: int, cols: int, backend: Backend, axis: int = 0) -> Any:
    """The stride permutation `P = Permutation.stride(rows, cols)` applied along one axis of `X`.

    `axis=0`: `P X` for `X` of shape `(rows cols, k)`; `axis=-1`: `P` applied to
    every row of `X` of shape `(..., rows cols)`, which is `X P^T`, so `X P` is
    `stride_permute(X, cols, rows, backend, axis=-1)`. The axis is viewed as
    `(rows, cols)` and transposed: one copy. The one implementation of stride
    permutations, for `StridePermutation` and the Monarch factors.
    """
    n = rows * cols
    if axis == 0:
        k = X.shape[1]
        Y = backend.permute_dims(backend.reshape(X, (rows, cols, k)), (1, 0, 2))
        return backend.reshape(Y, (n, k))
    lead = tuple(X.shape[:-1])
    Y = backend.swap_last(backend.reshape(X, (*lead, rows, cols)))
    return backend.reshape(Y, (*lead, n))


@dispatch
def matmat(A: StridePermutation, X: object):
    backend = backend_of(X)
    if A.rows == 1 or A.cols == 1:  # the identity: a copy, not a view of X
        return backend.copy(X)
    return stride_permute(X, A.rows, A.cols, backend)


@dispatch
def rmatmat(X: object, A: StridePermutation):
    backend = backend_of(X)
    if A.rows == 1 or A.cols == 1:
        return backend.copy(X)
    return stride_permute(X, A.cols, A.rows, backend, axis=-1)  # X P: P^T on every row


@dispatch
def transpose(A: StridePermutation):
    return StridePermutation(A.cols, A.rows, A.dtype, A.backend, A.device)


@dispatch
def compose(A: StridePermutation, B: StridePermutation):
    if A.rows == B.cols and A.cols == B.rows:
        return Identity(A.shape[0], _checks.common_dtype((A, B), A.backend), A.backend, A.device)
    return _wrap(_backend(A).take(B.perm, A.perm, 0), _checks.common_dtype((A, B), _backend(A)))


@dispatch
def to(A: StridePermutation, dtype: object, device: object, backend: object):
    backend = backend if backend is not None else A.backend
    return StridePermutation(
        A.rows,
        A.cols,
        static_dtype(dtype, A.dtype, backend, A.backend),
        backend,
        None if backend is None else device if device is not None else A.device,
    )


@dispatch
def components(A: Permutation):
    return (None,)  # integer indices, not learnable


@dispatch
def components(A: StridePermutation):
    return ()


# -- the eigendecomposition of a symmetric permutation ------------------------------------------
# A permutation matrix is orthogonal, and symmetric exactly when it is its own inverse (an
# involution, perm[perm[i]] == i): then it is a product of disjoint swaps (i j) and fixed
# points. Each swap has the eigenvectors (e_i + e_j)/sqrt 2 (eigenvalue 1) and
# (e_i - e_j)/sqrt 2 (eigenvalue -1), each fixed point e_i (eigenvalue 1): the eigenvector
# matrix is Q = diag(a) + P diag(b), two entries per column, applied in O(n). Any other
# permutation is unitary but not Hermitian (its eigenvalues are roots of unity, off the
# real line), so `eigh`, which takes its argument as Hermitian, refuses it.


def _involution(A: Permutation, what: str) -> None:
    """Raise `ValueError` for a permutation that is not symmetric (checked where the indices
    are concrete, i.e. everywhere but inside a JAX trace)."""
    backend = _backend(A)
    if not backend.is_concrete(A.perm):
        return
    perm = backend.to_numpy(A.perm)
    bad = np.flatnonzero(perm[perm] != np.arange(perm.shape[0]))
    if bad.size:
        raise ValueError(
            f"{what}: a Permutation is symmetric (Hermitian) only when it is its own inverse, "
            f"perm[perm[i]] == i, which fails at i = {bad[:10].tolist()}; a general "
            "permutation is unitary with eigenvalues on the unit circle: use "
            "numpy.linalg.eig(P.to_dense()) for those, or symmetrise it (P + P.T)"
        )


@dispatch
def eigh(A: Permutation):
    """`(w, Q)` of a symmetric permutation (an involution): `w` is `-1` at the larger index of
    each swapped pair and `1` elsewhere, `Q = diag(a) + P diag(b)` with the pairs' vectors
    `(e_i +- e_j)/sqrt 2`; `O(n)` to build and to apply, not sorted.

    Raises:
        ValueError: the permutation is not its own inverse (not Hermitian; unchecked
            inside `jax.jit`, where the indices have no values).
    """
    _involution(A, "eigh")
    backend, dtype, device = dense_backend(A)
    index = backend.arange(A.shape[0], device)
    zeros = backend.zeros((A.shape[0],), dtype, device)
    half = zeros + math.sqrt(0.5)
    up, down, fixed = A.perm > index, A.perm < index, A.perm == index
    # Column i: a_i e_i + b_i e_perm[i]; (e_i + e_j)/sqrt 2 at the smaller index i of a
    # pair, (e_j - e_i)/sqrt 2 at the larger one, e_i at a fixed point.
    a = backend.where(up, half, backend.where(down, -half, zeros + 1))
    b = backend.where(fixed, zeros, half)
    w = backend.where(down, zeros - 1, zeros + 1)
    vectors = Sum(Diagonal(a), Product(_wrap(A.perm, dtype), Diagonal(b)))
    vectors._set(_disjoint_terms=True)  # b is zero where P has its diagonal: see abs_squared
    return backend.real(w), vectors


@dispatch
def structured_eigh(A: Permutation):
    return True


@dispatch
def abs_squared(A: Permutation):
    return A  # entries 0 and 1


@dispatch
def monomial(A: Permutation):
    return True


@dispatch
def matrix_function(A: Permutation, f: object):
    """`f(P) = f(1) (I + P)/2 + f(-1) (I - P)/2` of a symmetric permutation (an involution:
    `(I +- P)/2` are the projections on its eigenvalues `+-1`), `O(1)`; its `diag`, `trace`
    and products stay `O(n)`.

    Raises:
        ValueError: the permutation is not its own inverse (as `eigh`).
    """
    _involution(A, f.name)
    numpy = get_backend("numpy")
    plus, minus = (float(v) for v in numpy.to_numpy(f(numpy, numpy.asarray([1.0, -1.0]))))
    identity = Identity(A.shape[0], A.dtype, A.backend, A.device)
    return Sum(ScalarMul((plus + minus) / 2, identity), ScalarMul((plus - minus) / 2, A))
