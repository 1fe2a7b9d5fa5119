"""Fast transforms as exact Monarch matrices: the DFT (four-step FFT) and the Hadamard transform.

They show the expressiveness claim of the Monarch paper concretely: the `n`-point
DFT and the Sylvester-Hadamard matrix are products of two block-diagonal
matrices of small transforms interleaved with stride permutations, so they apply
in `O(n (a + b))` for `n = a b` with batched matmuls, and every Monarch rule
(transpose, inverse, log-determinant) applies to them.
"""

from __future__ import annotations

import math

import numpy as np

from structlin import _checks
from structlin.backends import Backend, Device, DType, get_backend
from structlin.operators.monarch import Monarch

__all__ = ["dft", "hadamard"]

_SCALE = {
    "backward": lambda n: 1.0,
    "ortho": lambda n: 1 / math.sqrt(n),
    "forward": lambda n: 1 / n,
}


def _balanced_split(n: int) -> tuple[int, int]:
    """`(a, b)` with `a b = n` and `a` the largest divisor of `n` not above `sqrt(n)`."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a, n // a


def _resolve(
    backend: Backend | str, dtype: DType, complex_: bool, what: str
) -> tuple[Backend, DType]:
    if isinstance(backend, str):
        backend = get_backend(backend)
    if dtype is None:
        dtype = "complex128" if complex_ else backend.default_float()
    return backend, _checks.float_dtype(dtype, backend, f"{what}: dtype")


def dft(
    n: int,
    *,
    factors: tuple[int, int] | None = None,
    norm: str = "backward",
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> Monarch:
    """The `n`-point DFT matrix `F[f, t] = exp(-2 pi i f t / n)` as a [`Monarch`][structlin.Monarch].

    `F @ x` equals `numpy.fft.fft(x, norm=norm)`. With `n = a b`, write
    `t = t_a b + t_b` and `f = f_b a + f_a`; then
    `F[f, t] = w_b^{f_b t_b} w_n^{f_a t_b} w_a^{f_a t_a}` (`w_m = exp(-2 pi i / m)`),
    which is the four-step FFT:

    1. `P_in = (a, b)`: view `x` as `(a, b)` and transpose, so each `t_b` holds its `a` samples;
    2. `blkdiag1`: `b` blocks `diag(w_n^{f_a t_b}) F_a`, the size-`a` DFTs with the twiddle
       factors folded in;
    3. `P_mid = (b, a)`, then `blkdiag2`: `a` blocks `F_b`;
    4. `P_out = (a, b)` puts the outputs in natural order.

    Cost `O(n (a + b))` per vector in two batched matmuls, `n (a + b)` parameters;
    `a` is the largest divisor of `n` not above `sqrt(n)` unless `factors` is
    given. A prime `n` has only the trivial split `(1, n)`: the result is exact but
    as costly as a dense matrix.

    Args:
        n: Transform size, a positive integer.
        factors: `(a, b)` with `a b = n`, to choose the block sizes.
        norm: `"backward"` (no scaling, like `numpy.fft.fft`), `"ortho"` (`1 / sqrt(n)`,
            unitary) or `"forward"` (`1 / n`).
        dtype: A complex dtype (default complex128).
        backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
        device: Where to put the blocks.

    Raises:
        ValueError: `n < 1`, `factors` do not multiply to `n`, or an unknown `norm`.
        TypeError: a real `dtype`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> x = np.random.default_rng(0).standard_normal(12)
        >>> bool(np.allclose(sl.dft(12) @ x, np.fft.fft(x)))
        True
    """
    n = _checks.size(n, "dft: n")
    if norm not in _SCALE:
        raise ValueError(f"dft: norm must be 'backward', 'ortho' or 'forward', got {norm!r}")
    if factors is None:
        a, b = _balanced_split(n)
    elif isinstance(factors, str) or not hasattr(factors, "__len__") or len(factors) != 2:
        raise ValueError(f"dft: factors must be a pair (a, b) with a * b == n, got {factors!r}")
    else:
        a, b = (_checks.size(f, f"dft: factors[{i}]") for i, f in enumerate(factors))
    if a * b != n:
        raise ValueError(f"dft: factors {factors} must be positive with a * b == n = {n}")
    backend, dtype = _resolve(backend, dtype, complex_=True, what="dft")
    if not backend.is_complex(dtype):
        raise TypeError(f"dft: the DFT is complex, got dtype {dtype}; use complex64 or complex128")
    # The blocks are computed in complex128 on the host, n (a + b) entries.
    _checks.allocation(
        16 * n * (a + b),
        f"dft({n}): the blocks ({b}, {a}, {a}) and ({a}, {b}, {b})",
        "for a transform this large use numpy.fft / torch.fft / jax.numpy.fft, which store no "
        "matrix",
    )

    fa = np.arange(a)
    fb = np.arange(b)
    small_a = np.exp(-2j * np.pi * np.outer(fa, fa) / a)  # F_a[f_a, t_a]
    twiddle = np.exp(-2j * np.pi * np.outer(fb, fa) / n)  # w_n^{f_a t_b}, indexed [t_b, f_a]
    blkdiag1 = twiddle[:, :, None] * small_a[None, :, :]  # (b, a, a)
    blkdiag2 = np.broadcast_to(
        _SCALE[norm](n) * np.exp(-2j * np.pi * np.outer(fb, fb) / b), (a, b, b)
    )
    return Monarch(
        backend.asarray(blkdiag1, dtype=dtype, device=device),
        backend.asarray(np.array(blkdiag2), dtype=dtype, device=device),
        perms=((a, b), (b, a), (a, b)),
    )


def hadamard(
    n: int,
    *,
    normalized: bool = False,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> Monarch:
    """The `n x n` Sylvester-Hadamard matrix (`scipy.linalg.hadamard(n)`) as a [`Monarch`][structlin.Monarch].

    For `n = a b` (powers of two), `H_n = H_a ⊗ H_b = (H_a ⊗ I_b)(I_a ⊗ H_b)`, and
    `H_a ⊗ I_b = P^T (I_b ⊗ H_a) P` with the stride permutation `P = (a, b)`: this
    is exactly the default Monarch layout with `blkdiag1` = `a` blocks `H_b` and
    `blkdiag2` = `b` blocks `H_a`. `O(n (a + b))` per vector, `a b = n`,
    `a = 2^floor(log2(n) / 2)`.

    Args:
        n: A power of two.
        normalized: Scale by `1 / sqrt(n)`, making the matrix orthogonal (and its own inverse).
        dtype: Defaults to the backend's default float.
        backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
        device: Where to put the blocks.

    Raises:
        ValueError: `n` is not a power of two.

    Examples:
        >>> import numpy as np, scipy.linalg, structlin as sl
        >>> bool(np.array_equal(sl.hadamard(8).to_dense(), scipy.linalg.hadamard(8)))
        True
    """
    n = _checks.size(n, "hadamard: n")
    if n & (n - 1):
        raise ValueError(f"hadamard: n must be a power of two, got {n!r}")
    backend, dtype = _resolve(backend, dtype, complex_=False, what="hadamard")
    m = n.bit_length() - 1
    a, b = 2 ** (m // 2), 2 ** (m - m // 2)
    _checks.allocation(
        8 * n * (a + b),
        f"hadamard({n}): the blocks ({a}, {b}, {b}) and ({b}, {a}, {a})",
        "for a transform this large apply a fast Walsh-Hadamard transform, which stores no matrix",
    )
    scale = 1 / math.sqrt(n) if normalized else 1.0
    blkdiag1 = np.broadcast_to(_sylvester(b), (a, b, b))
    blkdiag2 = np.broadcast_to(scale * _sylvester(a), (b, a, a))
    return Monarch(
        backend.asarray(np.array(blkdiag1), dtype=dtype, device=device),
        backend.asarray(np.array(blkdiag2), dtype=dtype, device=device),
    )


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h
