"""Circulant, Toeplitz and convolution operators, applied through Monarch DFTs.

A circulant matrix is diagonalised by the DFT, `C = F^{-1} diag(F c) F`, with `c`
its first column; a Toeplitz matrix (and so a linear convolution, in any mode) is
the top-left block of a circulant large enough that no entry wraps around. Every
product here is three Monarch DFTs of [`structlin.dft`][structlin.dft] (the
kernel's, the input's and the inverse one: batched matmuls, no FFT library), so
the operators run on every backend, under `jax.jit` and `torch.compile`, with
gradients in the kernel and the input.

For a length-`L` DFT split `L = a b`, each product costs `O(L (a + b))` per column;
the embedding length of a Toeplitz matrix is chosen with balanced factors, so it
is `O(L^{1.5})` whatever the sizes. A circulant's size is its own: a prime `n`
has only the split `(1, n)` and costs as much as a dense product (exact still).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, backend_of
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.operator import LinearOperator
from structlin.operators import monarch
from structlin.transforms import dft

__all__ = ["Circulant", "Convolution", "Toeplitz", "circulant", "convolution", "toeplitz"]

# The Monarch DFTs of the products, by (length, backend, complex dtype, device): built
# from NumPy constants on first use and shared by every operator (not those made while
# jax.jit traces, which belong to that trace).
_CACHE_SIZE = 32
_DFTS: dict[tuple[int, str, str, str], monarch.GeneralizedMonarch] = {}


def _complex_dtype(backend: Backend, dtype: Any) -> Any:
    name = str(dtype).removeprefix("torch.")
    wide = {"float64": "complex128", "complex128": "complex128"}.get(name, "complex64")
    return backend.canonical_dtype(wide)


def _fourier(n: int, backend: Backend, dtype: Any, device: Any) -> monarch.GeneralizedMonarch:
    """The (cached) `n`-point Monarch DFT in the complex dtype of `dtype`."""
    cdtype = _complex_dtype(backend, dtype)
    key = (n, backend.name, str(cdtype), str(device))
    found = _DFTS.get(key)
    if found is None:
        found = dft(n, dtype=cdtype, backend=backend, device=device)
        if not backend.is_concrete(found.blocks[0]):
            return found  # made inside a trace (jax.jit): a constant of that trace only
        while len(_DFTS) >= _CACHE_SIZE:
            del _DFTS[next(iter(_DFTS))]
        _DFTS[key] = found
    return found


def good_length(need: int) -> int:
    """The smallest `L >= need` whose balanced split `L = a b` has `a + b <= 3 sqrt(L)`.

    The DFT length of a Toeplitz matrix's circulant embedding: close to `need`, and
    never a prime (whose Monarch DFT would cost a dense product).

    Examples:
        >>> from structlin.operators.circulant import good_length
        >>> good_length(64), good_length(97), good_length(1009)
        (64, 98, 1012)
    """
    L = _checks.size(need, "good_length: need")
    while True:
        a = math.isqrt(L)
        while L % a:
            a -= 1
        if a + L // a <= 3 * math.sqrt(L):
            return L
        L += 1


def _spectrum(kernel: Array, F: monarch.GeneralizedMonarch, backend: Backend) -> Array:
    """`F c` as a column `(n, 1)` in `F`'s complex dtype."""
    return monarch.apply(F, backend.astype(kernel, F.dtype)[:, None])


def _inverse_dft(F: monarch.GeneralizedMonarch, Y: Array, backend: Backend) -> Array:
    """`F^{-1} Y = conj(F conj(Y)) / n`."""
    return backend.conj(monarch.apply(F, backend.conj(Y))) / F.shape[0]


def _circular(kernel: Array, X: Array, real: bool) -> Array:
    """`C(kernel) @ X` (`X` of `kernel`'s length rows): `F^{-1} (F c ⊙ F X)`."""
    backend = backend_of(X)
    dtype = backend.result_type(kernel.dtype, X.dtype)
    F = _fourier(kernel.shape[0], backend, dtype, backend.device(X))
    Z = monarch.apply(F, backend.astype(X, F.dtype))
    Y = _inverse_dft(F, _spectrum(kernel, F, backend) * Z, backend)
    return backend.astype(backend.real(Y), dtype) if real else Y


def _is_real(backend: Backend, *arrays: Array) -> bool:
    return not any(backend.is_complex(a.dtype) for a in arrays)


def _index(backend: Backend, like: Array, index: np.ndarray) -> Array:
    return backend.asarray(index, device=backend.device(like))


def _reversed_lags(kernel: Array, backend: Backend) -> Array:
    """`c'[i] = c[-i mod n]`: the kernel of the transposed circulant."""
    n = kernel.shape[0]
    return backend.take(kernel, _index(backend, kernel, (-np.arange(n)) % n), 0)


def _constant(value: Array, n: int, backend: Backend, like: Array) -> Array:
    """A length-`n` array of the scalar `value`."""
    return backend.zeros((n,), like.dtype, backend.device(like)) + value


def _diagonal_means(W: Array, lags: np.ndarray, what: str) -> Array:
    """For each lag `d` of `lags`, the mean of `W[i, j]` over `i - j = d` (wrapped mod `n` when
    `what == "circulant"`)."""
    backend = backend_of(W)
    m, n = W.shape
    if what == "circulant":
        i = (lags[:, None] + np.arange(n)[None, :]) % m
        j = np.broadcast_to(np.arange(n), i.shape)
        valid = np.ones(i.shape, bool)
    else:
        j = np.arange(min(m, n))[None, :] + np.maximum(-lags, 0)[:, None]
        i = j + lags[:, None]
        valid = (i < m) & (j < n)
    flat = np.where(valid, i * n + j, 0)
    taken = backend.reshape(
        backend.take(backend.reshape(W, (-1,)), _index(backend, W, flat.reshape(-1)), 0),
        flat.shape,
    )
    weights = valid / valid.sum(axis=1, keepdims=True)
    return backend.sum(taken * backend.asarray(weights, W.dtype, backend.device(W)), axis=1)


# -- Circulant -------------------------------------------------------------------------------


class Circulant(LinearOperator):
    """The `n x n` circulant matrix `C[i, j] = c[(i - j) mod n]` of a kernel `c` (its first column).

    `C @ x` is the circular convolution `c ⊛ x`, computed as `F^{-1} (F c ⊙ F x)` with
    the Monarch DFT `F = `[`dft`][structlin.dft]`(n)`: three DFTs, `O(n (a + b))` per
    column for `n = a b` (a prime `n` has only the split `(1, n)`: exact, at the cost
    of a dense product). The rules are exact and stay circulant:

    - `C^T` is the circulant of `c[-i mod n]` (the circular correlation), `C^H` its
      conjugate;
    - `C^{-1}` is the circulant of `F^{-1} (1 / F c)` and `solve(C, B) = F^{-1} (F B / F c)`
      (division in the Fourier domain): a zero frequency of `F c` raises
      [`SingularOperatorError`][structlin.SingularOperatorError];
    - `log|det C| = sum_f log|(F c)_f|` (the eigenvalues are `F c`);
    - `diag(C) = c[0]`, `trace(C) = n c[0]`; `C_1 C_2`, `C_1 + C_2` and `s C` are
      circulants;
    - [`project`][structlin.project]`(W, Circulant)` averages `W`'s wrapped diagonals.

    Args:
        kernel: Floating-point or complex array of shape `(n,)`, the first column.

    Raises:
        TypeError: `kernel` is not a floating-point array.
        ValueError: `kernel` is not 1-D.

    Examples:
        >>> import numpy as np, scipy.linalg, structlin as sl
        >>> c = np.array([2.0, 1.0, 0.0, 0.5])
        >>> C = sl.Circulant(c)
        >>> bool(np.allclose(C.to_dense(), scipy.linalg.circulant(c)))
        True
        >>> bool(np.allclose(C.inv() @ (C @ np.ones(4)), 1))
        True
    """

    _children = ("kernel",)

    kernel: Array

    def __init__(self, kernel: Array):
        kernel, _ = _checks.float_array(kernel, "Circulant kernel", ndim=1)
        self._set(kernel=kernel)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.kernel.shape[0]
        return (n, n)


def circulant(kernel: Array) -> Circulant:
    """The circulant matrix of `kernel` (its first column), `scipy.linalg.circulant(kernel)`.

    See [`Circulant`][structlin.Circulant].

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.circulant(np.array([1.0, 2.0, 3.0])).to_dense()
        array([[1., 3., 2.],
               [2., 1., 3.],
               [3., 2., 1.]])
    """
    return Circulant(kernel)


@dispatch
def matmat(A: Circulant, X: object):
    backend = backend_of(X)
    return _circular(A.kernel, X, _is_real(backend, A.kernel, X))


@dispatch
def transpose(A: Circulant):
    return Circulant(_reversed_lags(A.kernel, A.backend))


@dispatch
def adjoint(A: Circulant):
    backend = A.backend
    return Circulant(backend.conj(_reversed_lags(A.kernel, backend)))


def _eigenvalues(A: Circulant) -> tuple[Array, monarch.GeneralizedMonarch]:
    backend = A.backend
    F = _fourier(A.shape[0], backend, A.dtype, A.device)
    return _spectrum(A.kernel, F, backend), F


def _check_invertible(A: Circulant, lam: Array) -> None:
    """`SingularOperatorError` for a (numerically) zero frequency, where values can be read."""
    backend = A.backend
    if not backend.is_concrete(lam):
        return  # under jax.jit: a zero frequency gives inf / nan, as a dense solve would
    mag = np.abs(backend.to_numpy(lam)).ravel()
    eps = np.finfo(np.float32 if "64" not in str(lam.dtype) else np.float64).eps
    bad = np.flatnonzero(mag <= A.shape[0] * eps * max(mag.max(), np.finfo(float).tiny))
    if bad.size:
        raise SingularOperatorError(
            f"Circulant of size {A.shape[0]} is singular: the DFT of its kernel (its "
            f"eigenvalues) vanishes at frequenc{'y' if bad.size == 1 else 'ies'} "
            f"{bad[:10].tolist()} (|F c| = {mag[bad[0]]:.3g} of max {mag.max():.3g}); a "
            "circulant is invertible exactly when no DFT coefficient of its kernel is zero"
        )


@dispatch
def inv(A: Circulant):
    backend = A.backend
    lam, F = _eigenvalues(A)
    _check_invertible(A, lam)
    ones = backend.zeros(lam.shape, lam.dtype, backend.device(lam)) + 1
    kernel = _inverse_dft(F, ones / lam, backend)[:, 0]
    if _is_real(backend, A.kernel):
        kernel = backend.astype(backend.real(kernel), A.dtype)
    return Circulant(kernel)


@dispatch
def solve(A: Circulant, B: object):
    backend = backend_of(B)
    lam, F = _eigenvalues(A)
    _check_invertible(A, lam)
    Y = _inverse_dft(F, monarch.apply(F, backend.astype(B, F.dtype)) / lam, backend)
    if _is_real(backend, A.kernel, B):
        return backend.astype(backend.real(Y), backend.result_type(A.dtype, B.dtype))
    return Y


@dispatch
def slogdet(A: Circulant):
    backend = A.backend
    lam = _eigenvalues(A)[0][:, 0]
    mag = backend.abs(lam)
    logabsdet = backend.sum(backend.log(mag))
    sign = backend.prod(lam / backend.astype(mag, lam.dtype))
    if _is_real(backend, A.kernel):  # conjugate pairs: the product is real, +-1
        sign = backend.real(sign)
        sign = backend.astype(sign / backend.abs(sign), A.dtype)
        logabsdet = backend.astype(logabsdet, A.dtype)
    return sign, logabsdet


@dispatch
def diag(A: Circulant):
    return _constant(A.kernel[0], A.shape[0], A.backend, A.kernel)


@dispatch
def trace(A: Circulant):
    return A.shape[0] * A.kernel[0]


@dispatch
def compose(A: Circulant, B: Circulant):
    """Circulants commute and compose to the circulant of `A c_B` (its first column)."""
    if A.shape != B.shape:
        from structlin.expressions.product import Product

        return Product(A, B)
    return Circulant(matmat(A, B.kernel[:, None])[:, 0])


@dispatch
def add(A: Circulant, B: Circulant):
    if A.shape != B.shape:
        from structlin.expressions.sum import Sum

        return Sum(A, B)
    return Circulant(A.kernel + B.kernel)


@dispatch
def scale(c: object, A: Circulant):
    return Circulant(c * A.kernel)


@dispatch
def components(A: Circulant):
    # One kernel, shared by the n outputs, each reading n inputs: the scale of an n x n matrix.
    n = A.shape[0]
    return (Component(1, n, n),)


@dispatch
def project(W: object, structure: type[Circulant]):
    """The Frobenius-nearest circulant: the mean of each wrapped diagonal. Optimal.

    The circulants are a linear subspace whose basis, the `n` cyclic shifts, has
    disjoint supports (the wrapped diagonals `i - j = d mod n`), so the orthogonal
    projection onto it sets `c[d]` to the mean of `W` over diagonal `d`.
    """
    m, n = W.shape
    if m != n:
        raise ValueError(f"project(W, Circulant): W must be square, got shape {(m, n)}")
    return Circulant(_diagonal_means(W, np.arange(n), "circulant"))


# -- Toeplitz --------------------------------------------------------------------------------


def _embedding(column: Array, row: Array, backend: Backend) -> tuple[Array, int]:
    """The kernel of length `L >= m + n - 1` whose circulant has `T(column, row)` top left."""
    m, n = column.shape[0], row.shape[0]
    L = good_length(m + n - 1)
    gap = backend.zeros((L - m - n + 1,), column.dtype, backend.device(column))
    back = backend.take(row, _index(backend, row, np.arange(n - 1, 0, -1)), 0)
    return backend.concatenate([column, gap, backend.astype(back, column.dtype)]), L


def _through_circulant(kernel: Array, L: int, X: Array, m: int, real: bool) -> Array:
    backend = backend_of(X)
    Y = _circular(kernel, backend.pad_to(X, 0, L), real)
    return Y[:m]


class Toeplitz(LinearOperator):
    """The `m x n` Toeplitz matrix `T[i, j] = c[i - j]` (`i >= j`), `r[j - i]` (`j > i`).

    As `scipy.linalg.toeplitz(c, r)`: `column` (`c`, length `m`) is the first column,
    `row` (`r`, length `n`) the first row, whose first entry is ignored (`T[0, 0] = c[0]`).
    `T` is the top-left block of the circulant of the kernel
    `[c, 0, ..., 0, r[n-1], ..., r[1]]` of length `L >= m + n - 1`, so
    `T x = (F^{-1} (F k ⊙ F [x; 0]))[:m]` with three Monarch DFTs of length `L`
    (the smallest length with balanced factors, see
    `structlin.operators.circulant.good_length`): `O(L^{1.5})` per column,
    never a dense product.

    `T^T` is the Toeplitz matrix of `(r, c)` (with `r[0] = c[0]`), `T^H` its
    conjugate; `diag`, `trace` are `c[0]`, `min(m, n) c[0]`;
    [`project`][structlin.project]`(W, Toeplitz)` averages `W`'s diagonals. The inverse
    of a Toeplitz matrix is not Toeplitz: `inv`, `solve` and `slogdet` factorise the
    dense matrix.

    Args:
        column: Floating-point or complex array `(m,)`.
        row: Array `(n,)` of the same backend and dtype.

    Examples:
        >>> import numpy as np, scipy.linalg, structlin as sl
        >>> c, r = np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 5.0, 6.0])
        >>> bool(np.allclose(sl.Toeplitz(c, r).to_dense(), scipy.linalg.toeplitz(c, r)))
        True
    """

    _children = ("column", "row")

    column: Array
    row: Array

    def __init__(self, column: Array, row: Array):
        column, _ = _checks.float_array(column, "Toeplitz column", ndim=1)
        row, _ = _checks.float_array(row, "Toeplitz row", ndim=1)
        _checks.same_backend((column, row), "Toeplitz")
        if column.dtype != row.dtype:
            raise TypeError(
                f"Toeplitz column and row have different dtypes {column.dtype} and {row.dtype}; "
                "cast them to one dtype first"
            )
        self._set(column=column, row=row)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.column.shape[0], self.row.shape[0])


def toeplitz(c: Array, r: Array | None = None) -> Toeplitz:
    """The Toeplitz matrix of first column `c` and first row `r`, `scipy.linalg.toeplitz(c, r)`.

    Without `r`, `r = conj(c)` (a Hermitian matrix), as in SciPy. See
    [`Toeplitz`][structlin.Toeplitz].

    Examples:
        >>> import numpy as np, structlin as sl
        >>> sl.toeplitz(np.array([1.0, 2.0, 3.0])).to_dense()
        array([[1., 2., 3.],
               [2., 1., 2.],
               [3., 2., 1.]])
    """
    if r is None:
        c, backend = _checks.float_array(c, "toeplitz: c", ndim=1)
        r = backend.conj(c)
    return Toeplitz(c, r)


@dispatch
def matmat(A: Toeplitz, X: object):
    backend = backend_of(X)
    kernel, L = _embedding(A.column, A.row, backend)
    return _through_circulant(kernel, L, X, A.shape[0], _is_real(backend, A.column, X))


@dispatch
def transpose(A: Toeplitz):
    backend = A.backend
    return Toeplitz(backend.concatenate([A.column[:1], A.row[1:]]), A.column)


@dispatch
def adjoint(A: Toeplitz):
    backend = A.backend
    row = backend.concatenate([A.column[:1], A.row[1:]])
    return Toeplitz(backend.conj(row), backend.conj(A.column))


@dispatch
def diag(A: Toeplitz):
    return _constant(A.column[0], min(A.shape), A.backend, A.column)


@dispatch
def trace(A: Toeplitz):
    return min(A.shape) * A.column[0]


@dispatch
def components(A: Toeplitz):
    # Each output reads n inputs through distinct diagonals: the scale of an m x n matrix.
    m, n = A.shape
    return (Component(1, m, n), Component(1, m, n))


@dispatch
def project(W: object, structure: type[Toeplitz]):
    """The Frobenius-nearest Toeplitz matrix: the mean of each diagonal. Optimal.

    The Toeplitz matrices are the span of the `m + n - 1` diagonal indicator
    matrices, which have disjoint supports, so the orthogonal projection sets each
    diagonal to `W`'s mean over it.
    """
    m, n = W.shape
    backend = backend_of(W)
    means = _diagonal_means(W, np.arange(-(n - 1), m), "toeplitz")  # lags -(n-1) .. m-1
    column = means[n - 1 :]
    row = backend.take(means, _index(backend, W, np.arange(n - 1, -1, -1)), 0)
    return Toeplitz(column, row)


# -- Convolution -----------------------------------------------------------------------------

_MODES = ("full", "same", "valid", "causal")


class Convolution(LinearOperator):
    """The linear convolution with a kernel `k` of `K` taps: `y[i] = sum_j k[i + offset - j] x[j]`.

    An `m x n` Toeplitz matrix parametrised by its `K` taps (a trainable layer holds
    `K` numbers), for `0 <= i < m`, `0 <= j < n`, taps outside `0 .. K-1` zero.
    [`convolution`][structlin.convolution] builds it for NumPy's and SciPy's modes;
    `offset` is the lag of output 0 (`0` for `"full"` and `"causal"`, `(K - 1) // 2`
    for `"same"`, `K - 1` for `"valid"`).

    `T @ x` is the first `m` entries of the circulant convolution of length
    `L >= m + n - 1` (balanced factors, see `structlin.operators.circulant.good_length`)
    of `x` zero-padded and the kernel placed at its lags (no wrap-around: the linear
    convolution exactly), three Monarch DFTs, `O(L^{1.5})` per column. `T^T` is the
    correlation with `k`, again a `Convolution`: of the reversed kernel, `n x m`,
    offset `K - 1 - offset`; `T^H` conjugates it. `diag` and `trace` are `k[offset]`
    and `min(m, n) k[offset]`. As for [`Toeplitz`][structlin.Toeplitz], `inv`, `solve`
    and `slogdet` factorise the dense matrix.

    Args:
        kernel: Floating-point or complex array `(K,)`.
        shape: `(m, n)`.
        offset: The lag of output 0, an integer (negative values allowed).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> k, x = np.array([1.0, 2.0, 3.0]), np.arange(5.0)
        >>> bool(np.allclose(sl.Convolution(k, (7, 5), 0) @ x, np.convolve(k, x)))
        True
    """

    _children = ("kernel",)
    _static = ("_shape", "offset")

    kernel: Array
    offset: int

    def __init__(self, kernel: Array, shape: tuple[int, int], offset: int = 0):
        kernel, _ = _checks.float_array(kernel, "Convolution kernel", ndim=1)
        if isinstance(shape, str) or not hasattr(shape, "__len__") or len(shape) != 2:
            raise ValueError(f"Convolution shape must be a pair (m, n), got {shape!r}")
        shape = (
            _checks.size(shape[0], "Convolution shape[0]"),
            _checks.size(shape[1], "Convolution shape[1]"),
        )
        offset = _checks.size(offset, "Convolution offset", minimum=None)
        self._set(kernel=kernel, _shape=shape, offset=offset)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape


def convolution(kernel: Array, n: int, mode: str = "full") -> Convolution:
    """The linear convolution `x -> kernel * x` of length-`n` inputs, as a [`Convolution`][structlin.Convolution].

    With `K` taps, the modes of `numpy.convolve` and `scipy.signal.convolve(x, kernel, mode)`:

    | mode | output length | `y[i]` |
    | --- | --- | --- |
    | `"full"` | `n + K - 1` | `sum_j k[i - j] x[j]`, every overlap |
    | `"same"` | `n` | the full output from `(K - 1) // 2`, centred |
    | `"valid"` | `n - K + 1` (`n >= K`) | the full output from `K - 1`: complete overlaps |
    | `"causal"` | `n` | the first `n` of the full output: `y[i]` reads `x[: i + 1]` |

    Args:
        kernel: Floating-point or complex array `(K,)`.
        n: The input length.
        mode: `"full"`, `"same"`, `"valid"` or `"causal"`.

    Raises:
        ValueError: an unknown mode, or `"valid"` with `n < K`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> k, x = np.array([1.0, 0.0, -1.0]), np.arange(6.0) ** 2
        >>> (sl.convolution(k, 6, "valid") @ x).round(10).tolist()  # DFTs: rounding errors
        [4.0, 8.0, 12.0, 16.0]
    """
    kernel, _ = _checks.float_array(kernel, "convolution: kernel", ndim=1)
    n = _checks.size(n, "convolution: n")
    K = kernel.shape[0]
    if mode == "full":
        return Convolution(kernel, (n + K - 1, n), 0)
    if mode == "same":
        return Convolution(kernel, (n, n), (K - 1) // 2)
    if mode == "valid":
        if n < K:
            raise ValueError(
                f"convolution: mode 'valid' needs n >= the kernel's {K} taps, got n = {n}"
            )
        return Convolution(kernel, (n - K + 1, n), K - 1)
    if mode == "causal":
        return Convolution(kernel, (n, n), 0)
    raise ValueError(
        f"convolution: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}"
    )


def _conv_embedding(A: Convolution, backend: Backend) -> tuple[Array, int]:
    """The circulant kernel of length `L >= m + n - 1`: `v[(s - offset) mod L] = k[s]` for the
    taps `s` whose lag `s - offset` lies in `-(n-1) .. m-1` (the others never meet `x`)."""
    m, n = A.shape
    K = A.kernel.shape[0]
    L = good_length(m + n - 1)
    u = np.arange(L)
    lag = np.where(u < m, u, u - L)
    tap = lag + A.offset
    valid = (tap >= 0) & (tap < K) & ((u < m) | (u >= L - (n - 1)))
    taken = backend.take(A.kernel, _index(backend, A.kernel, np.where(valid, tap, 0)), 0)
    mask = backend.asarray(valid.astype(float), A.kernel.dtype, backend.device(A.kernel))
    return taken * mask, L


@dispatch
def matmat(A: Convolution, X: object):
    backend = backend_of(X)
    kernel, L = _conv_embedding(A, backend)
    return _through_circulant(kernel, L, X, A.shape[0], _is_real(backend, A.kernel, X))


def _flipped(A: Convolution, kernel: Array) -> Convolution:
    backend = A.backend
    K = kernel.shape[0]
    reversed_ = backend.take(kernel, _index(backend, kernel, np.arange(K - 1, -1, -1)), 0)
    return Convolution(reversed_, (A.shape[1], A.shape[0]), K - 1 - A.offset)


@dispatch
def transpose(A: Convolution):
    return _flipped(A, A.kernel)


@dispatch
def adjoint(A: Convolution):
    return _flipped(A, A.backend.conj(A.kernel))


@dispatch
def diag(A: Convolution):
    backend = A.backend
    K = A.kernel.shape[0]
    if 0 <= A.offset < K:
        return _constant(A.kernel[A.offset], min(A.shape), backend, A.kernel)
    return backend.zeros((min(A.shape),), A.dtype, A.device)


@dispatch
def trace(A: Convolution):
    return A.backend.sum(diag(A))


@dispatch
def components(A: Convolution):
    # Each output reads the K taps, each tap reaching the n inputs: the scale of a K x K matrix.
    K = A.kernel.shape[0]
    return (Component(1, K, K),)
