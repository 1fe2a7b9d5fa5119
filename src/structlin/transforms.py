"""Fast transforms as exact Monarch matrices: the DFT (four-step FFT) and the Hadamard transform.

They show the expressiveness claim of the Monarch paper concretely: the `n`-point
DFT and the Sylvester-Hadamard matrix are products of two block-diagonal
matrices of small transforms interleaved with stride permutations, so they apply
in `O(n (a + b))` for `n = a b` with batched matmuls, and every Monarch rule
(transpose, inverse, log-determinant) applies to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from structlin import _checks
from structlin.backends import Backend, Device, DType, get_backend
from structlin.operators.monarch import (
    GeneralizedMonarch,
    Monarch,
    axis_form,
    normalize_perm,
    perm_indices,
)

__all__ = ["dct", "dft", "dst", "hadamard", "idct", "idst"]

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


def _factors(n: int, factors: object, what: str) -> tuple[int, ...]:
    """`factors` checked (at least two positive sizes multiplying to `n`), or the balanced pair."""
    if factors is None:
        return _balanced_split(n)
    if isinstance(factors, str) or not hasattr(factors, "__len__") or len(factors) < 2:
        raise ValueError(
            f"{what}: factors must be a sequence (n_1, ..., n_p) of p >= 2 sizes with "
            f"n_1 * ... * n_p == {n}, got {factors!r}"
        )
    sizes = tuple(_checks.size(f, f"{what}: factors[{i}]") for i, f in enumerate(factors))
    if math.prod(sizes) != n:
        raise ValueError(
            f"{what}: factors {tuple(factors)} must be positive with a product of {n}, "
            f"got {math.prod(sizes)}"
        )
    return sizes


def dft_factors(
    factors: tuple[int, ...], scale: float = 1.0
) -> tuple[list[np.ndarray], list[object]]:
    """The blocks (complex128, NumPy) and permutations of the order-`p` Monarch DFT of size `prod(factors)`.

    Step `j` (0-based) of the mixed-radix Cooley-Tukey FFT takes the DFT over the
    input digit `t_j` (radix `n_j`; `t = t_0 n_1 ... n_{p-1} + ... + t_{p-1}`) and
    writes the output digit `f_j` (`f = f_0 + n_0 f_1 + ... + n_0 ... n_{p-2} f_{p-1}`).
    Before it a stride permutation `(n_j, n / n_j)` moves the axis `t_j` last; its
    blocks are `diag_{f_j}(w_{M_j}^{f_j T}) F_{n_j}`, with `T` the value of the digits
    `t_{j+1} .. t_{p-1}` not yet summed and `M_j = n_j ... n_{p-1}` (the twiddle factors
    of the digit-reversed FFT, folded into the block). The last permutation reverses
    the output digits. `scale` multiplies the last factor.
    """
    n = math.prod(factors)
    blocks, perms = [], []
    for j, nj in enumerate(factors):
        before = math.prod(factors[:j])  # the output digits f_0 .. f_{j-1} already written
        after = n // (before * nj)  # the values T of t_{j+1} .. t_{p-1}
        f = np.arange(nj)
        small = np.exp(-2j * np.pi * np.outer(f, f) / nj)
        twiddle = np.exp(-2j * np.pi * np.outer(np.arange(after), f) / (nj * after))  # [T, f_j]
        blk = twiddle[:, :, None] * small[None, :, :]
        if j == len(factors) - 1:
            blk = scale * blk
        # The layout (t_{j+1}, .., t_{p-1}, f_0, .., f_{j-1}, t_j): block T * before + r.
        blocks.append(np.repeat(blk, before, axis=0))
        perms.append((nj, n // nj))
    # The layout (f_0, .., f_{p-1}) to the natural order (f_{p-1}, .., f_0).
    perms.append((tuple(factors), tuple(reversed(range(len(factors))))))
    return blocks, perms


def dft(
    n: int,
    *,
    factors: Sequence[int] | None = None,
    norm: str = "backward",
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> GeneralizedMonarch:
    """The `n`-point DFT matrix `F[f, t] = exp(-2 pi i f t / n)` as an order-`p` Monarch matrix.

    `F @ x` equals `numpy.fft.fft(x, norm=norm)`. With two factors `n = a b` (the
    default) it is a [`Monarch`][structlin.Monarch]: write `t = t_a b + t_b` and
    `f = f_b a + f_a`; then `F[f, t] = w_b^{f_b t_b} w_n^{f_a t_b} w_a^{f_a t_a}`
    (`w_m = exp(-2 pi i / m)`), which is the four-step FFT:

    1. `P_in = (a, b)`: view `x` as `(a, b)` and transpose, so each `t_b` holds its `a` samples;
    2. `blkdiag1`: `b` blocks `diag(w_n^{f_a t_b}) F_a`, the size-`a` DFTs with the twiddle
       factors folded in;
    3. `P_mid = (b, a)`, then `blkdiag2`: `a` blocks `F_b`;
    4. `P_out = (a, b)` puts the outputs in natural order.

    With `p >= 3` factors `n = n_1 ... n_p` it is a
    [`GeneralizedMonarch`][structlin.GeneralizedMonarch] of `p` block-diagonal factors
    (the order-`p` Monarch matrix of Monarch Mixer), the mixed-radix Cooley-Tukey FFT:
    factor `j` holds `n / n_j` blocks `diag(twiddles) F_{n_j}` and is preceded by the
    stride permutation `(n_j, n / n_j)`, which brings the digit it transforms last; the
    last permutation is the axis permutation that reverses the output digits (no
    stride permutation can: that is why it is an axis permutation). Exact for every
    factorisation; the two-factor case is the same construction.

    Cost `O(n (n_1 + ... + n_p))` per vector in `p` batched matmuls, `n (n_1 + ... + n_p)`
    stored entries; the default split `n = a b` has `a` the largest divisor of `n`
    not above `sqrt(n)`. A prime `n` has only the trivial split `(1, n)`: the result is
    exact but as costly as a dense matrix.

    Args:
        n: Transform size, a positive integer.
        factors: `(n_1, ..., n_p)`, `p >= 2`, with product `n`, to choose the order and
            the block sizes.
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
        >>> x = np.random.default_rng(0).standard_normal(24)
        >>> bool(np.allclose(sl.dft(24) @ x, np.fft.fft(x)))
        True
        >>> F = sl.dft(24, factors=(2, 3, 4))  # order 3
        >>> F.nfactors, bool(np.allclose(F @ x, np.fft.fft(x)))
        (3, True)
    """
    n = _checks.size(n, "dft: n")
    if norm not in _SCALE:
        raise ValueError(f"dft: norm must be 'backward', 'ortho' or 'forward', got {norm!r}")
    sizes = _factors(n, factors, "dft")
    backend, dtype = _resolve(backend, dtype, complex_=True, what="dft")
    if not backend.is_complex(dtype):
        raise TypeError(f"dft: the DFT is complex, got dtype {dtype}; use complex64 or complex128")
    # The blocks are computed in complex128 on the host, n (n_1 + ... + n_p) entries.
    _checks.allocation(
        16 * n * sum(sizes),
        f"dft({n}): the blocks of the factors {sizes}",
        "for a transform this large use numpy.fft / torch.fft / jax.numpy.fft, which store no "
        "matrix",
    )
    blocks, perms = dft_factors(sizes, _SCALE[norm](n))
    arrays = [backend.asarray(b, dtype=dtype, device=device) for b in blocks]
    if len(sizes) == 2:
        return Monarch(*arrays, perms=perms)
    return GeneralizedMonarch(arrays, perms)


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


# -- the real trigonometric transforms: DCT and DST of types 1 to 4 -------------------------

_INVERSE_TYPE = {1: 1, 2: 3, 3: 2, 4: 4}
_SWAPPED_NORM = {"backward": "forward", "ortho": "ortho", "forward": "backward"}


def _trig_length(kind: str, type_: int, n: int) -> int:
    """The DFT length `M` whose real part gives the transform: `2(n-1)`, `2(n+1)` or `2n`."""
    if type_ == 1:
        return 2 * (n - 1) if kind == "dct" else 2 * (n + 1)
    return 2 * n


def _trig_diagonals(kind: str, type_: int, n: int, norm: str) -> tuple[np.ndarray, np.ndarray, int]:
    """`(a, b, M)` with `y_k = Re(b_k sum_m w_M^{k m} a_m x_m)` the transform of SciPy's definition.

    Each `cos` (`sin`) of the definition is `Re(e^{-i theta})` (`Re(i e^{-i theta})`),
    and `theta` splits into `2 pi k m / M` plus terms in `k` alone (into `b`) and in
    `m` alone (into `a`); the weights SciPy gives the end points go into `a`, and
    the normalisation into both.
    """
    M = _trig_length(kind, type_, n)
    m = np.arange(n)
    half = np.exp(-1j * np.pi * m / (2 * n))  # e^{-i pi m / 2n}, also used for k
    ones = np.ones(n)
    if kind == "dct":
        if type_ == 1:
            a = np.where((m == 0) | (m == n - 1), 1.0, 2.0).astype(complex)
            b = ones.astype(complex)
        elif type_ == 2:
            a, b = ones.astype(complex), 2 * half
        elif type_ == 3:
            a, b = np.where(m == 0, 1.0, 2.0) * half, ones.astype(complex)
        else:
            a, b = half, 2 * half * np.exp(-1j * np.pi / (4 * n))
    else:
        w = np.exp(-2j * np.pi * m / M)  # w_M^m
        if type_ == 1:
            a, b = w, 2j * w * np.exp(-2j * np.pi / M)
        elif type_ == 2:
            a, b = w, 2j * half * np.exp(-1j * np.pi / (2 * n))
        elif type_ == 3:
            a = np.where(m == n - 1, 1.0, 2.0) * half * np.exp(-1j * np.pi / (2 * n))
            b = 1j * w
        else:
            a, b = half, 2j * half * np.exp(-1j * np.pi / (4 * n))
    if norm == "forward":
        b = b / M
    elif norm == "ortho":
        a, b = a * _ortho_in(kind, type_, n), b * _ortho_out(kind, type_, n)
    return a, b, M


def _ortho_in(kind: str, type_: int, n: int) -> np.ndarray:
    """Input weights of SciPy's `norm="ortho"` (`orthogonalize=True`) relative to `"backward"`."""
    s = np.ones(n)
    if type_ == 1 and kind == "dct":
        s[[0, -1]] = math.sqrt(2)
    elif type_ == 3:
        s[:] = 1 / math.sqrt(2 * n)
        s[0 if kind == "dct" else -1] = 1 / math.sqrt(n)
    return s


def _ortho_out(kind: str, type_: int, n: int) -> np.ndarray:
    """Output weights of SciPy's `norm="ortho"` relative to `"backward"`."""
    if type_ == 1:
        s = np.full(n, 1 / math.sqrt(_trig_length(kind, 1, n)))
        if kind == "dct":
            s[[0, -1]] /= math.sqrt(2)
        return s
    if type_ == 2:
        s = np.full(n, 1 / math.sqrt(2 * n))
        s[0 if kind == "dct" else -1] = 1 / math.sqrt(4 * n)
        return s
    if type_ == 3:
        return np.ones(n)
    return np.full(n, 1 / math.sqrt(2 * n))


def _real_part_monarch(
    sizes: tuple[int, ...], a: np.ndarray, b: np.ndarray
) -> tuple[list[np.ndarray], list[object], tuple[int, int]]:
    """Blocks and permutations of the real `x -> Re(diag(b) F_M diag(a) x)` on `n = len(a)` entries.

    The order-`p` Monarch DFT `F_M` (`M = prod(sizes) >= n`; `x` zero-padded to `M`,
    the first `n` outputs kept) in real arithmetic: complex numbers travel as
    `(re, im)` pairs, so the middle factors' blocks are the real `2 x 2` forms
    `[[Re, -Im], [Im, Re]]` of the complex ones and their permutations carry the pair
    axis along; the first factor reads a real input (its blocks `(2q, p)`), and the
    last writes only the real parts (its blocks `(q, 2p)`). `diag(a)` is folded into
    the first factor's columns, `diag(b)` into the last factor's rows.
    """
    n, M = len(a), math.prod(sizes)
    blocks, perms = dft_factors(sizes)
    a_full, b_full = np.zeros(M, complex), np.zeros(M, complex)
    a_full[:n], b_full[:n] = a, b
    # The first factor reads position i of P_0 x: x[src[i]].
    src = perm_indices(normalize_perm(perms[0]), M)
    nb, q, p = blocks[0].shape
    blocks[0] = blocks[0] * a_full[src].reshape(nb, 1, p)
    # The last factor's output row j lands at position dst[j] after the last permutation.
    dst = np.argsort(perm_indices(normalize_perm(perms[-1]), M))
    nb, q, p = blocks[-1].shape
    blocks[-1] = blocks[-1] * b_full[dst].reshape(nb, q, 1)
    real = []
    last = len(blocks) - 1
    for i, blk in enumerate(blocks):
        nb, q, p = blk.shape
        out = np.zeros((nb, q, 2, p, 2))  # [block, row, re/im, col, re/im]
        out[:, :, 0, :, 0], out[:, :, 0, :, 1] = blk.real, -blk.imag
        out[:, :, 1, :, 0], out[:, :, 1, :, 1] = blk.imag, blk.real
        if i == 0:
            out = out[..., :1]  # a real input: only the real columns
        if i == last:
            out = out[:, :, :1]  # a real output: only the real rows
        real.append(out.reshape(nb, out.shape[1] * out.shape[2], out.shape[3] * out.shape[4]))
    # Between the factors the vectors hold (re, im) pairs: the permutations move pairs.
    paired = [perms[0]]
    for perm in map(normalize_perm, perms[1:-1]):
        if perm is None:
            paired.append(None)
            continue
        dims, axes = axis_form(perm)
        paired.append(((*dims, 2), (*axes, len(dims))))
    paired.append(perms[-1])
    return real, paired, (n, n)


def _trig(
    kind: str,
    n: int,
    type_: int,
    norm: str,
    factors: Sequence[int] | None,
    dtype: DType,
    backend: Backend | str,
    device: Device,
) -> GeneralizedMonarch:
    n = _checks.size(n, f"{kind}: n")
    if type_ not in (1, 2, 3, 4) or isinstance(type_, bool):
        raise ValueError(f"{kind}: type must be 1, 2, 3 or 4 (SciPy's types), got {type_!r}")
    if norm not in _SCALE:
        raise ValueError(f"{kind}: norm must be 'backward', 'ortho' or 'forward', got {norm!r}")
    if kind == "dct" and type_ == 1 and n < 2:
        raise ValueError("dct: the type-1 DCT needs n >= 2 (its length 2 (n - 1) DFT), got n = 1")
    a, b, M = _trig_diagonals(kind, type_, n, norm)
    sizes = _factors(M, factors, f"{kind}(n={n}, type={type_}): the DFT of length {M}")
    backend, dtype = _resolve(backend, dtype, complex_=False, what=kind)
    if backend.is_complex(dtype):
        raise TypeError(f"{kind}: the transform is real, got dtype {dtype}; use a real dtype")
    _checks.allocation(
        8 * 4 * M * sum(sizes),
        f"{kind}({n}): the real blocks of a length-{M} DFT with the factors {sizes}",
        "for a transform this large use scipy.fft / torch_dct, which store no matrix",
    )
    blocks, perms, shape = _real_part_monarch(sizes, a, b)
    arrays = [backend.asarray(blk, dtype=dtype, device=device) for blk in blocks]
    return GeneralizedMonarch(arrays, perms, shape=shape)


def dct(
    n: int,
    type: int = 2,
    *,
    norm: str = "backward",
    factors: Sequence[int] | None = None,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> GeneralizedMonarch:
    """The `n`-point DCT of type `type` as an exact real Monarch operator: `scipy.fft.dct(x, type, norm=norm)`.

    Every type SciPy offers (1, 2, 3 and 4) is covered, by one construction: each
    is the real part of a DFT of length `M` (`2 (n - 1)` for the type-1 DCT,
    `2 (n + 1)` for the type-1 DST, `2n` otherwise) between two diagonal
    matrices,

    `y = Re(diag(b) F_M diag(a) [x; 0])[:n]`,

    since each `cos` (`sin`) of the definition is the real part of `e^{-i theta}`
    (`i e^{-i theta}`) and `theta` splits into `2 pi k m / M` and terms in `k` or
    `m` alone. `F_M` is [`dft`][structlin.dft]`(M, factors=factors)` computed in real
    arithmetic (complex numbers as `(re, im)` pairs, so each middle block is the
    `2 x 2` real form of a complex one), with `diag(a)` folded into the first
    factor, `diag(b)` and the real part into the last: a real
    [`GeneralizedMonarch`][structlin.GeneralizedMonarch] of `p` block factors
    (`p = len(factors)`, default 2) that zero-pads `x` from `n` to `M` entries and keeps
    the first `n` outputs (`shape = (n, n)`).

    Cost about `8 M (n_1 + ... + n_p)` real multiply-adds per vector for
    `M = n_1 ... n_p` (four times a complex DFT's count of `M (n_1 + ... + n_p)`
    multiplications, less at the real ends), twice that in stored entries; the
    default split of `M` is balanced (`O(n^{1.5})`). `M = 2n` always has the factor 2,
    but for a prime `n` the best split of `2n` is `(2, n)`: exact, at the cost of a
    dense matrix (`O(n^2)`), the dense-cost fallback; choose a length with small
    factors for speed.

    The transpose is structured (a `GeneralizedMonarch` again); the inverse is
    [`idct`][structlin.idct], an operator of the same form (`A.inv()` of this
    padded operator is a lazy inverse that factorises the dense matrix).

    Args:
        n: Transform size (`n >= 2` for the type-1 DCT).
        type: 1, 2, 3 or 4, SciPy's types.
        norm: `"backward"` (SciPy's default, no scaling), `"ortho"` (orthonormal: SciPy's
            `orthogonalize=True`) or `"forward"` (`1 / M`).
        factors: `(n_1, ..., n_p)` with product `M`, the DFT length above; by default the
            balanced pair.
        dtype: A real dtype (the backend's default float if `None`).
        backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
        device: Where to put the blocks.

    Raises:
        ValueError: an unknown `type` or `norm`, `factors` whose product is not `M`.
        TypeError: a complex `dtype`.

    Examples:
        >>> import numpy as np, scipy.fft, structlin as sl
        >>> x = np.random.default_rng(0).standard_normal(12)
        >>> C = sl.dct(12, type=2, norm="ortho")
        >>> bool(np.allclose(C @ x, scipy.fft.dct(x, type=2, norm="ortho")))
        True
    """
    return _trig("dct", n, type, norm, factors, dtype, backend, device)


def dst(
    n: int,
    type: int = 2,
    *,
    norm: str = "backward",
    factors: Sequence[int] | None = None,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> GeneralizedMonarch:
    """The `n`-point DST of type `type` as an exact real Monarch operator: `scipy.fft.dst(x, type, norm=norm)`.

    Every type SciPy offers (1, 2, 3 and 4) is covered, by the construction of
    [`dct`][structlin.dct] (which describes it and its cost): the real part of a DFT of
    length `M` (`2 (n + 1)` for the type-1 DST, `2n` otherwise) between two diagonal
    matrices, a real [`GeneralizedMonarch`][structlin.GeneralizedMonarch] of `p` block
    factors, `O(n^{1.5})` with the default balanced split and dense-cost for a prime `n`.
    The transpose is structured; the inverse is [`idst`][structlin.idst].

    Args:
        n: Transform size (`n >= 2` for the type-1 DCT).
        type: 1, 2, 3 or 4, SciPy's types.
        norm: `"backward"` (SciPy's default, no scaling), `"ortho"` (orthonormal: SciPy's
            `orthogonalize=True`) or `"forward"` (`1 / M`).
        factors: `(n_1, ..., n_p)` with product `M`, the DFT length above; by default the
            balanced pair.
        dtype: A real dtype (the backend's default float if `None`).
        backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
        device: Where to put the blocks.

    Raises:
        ValueError: an unknown `type` or `norm`, `factors` whose product is not `M`.
        TypeError: a complex `dtype`.

    Examples:
        >>> import numpy as np, scipy.fft, structlin as sl
        >>> x = np.random.default_rng(0).standard_normal(12)
        >>> C = sl.dst(12, type=2, norm="ortho")
        >>> bool(np.allclose(C @ x, scipy.fft.dst(x, type=2, norm="ortho")))
        True
    """
    return _trig("dst", n, type, norm, factors, dtype, backend, device)


def idct(
    n: int,
    type: int = 2,
    *,
    norm: str = "backward",
    factors: Sequence[int] | None = None,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> GeneralizedMonarch:
    """The inverse of [`dct`][structlin.dct]`(n, type, norm)`: `scipy.fft.idct(x, type, norm=norm)`.

    The inverse of a type-`t` transform is the transform of type 1, 3, 2, 4 for
    `t` = 1, 2, 3, 4, with the normalisation `"backward"` and `"forward"` swapped (as
    SciPy defines `idct`); it is built by [`dct`][structlin.dct], as an exact real
    Monarch operator of the same form and cost. `factors` splits its DFT length.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> x = np.random.default_rng(0).standard_normal(10)
        >>> bool(np.allclose(sl.idct(10) @ (sl.dct(10) @ x), x))
        True
    """
    return _trig("dct", n, _inverse_type(type), _swapped(norm), factors, dtype, backend, device)


def idst(
    n: int,
    type: int = 2,
    *,
    norm: str = "backward",
    factors: Sequence[int] | None = None,
    dtype: DType = None,
    backend: Backend | str = "numpy",
    device: Device = None,
) -> GeneralizedMonarch:
    """The inverse of [`dst`][structlin.dst]`(n, type, norm)`: `scipy.fft.idst(x, type, norm=norm)`.

    The inverse of a type-`t` transform is the transform of type 1, 3, 2, 4 for
    `t` = 1, 2, 3, 4, with the normalisation `"backward"` and `"forward"` swapped (as
    SciPy defines `idst`); it is built by [`dst`][structlin.dst], as an exact real
    Monarch operator of the same form and cost. `factors` splits its DFT length.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> x = np.random.default_rng(0).standard_normal(10)
        >>> bool(np.allclose(sl.idst(10) @ (sl.dst(10) @ x), x))
        True
    """
    return _trig("dst", n, _inverse_type(type), _swapped(norm), factors, dtype, backend, device)


def _inverse_type(type_: int) -> int:
    return _INVERSE_TYPE.get(type_, type_) if isinstance(type_, int) else type_


def _swapped(norm: str) -> str:
    return _SWAPPED_NORM.get(norm, norm) if isinstance(norm, str) else norm
