"""Long convolutions through the Monarch DFT: the sequence-mixing kernel of `MonarchMixer`.

A linear convolution of length-`N` sequences, `y[t] = sum_s k[s] u[t - s]` for
`0 <= t < N` and lags `-(N - 1) <= s <= N - 1`, equals the circular convolution of
length `n >= 2N - 1` of the zero-padded sequences (the kernel's negative lags wrap
to the end), which the DFT diagonalises: `y = F^{-1} (F k ⊙ F u)`.

`F` comes from [`structlin.dft`][structlin.dft]`(n, factors=(a, b))`, the four-step
FFT as a Monarch matrix `P_out B_2 P_mid B_1 P_in`: `blkdiag1` holds `b` blocks
`D_{t_b} F_a` (the size-`a` DFT with the twiddle factors `D_{t_b} = diag_{f_a}(w_n^{f_a t_b})`
folded in), `blkdiag2` holds `a` blocks `F_b`. A diagonal between the factors
commutes with `P_mid`, so the twiddles can as well be folded into the second
factor's blocks: `F = P_out B_2' P_mid (I_b ⊗ F_a) P_in` with blocks
`B_2'[f_a] = F_b diag_{t_b}(w_n^{f_a t_b})`. The plan takes `F_a`, the twiddles and
`F_b` from `structlin.dft`'s blocks and applies this form with matmuls (no
`torch.fft`), which lets every operand be contiguous:

- Activations are sequence-major, `(n, G)` with `G = batch * channels` columns.
  `P_mid (I_b ⊗ F_a) P_in x` is `F_a @ x.view(a, b G)`: one matmul with the shared
  block, whose `(a, b G)` result holds, for each `f_a`, the `(b, G)` rows
  `B_2'[f_a]` reads, so the second factor is one batched matmul on it.
- `P_out` and its inverse are never applied: the product with the kernel's
  spectrum is pointwise, so the spectra stay in the `[f_a, f_b]` order the second
  factor writes (frequency `f = f_b a + f_a`), which the inverse reads directly.
  The inverse `F^{-1} = F^H / n` ends with `F_a^H @ V`, whose rows are already the
  natural order `t = t_a b + t_b`: no transposing copy anywhere.
- The DFT is complex, the data real: the blocks are stored as real `(re, im)`
  pairs. The first matmul multiplies a real input (half the cost of a complex one)
  and skips the zero padding (only the first `ceil(N / b)` of `F_a`'s `a` columns
  meet data); the last computes only the real part, and only the rows of the `N`
  outputs kept.

Cost per column (one channel of one sequence), in real flops: `(4a + 16b) n` for
the matmuls (`2an` for the first and for the last, `8bn` for each complex stage of
`b x b` blocks), plus `~12n` elementwise; [`conv_size`][structlin.nn._monarch_conv.conv_size]
picks `n >= 2N` and `a b = n` with `a` near `2 sqrt(n)`, where this is about
`16 n^{1.5}`. Transforming the kernels costs the same per channel, once per call
whatever the batch size.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from structlin import _checks
from structlin.transforms import dft

__all__ = [
    "ConvPlan",
    "OrderPlan",
    "conv",
    "conv_order",
    "conv_size",
    "conv_size_order",
    "kernel_spectrum",
    "kernel_spectrum_order",
    "plan",
    "plan_order",
]

# Plans shared by every layer: keyed by (seq_len, dtype, device), the oldest dropped
# first beyond this many (a plan holds 2 (a^2 + n b) numbers: 2.2 M for length 8192).
_CACHE_SIZE = 16
_PLANS: dict[tuple[int, torch.dtype, torch.device], ConvPlan] = {}


class ConvPlan(NamedTuple):
    """The Monarch DFT of one sequence length, as real and imaginary parts.

    `w1` is `F_a` as `(2a, a)`, rows `(re/im, f_a)`; `w2` holds the second factor's
    blocks `F_b diag_{t_b}(w_n^{f_a t_b})` as `(2, a, b, b)`, `[re/im, f_a, f_b, t_b]`.
    Their transposed views are the inverse transform's blocks.
    """

    n: int
    a: int
    b: int
    w1: torch.Tensor
    w2: torch.Tensor


def _split(n: int) -> tuple[int, int]:
    """`(a, b)`, `a b = n`, minimising the matmul cost `4a + 16b` (ties: the smaller `a + b`)."""
    best = None
    for b in range(1, math.isqrt(n) + 1):
        for bb in {b, n // b}:
            if n % bb == 0:
                a = n // bb
                key = (4 * a + 16 * bb, a + bb)
                if best is None or key < best[0]:
                    best = (key, (a, bb))
    return best[1]


def conv_size(seq_len: int) -> tuple[int, int, int]:
    """`(n, a, b)`: the DFT length for a linear convolution of length `seq_len`, and its split.

    `n` is the smallest length `>= 2 seq_len` (room for every lag, no wrap-around)
    with a split `n = a b` whose cost `(4a + 16b) n` is within 1.5x of the best
    possible `16 n^{1.5}`, so the transform stays sub-quadratic for every length:
    `2 seq_len` itself when it has balanced factors (any power of two does), else
    a slightly longer, better-factored size (`2 * 1009 = 2018` has only the
    factors `2 * 1009`, so a sequence of 1009 uses `n = 2020 = 101 * 20`).

    Raises:
        ValueError: `seq_len < 1`.

    Examples:
        >>> from structlin.nn._monarch_conv import conv_size
        >>> conv_size(256), conv_size(8192), conv_size(1009)
        ((512, 32, 16), (16384, 256, 64), (2020, 101, 20))
    """
    n = 2 * _checks.size(seq_len, "the sequence length")
    while True:
        a, b = _split(n)
        if 4 * a + 16 * b <= 24 * math.sqrt(n):
            return n, a, b
        n += 1


def plan(seq_len: int, dtype: torch.dtype, device: torch.device) -> ConvPlan:
    """The (cached) [`ConvPlan`][structlin.nn._monarch_conv.ConvPlan] for `seq_len`.

    A lookup once built; the first call at a length builds the blocks from
    [`structlin.dft`][structlin.dft] in float64 and casts them, so call a layer
    once at each length before `torch.compile` traces it (as for the operators' rules).
    """
    key = (seq_len, dtype, device)
    found = _PLANS.get(key)
    if found is not None:
        return found
    n, a, b = conv_size(seq_len)
    op = dft(n, factors=(a, b))  # NumPy, complex128
    blk1, blk2 = np.asarray(op.blkdiag1), np.asarray(op.blkdiag2)  # (b, a, a), (a, b, b)
    small = blk1[0]  # block t_b = 0 has no twiddles: F_a
    twiddle = blk1[:, :, 0].T  # column t_a = 0 of block t_b is w_n^{f_a t_b} (F_a[:, 0] = 1)
    second = blk2 * twiddle[:, None, :]  # F_b diag_{t_b}(w_n^{f_a t_b}), per f_a
    w1 = np.concatenate([small.real, small.imag])
    w2 = np.stack([second.real, second.imag])

    def tensor(w: np.ndarray) -> torch.Tensor:
        # C order: NumPy may lay out the product above in another, and BLAS needs
        # unit-stride matrices with a leading batch axis.
        return torch.as_tensor(np.ascontiguousarray(w), dtype=dtype, device=device)

    made = ConvPlan(n, a, b, tensor(w1), tensor(w2))
    while len(_PLANS) >= _CACHE_SIZE:
        del _PLANS[next(iter(_PLANS))]
    _PLANS[key] = made
    return made


def _complex_bmm(
    re: torch.Tensor, im: torch.Tensor, x_re: torch.Tensor, x_im: torch.Tensor, conj: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(re + i im) @ (x_re + i x_im)` (or `conj(re + i im) @ ...`) as four real batched matmuls."""
    sign = 1 if conj else -1
    out_re = torch.baddbmm(torch.bmm(re, x_re), im, x_im, alpha=sign)
    out_im = torch.baddbmm(torch.bmm(re, x_im), im, x_re, alpha=-sign)
    return out_re, out_im


def _dft(x: torch.Tensor, plan: ConvPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """`F x` for real `x` of shape `(rows, G)`, `rows <= n` (zero beyond): `(re, im)`,
    each `(a, b, G)` indexed `[f_a, f_b]`, frequency `f_b a + f_a` (before `P_out`)."""
    rows, G = x.shape
    a, b = plan.a, plan.b
    a_in = -(-rows // b)  # rows t_a of the (a, b) view that hold data
    if a_in * b != rows:
        x = F.pad(x, (0, 0, 0, a_in * b - rows))
    # P_in, I_b ⊗ F_a, P_mid: F_a times x viewed as (t_a, (t_b, g)), re and im stacked.
    # The padded rows t_a >= a_in are zero, so only a_in columns of F_a take part.
    y_re, y_im = torch.mm(plan.w1[:, :a_in], x.reshape(a_in, b * G)).view(2, a, b, G).unbind(0)
    # The second factor: block f_a reads y[f_a], the (b, G) rows t_b.
    return _complex_bmm(plan.w2[0], plan.w2[1], y_re, y_im)


def kernel_spectrum(
    k_fwd: torch.Tensor, k_rev: torch.Tensor | None, plan: ConvPlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' spectra `F k / n` as `(re, im)`, each `(a, b, 1, d)` (`[f_a, f_b, ., c]`).

    `k_fwd` `(N, d)` holds lags `0 .. N - 1`, `k_rev` `(N - 1, d)` (or `None`: causal)
    lags `-1 .. -(N - 1)`.
    """
    N, d = k_fwd.shape
    if k_rev is not None:  # negative lags wrap to the end: lag -j sits at n - j
        gap = k_fwd.new_zeros(plan.n - 2 * N + 1, d)
        k_fwd = torch.cat([k_fwd, gap, k_rev.flip(0)])
    k_re, k_im = _dft(k_fwd, plan)
    return (k_re / plan.n).unsqueeze(2), (k_im / plan.n).unsqueeze(2)


def conv(
    u: torch.Tensor, spectrum: tuple[torch.Tensor, torch.Tensor], plan: ConvPlan
) -> torch.Tensor:
    """The linear convolution of `u` `(N, B, d)` (sequence-major) with the kernels of `spectrum`.

    `y[t, :, c] = sum_s k_c[s] u[t - s, :, c]` for `t < N`; `(N, B, d)`, contiguous.
    Differentiable in `u` and in the spectrum (so in the kernels).
    """
    N, B, d = u.shape
    G = B * d
    a, b = plan.a, plan.b
    z_re, z_im = (z.view(a, b, B, d) for z in _dft(u.reshape(N, G), plan))
    k_re, k_im = spectrum
    w_re = torch.addcmul(z_re * k_re, z_im, k_im, value=-1).view(a, b, G)
    w_im = torch.addcmul(z_re * k_im, z_im, k_re).view(a, b, G)
    # F^{-1} = F^H / n (the 1 / n is in the spectrum) = P_in^T (I_b ⊗ F_a^H) P_mid^T B_2'^H P_out^T,
    # with the spectra already in the order P_out^T gives. B_2'^H, block by block:
    w2 = plan.w2.transpose(2, 3)
    v_re, v_im = _complex_bmm(w2[0], w2[1], w_re, w_im, conj=True)  # (a, b, G) [f_a, t_b]
    # F_a^H on (f_a, (t_b, g)), real part only (Re(conj(F_a)^T V) = F_re^T V_re + F_im^T V_im),
    # and only the rows t_a < a_out that hold outputs t < N; rows come out as t = t_a b + t_b.
    a_out = -(-N // b)
    w1 = plan.w1.t()[:a_out]  # (a_out, 2a): F_a^T, columns (re/im, f_a)
    y = torch.addmm(torch.mm(w1[:, :a], v_re.view(a, b * G)), w1[:, a:], v_im.view(a, b * G))
    y = y.view(a_out * b, G)
    if a_out * b != N:  # (a slice that is no slice would still cost a copy backwards)
        y = y[:N]
    return y.view(N, B, d)


# -- order p: the DFT as p Monarch factors ---------------------------------------------------
#
# For order p >= 3, `structlin.dft(n, factors=(n_1, ..., n_p))` is the mixed-radix FFT as p
# block-diagonal factors. Each factor's blocks are `diag(twiddles) F_{n_j}`, so it applies
# as one matmul with the shared `F_{n_j}` along axis j of the sequence viewed as a
# `(n_1, ..., n_p, G)` tensor, then a pointwise product with the twiddles. The spectrum is
# left in the digit order the factors write (the last, digit-reversing permutation is
# never applied: the product with the kernel's spectrum is pointwise), and the inverse runs
# the factors backwards with conjugates, ending in the natural order of time. Complex
# arithmetic throughout (complex64 for float32 work), `8 n (n_1 + ... + n_p)` real flops per
# column and DFT, against `16 n^{1.5}` for order 2.


class OrderPlan(NamedTuple):
    """The Monarch DFT of order `p` of one sequence length: per factor, `F_{n_j}` and the twiddles.

    `small[j]` is `F_{n_j}` `(n_j, n_j)`; `twiddles[j]` (`None` when all ones) broadcasts
    against the `(n_1, ..., n_p, G)` view: `(1,) * j + (n_j, n_{j+1}, ..., n_p, 1)`.
    """

    n: int
    factors: tuple[int, ...]
    small: tuple[torch.Tensor, ...]
    twiddles: tuple[torch.Tensor | None, ...]


_ORDER_PLANS: dict[tuple[int, int, torch.dtype, torch.device], OrderPlan] = {}


@functools.lru_cache(maxsize=4096)
def _split_order(n: int, order: int) -> tuple[int, ...]:
    """`order` factors of `n`, ascending, with the least sum (the matmuls' cost per entry)."""
    if order == 1:
        return (n,)
    best = None
    for d in range(1, math.isqrt(n) + 1):
        if n % d:
            continue
        for first in {d, n // d}:
            if first**order > n * (1 + 1e-9):
                continue  # the smallest factor first: no split is found twice
            rest = _split_order(n // first, order - 1)
            cand = tuple(sorted((first, *rest)))
            if best is None or (sum(cand), cand) < (sum(best), best):
                best = cand
    return best if best is not None else (1,) * (order - 1) + (n,)


def conv_size_order(seq_len: int, order: int) -> tuple[int, tuple[int, ...]]:
    """`(n, (n_1, ..., n_p))`: the DFT length `n >= 2 seq_len` of order `p` and its factors.

    The smallest `n >= 2 seq_len` with `p` factors whose sum is within 1.5x of the
    best possible `p n^{1/p}`, so that the transform costs `O(p n^{1 + 1/p})`: `2 seq_len`
    itself for powers of two.

    Examples:
        >>> from structlin.nn._monarch_conv import conv_size_order
        >>> conv_size_order(512, 3), conv_size_order(1000, 4)
        ((1024, (8, 8, 16)), (2000, (5, 5, 8, 10)))
    """
    n = 2 * _checks.size(seq_len, "the sequence length")
    order = _checks.size(order, "the order")
    while True:
        factors = _split_order(n, order)
        if sum(factors) <= 1.5 * order * n ** (1 / order) + 1e-9:
            return n, factors
        n += 1


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def plan_order(seq_len: int, order: int, dtype: torch.dtype, device: torch.device) -> OrderPlan:
    """The (cached) [`OrderPlan`][structlin.nn._monarch_conv.OrderPlan] of `seq_len`, from
    the blocks of `structlin.dft(n, factors=...)` (`dtype` is the real work dtype)."""
    key = (seq_len, order, dtype, device)
    found = _ORDER_PLANS.get(key)
    if found is not None:
        return found
    n, factors = conv_size_order(seq_len, order)
    op = dft(n, factors=factors)  # NumPy, complex128: p factors
    cdtype = _complex_of(dtype)
    small, twiddles = [], []
    for j, nj in enumerate(factors):
        blocks = np.asarray(op.blocks[j])  # block T * before + r is diag(w^{f_j T}) F_{n_j}
        before, rest = math.prod(factors[:j]), factors[j + 1 :]
        small.append(torch.as_tensor(blocks[0], dtype=cdtype, device=device))
        tw = blocks[::before, :, 0]  # [T, f_j] (F_{n_j}[:, 0] = 1)
        if not rest:
            twiddles.append(None)
            continue
        tw = np.ascontiguousarray(tw.T).reshape((1,) * j + (nj, *rest, 1))
        twiddles.append(torch.as_tensor(tw, dtype=cdtype, device=device))
    made = OrderPlan(n, tuple(factors), tuple(small), tuple(twiddles))
    while len(_ORDER_PLANS) >= _CACHE_SIZE:
        del _ORDER_PLANS[next(iter(_ORDER_PLANS))]
    _ORDER_PLANS[key] = made
    return made


def _along(W: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """`W` applied along `axis` of `x`: one matmul with the other axes as columns."""
    moved = x.movedim(axis, 0)
    shape = moved.shape
    y = torch.mm(W, moved.reshape(shape[0], -1))
    return y.view(W.shape[0], *shape[1:]).movedim(0, axis)


def _dft_order(x: torch.Tensor, plan: OrderPlan) -> torch.Tensor:
    """`F x` for `x` `(rows, G)` (`rows <= n`, zero beyond), as the `(n_1, ..., n_p, G)`
    tensor of the spectrum in the factors' digit order."""
    rows, G = x.shape
    if rows != plan.n:
        x = F.pad(x, (0, 0, 0, plan.n - rows))
    z = x.to(plan.small[0].dtype).reshape(*plan.factors, G)
    for j, (small, tw) in enumerate(zip(plan.small, plan.twiddles, strict=True)):
        z = _along(small, z, j)
        if tw is not None:
            z = z * tw
    return z


def kernel_spectrum_order(
    k_fwd: torch.Tensor, k_rev: torch.Tensor | None, plan: OrderPlan
) -> torch.Tensor:
    """The kernels' spectra `F k / n`, `(n_1, ..., n_p, 1, d)`, for `k_fwd` `(N, d)` (lags
    `0 .. N-1`) and `k_rev` `(N - 1, d)` (lags `-1 .. -(N-1)`, or `None`)."""
    N, d = k_fwd.shape
    if k_rev is not None:  # negative lags wrap to the end: lag -j sits at n - j
        gap = k_fwd.new_zeros(plan.n - 2 * N + 1, d)
        k_fwd = torch.cat([k_fwd, gap, k_rev.flip(0)])
    return (_dft_order(k_fwd, plan) / plan.n).unsqueeze(-2)


def conv_order(u: torch.Tensor, spectrum: torch.Tensor, plan: OrderPlan) -> torch.Tensor:
    """`conv` with the order-`p` DFT: `u` `(N, B, d)` sequence-major, `(N, B, d)` out."""
    N, B, d = u.shape
    z = _dft_order(u.reshape(N, B * d), plan).view(*plan.factors, B, d) * spectrum
    z = z.view(*plan.factors, B * d)
    # F^{-1} = F^H / n (the 1 / n is in the spectrum): the factors backwards, conjugated.
    for j in reversed(range(len(plan.factors))):
        tw = plan.twiddles[j]
        if tw is not None:
            z = z * tw.conj()
        z = _along(plan.small[j].conj(), z, j)
    y = torch.real(z).reshape(plan.n, B * d)[:N]
    return y.reshape(N, B, d)
