"""`MonarchMixer`: the Monarch Mixer (M2) block, sub-quadratic in sequence length and width."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from structlin import _checks
from structlin.nn import _monarch_conv
from structlin.nn.linear import Linear, _check_input
from structlin.structure import get_structure, registered_structures

__all__ = ["MonarchMixer"]


def _structures() -> tuple[str, ...]:
    """The registered structures the mixer can build from `nblocks` alone: those whose
    only option is `nblocks` (`"monarch"`, `"blockdiag"`) or that take none (`"dense"`)."""
    return tuple(
        name for name in registered_structures() if set(get_structure(name).options) <= {"nblocks"}
    )


class MonarchMixer(nn.Module):
    """The Monarch Mixer (M2) block (Fu et al. 2023): Monarch matrices mix along the sequence and along the width.

    For `x` of shape `(B, N, d)`, with pre-LayerNorm residual branches,

        x = x + sequence_mixing(norm1(x))
        x = x + dimension_mixing(norm2(x))

    **Sequence mixing** is the gated long convolution of M2 (and Hyena):

    1. an input projection `in_proj` (`d -> 3d`) to three branches;
    2. a short depthwise convolution of `short_kernel` taps on all `3d` channels;
    3. `y = x_2 ⊙ (k * (x_1 ⊙ v))`: the branch `x_1 ⊙ v` is convolved channel by
       channel with a learned kernel `k` as long as the sequence, then gated by `x_2`;
    4. an output projection `out_proj` (`d -> d`).

    The long convolution is computed with Monarch DFTs, `k * u = F^{-1}(F k ⊙ F u)`,
    `F` = [`structlin.dft`][structlin.dft]`(n)` applied as batched matmuls of its
    blocks (never `torch.fft`), with `n >= 2N` so that it is a *linear*, not a
    circular, convolution: the zero padding keeps the end of the sequence from
    wrapping around to its start.

    - `causal=True` (GPT-style): the kernel has lags `0 .. N-1` only, so output `t`
      depends on inputs `<= t`; the short convolution is causal too.
    - `causal=False` (BERT-style, bidirectional): a second kernel `kernel_reverse`
      holds lags `-1 .. -(N-1)` (the two-sided linear convolution of M2-BERT, also
      zero-padded to `2N`, so no wrap-around), and the short convolution is centred.

    The kernel is explicit: `k_c[s] = kernel[s, c] exp(-λ_c |s|)` for lag `s`, with
    learned `kernel` (`(max_len, d)`; `kernel_reverse` `(max_len - 1, d)`) and a fixed
    decay per channel whose half-lives `ln 2 / λ_c` are spread geometrically from 1
    to `max_len` positions (buffer `decay`): a multi-scale prior in which most
    channels look back a short way and a few the whole context, as in Hyena's
    modulated kernels. Entries are drawn from `N(0, 1 - exp(-2λ_c))` (halved in
    variance per side when bidirectional), so `sum_s k_c[s]^2 ≈ 1` and the
    convolution keeps the scale of its input. A sequence of any length `N <= max_len`
    uses the first `N` lags.

    **Dimension mixing** is a gated MLP, `down(gelu(g) ⊙ h)` with `(g, h) = up(x)`,
    hidden width `mlp_ratio * d`. All four projections are structured
    [`Linear`][structlin.nn.Linear] layers (`structure`, `nblocks`), so their
    parameters carry the structure-aware μP metadata and
    [`param_groups`][structlin.nn.param_groups] gives them their learning rates (the
    convolution kernels, norms and biases get the base rate).

    **Cost.** For Monarch projections with `b = nblocks` blocks, the forward pass
    takes, per token, about

    | part | flops per token |
    | --- | --- |
    | `in_proj`, `out_proj` | `12 d^2 / b` |
    | long convolution, per channel | `(4 n_1 + 16 n_2) n / N ≈ 32 sqrt(2N)` |
    | short convolution and gates | `20 d` |
    | `up`, `down` (`mlp_ratio = 4`) | `28 d^2 / b` |

    where the DFT length `n = n_1 n_2 >= 2N` is split with `n_1 ≈ 2 sqrt(n)` (see
    [`dft_size`][structlin.nn.MonarchMixer.dft_size]): a Monarch DFT costs
    `O(n (n_1 + n_2))` per channel. In total `O(N d^2 / b + N^{1.5} d)` per
    sequence, against `O(N d^2 + N^2 d)` for a Transformer block; the kernels'
    spectra add `O(N^{1.5} d)` once per call, whatever the batch size. The DFT blocks
    of each sequence length are built once (from `structlin.dft`, in float64, then
    cast) and cached, `2 (n_1^2 + n n_2)` numbers per length, dtype and device; the
    ones for `max_len` are built with the layer.

    **Order.** With `order=p >= 3` the DFT is the order-`p` Monarch matrix
    [`structlin.dft`][structlin.dft]`(n, factors=(n_1, ..., n_p))` (Monarch Mixer's
    order-`p` Monarch matrices, `n_i ≈ n^{1/p}`): `p` block-diagonal factors, so the
    convolution costs about `8 n (n_1 + ... + n_p)` real flops per channel and DFT,
    `O(p N^{1 + 1/p})` instead of `O(N^{1.5})`, computed in complex arithmetic (one
    matmul with the shared `F_{n_j}` per factor and a pointwise product with its
    twiddles); see [`dft_size`][structlin.nn.MonarchMixer.dft_size]. Order 2 keeps the
    real-arithmetic plan above. The results agree to rounding for every order.

    Args:
        d_model: Width `d`.
        max_len: The longest sequence the layer takes (the kernel's length).
        causal: GPT-style causal mixing (default), or bidirectional.
        structure: `"monarch"` (default), `"blockdiag"` or `"dense"` for the four projections
            (or a registered structure whose only option is `nblocks`, or that takes none).
        nblocks: Blocks of the Monarch or block-diagonal projections.
        order: Factors `p` of the Monarch DFT of the long convolution (see "Order" above):
            2 (default) or more.
        mlp_ratio: Hidden width of the MLP over `d`.
        short_kernel: Taps of the short depthwise convolution.
        zero_init_residual: Zero the output-side components of `out_proj` and `down`
            (`zero_init_last`, as μP recommends for residual branches), so the block
            starts as the identity; the zeroed components still get gradients, and
            through them the rest of the branch from the first step on.
        dtype: Parameter dtype (`torch.get_default_dtype()` if `None`).
        device: Parameter device.

    Raises:
        ValueError: non-positive sizes, an unknown `structure`, or sizes the
            structure cannot take; in the forward pass, an input that is not
            `(B, N, d_model)`, is empty (`N = 0`) or is longer than `max_len`.
        TypeError: an input whose dtype is not the layer's.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> block = snn.MonarchMixer(64, max_len=128, nblocks=4)
        >>> block(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
        >>> snn.MonarchMixer.dft_size(100)  # n = n_1 n_2 >= 2N
        (200, 25, 8)
    """

    d_model: int
    max_len: int
    causal: bool

    def __init__(
        self,
        d_model: int,
        max_len: int,
        *,
        causal: bool = True,
        structure: str = "monarch",
        nblocks: int = 4,
        order: int = 2,
        mlp_ratio: float = 4.0,
        short_kernel: int = 3,
        zero_init_residual: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        d_model = _checks.size(d_model, "MonarchMixer: d_model")
        max_len = _checks.size(max_len, "MonarchMixer: max_len")
        short_kernel = _checks.size(short_kernel, "MonarchMixer: short_kernel")
        order = _checks.size(order, "MonarchMixer: order")
        if order < 2:
            raise ValueError(
                f"MonarchMixer: order must be at least 2 (the factors of the Monarch DFT), "
                f"got {order}"
            )
        choices = _structures()
        if structure not in choices:
            raise ValueError(
                f"MonarchMixer: structure must be one of {', '.join(map(repr, choices))}, "
                f"got {structure!r}"
            )
        hidden = round(mlp_ratio * d_model)
        if hidden < 1:
            raise ValueError(f"MonarchMixer: mlp_ratio={mlp_ratio!r} gives no hidden units")
        self.d_model, self.max_len, self.causal = d_model, max_len, bool(causal)
        self.order = order
        self.structure, self.nblocks, self.zero_init_residual = (
            structure,
            nblocks,
            zero_init_residual,
        )
        d = self.d_model
        spec = {"nblocks": nblocks} if "nblocks" in get_structure(structure).options else {}
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        zero = {"zero_init_last": zero_init_residual}

        self.norm1 = nn.LayerNorm(d, **kw)
        self.in_proj = Linear(d, 3 * d, structure, **spec, **kw)
        self.short_filter = nn.Parameter(torch.empty(short_kernel, 3 * d, **kw))
        self.kernel = nn.Parameter(torch.empty(max_len, d, **kw))
        if causal:
            self.register_parameter("kernel_reverse", None)
        else:
            self.kernel_reverse = nn.Parameter(torch.empty(max_len - 1, d, **kw))
        half_lives = torch.logspace(0, math.log10(max_len), d, dtype=torch.float64)
        self.register_buffer("decay", (math.log(2) / half_lives).to(**kw))
        self.out_proj = Linear(d, d, structure, **spec, **zero, **kw)
        self.norm2 = nn.LayerNorm(d, **kw)
        self.up = Linear(d, 2 * hidden, structure, **spec, **kw)
        self.down = Linear(hidden, d, structure, **spec, **zero, **kw)
        self._reset_mixing()
        # Build the DFT blocks of the longest sequence now, so that the common case
        # (training at max_len) finds them cached, in eager mode and under torch.compile.
        work = torch.promote_types(self.kernel.dtype, torch.float32)
        self._plan(self.max_len, work, self.kernel.device)

    def _plan(self, seq_len: int, work: torch.dtype, device: torch.device):
        """The cached DFT plan of `seq_len` for this layer's order."""
        if self.order == 2:
            return _monarch_conv.plan(seq_len, work, device)
        return _monarch_conv.plan_order(seq_len, self.order, work, device)

    @staticmethod
    def dft_size(seq_len: int, order: int = 2) -> tuple[int, ...]:
        """`(n, n_1, ..., n_p)`: the Monarch DFT length `n = n_1 ... n_p >= 2 seq_len` of the long convolution.

        Order 2: the smallest `n >= 2 seq_len` whose split keeps the DFT's matmuls
        within 1.5x of their best cost `16 n^{1.5}` flops per channel: `2 seq_len`
        itself for powers of two and other lengths with balanced factors, a little
        more otherwise (every length is allowed; the padding is exact). Order `p`:
        the smallest `n >= 2 seq_len` with `p` factors whose sum is within 1.5x of
        `p n^{1/p}`, ascending.
        """
        if order == 2:
            return _monarch_conv.conv_size(seq_len)
        n, factors = _monarch_conv.conv_size_order(seq_len, order)
        return (n, *factors)

    # -- parameters ----------------------------------------------------------------
    @torch.no_grad()
    def _reset_mixing(self) -> None:
        k = self.short_filter.shape[0]
        bound = 1 / math.sqrt(k)  # nn.Conv1d's default for a depthwise filter of k taps
        self.short_filter.uniform_(-bound, bound)
        std = torch.sqrt(-torch.expm1(-2 * self.decay.double()))  # sum_s std^2 e^{-2λs} = 1
        if not self.causal:
            std = std / math.sqrt(2)  # the two sides share the unit budget
        self.kernel.normal_().mul_(std.to(self.kernel.dtype))
        if self.kernel_reverse is not None:
            self.kernel_reverse.normal_().mul_(std.to(self.kernel.dtype))

    def reset_parameters(self) -> None:
        """Redraw every parameter as at construction (norms to 1 and 0, projections at their μP scale)."""
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()
        for layer in (self.in_proj, self.up):
            layer.reset_parameters()
        for layer in (self.out_proj, self.down):
            layer.reset_parameters(zero_init_last=self.zero_init_residual)
        self._reset_mixing()

    def kernels(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The long-convolution kernels for sequences of `seq_len`: lags `0 .. seq_len-1`
        `(seq_len, d)`, and lags `-1 .. -(seq_len-1)` `(seq_len - 1, d)` (`None` if causal),
        the decay applied; differentiable in the parameters."""
        lags = torch.arange(seq_len, dtype=self.decay.dtype, device=self.decay.device)
        window = torch.exp(-lags[:, None] * self.decay)
        kernel, reverse = self.kernel, self.kernel_reverse
        if seq_len < self.max_len:
            kernel = kernel[:seq_len]
            reverse = None if reverse is None else reverse[: seq_len - 1]
        k_fwd = kernel * window
        return k_fwd, None if reverse is None else reverse * window[1:]

    # -- the forward pass ------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> int:
        _check_input(x, f"MonarchMixer(d_model={self.d_model})", self.kernel)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"MonarchMixer(d_model={self.d_model}) takes inputs of shape (batch, seq_len, "
                f"{self.d_model}), got {tuple(x.shape)}"
            )
        n = x.shape[1]
        if n < 1:
            raise ValueError(
                f"MonarchMixer got an empty sequence (input shape {tuple(x.shape)}); "
                "sequences need at least one position"
            )
        if n > self.max_len:
            raise ValueError(
                f"MonarchMixer: sequence length {n} exceeds max_len = {self.max_len}, the length "
                f"of its convolution kernels; build the layer with max_len >= {n} or split the "
                "sequence"
            )
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x + sequence_mixing(norm1(x))`, then `+ dimension_mixing(norm2(.))`; `(B, N, d)`."""
        self._check(x)
        x = x + self.sequence_mixing(self.norm1(x))
        return x + self.dimension_mixing(self.norm2(x))

    def sequence_mixing(self, x: torch.Tensor) -> torch.Tensor:
        """The sequence-mixing branch (no norm, no residual) for `x` of shape `(B, N, d)`."""
        self._check(x)
        d = self.d_model
        # Sequence-major (N, B, .) from here on: the long convolution's matmuls then
        # read every stride permutation as a view. The projection makes the one copy.
        h = self.in_proj(x.transpose(0, 1))
        x1, x2, v = self._short_conv(h).split(d, dim=-1)
        y = self._long_conv(x1 * v) * x2
        return self.out_proj(y).transpose(0, 1)

    def dimension_mixing(self, x: torch.Tensor) -> torch.Tensor:
        """The gated MLP branch (no norm, no residual), acting on the last axis."""
        g, h = self.up(x).chunk(2, dim=-1)
        return self.down(F.gelu(g) * h)

    def long_conv(self, u: torch.Tensor) -> torch.Tensor:
        """The long convolution alone: `y[:, t, c] = sum_s k_c[s] u[:, t - s, c]` for `u` `(B, N, d)`.

        Lags `s` run over `0 .. N-1` (causal) or `-(N-1) .. N-1`, with the kernels of
        [`kernels`][structlin.nn.MonarchMixer.kernels]; computed with Monarch DFTs of
        length [`dft_size(N)`][structlin.nn.MonarchMixer.dft_size].
        """
        self._check(u)
        return self._long_conv(u.transpose(0, 1).contiguous()).transpose(0, 1)

    def _long_conv(self, u: torch.Tensor) -> torch.Tensor:
        """`long_conv` for sequence-major `u` `(N, B, d)`."""
        dtype = u.dtype
        # The DFT of n points loses about log2(n) bits over its inputs' precision: keep
        # it in float32 at least (under autocast too).
        work = torch.promote_types(dtype, torch.float32)
        with torch.autocast(u.device.type, enabled=False):
            plan = self._plan(u.shape[0], work, u.device)
            k_fwd, k_rev = self.kernels(u.shape[0])
            k_fwd = k_fwd.to(work)
            k_rev = None if k_rev is None else k_rev.to(work)
            if self.order == 2:
                spectrum = _monarch_conv.kernel_spectrum(k_fwd, k_rev, plan)
                y = _monarch_conv.conv(u.to(work).contiguous(), spectrum, plan)
            else:
                spectrum = _monarch_conv.kernel_spectrum_order(k_fwd, k_rev, plan)
                y = _monarch_conv.conv_order(u.to(work).contiguous(), spectrum, plan)
        return y.to(dtype)

    def _short_conv(self, h: torch.Tensor) -> torch.Tensor:
        """Depthwise convolution of sequence-major `h` `(N, B, C)`: causal taps
        `t - k + 1 .. t`, or centred ones when bidirectional."""
        k = self.short_filter.shape[0]
        before = k - 1 if self.causal else (k - 1) // 2
        return _ShortConv.apply(h, self.short_filter.to(h.dtype), before)

    def extra_repr(self) -> str:
        parts = [
            f"d_model={self.d_model}",
            f"max_len={self.max_len}",
            f"causal={self.causal}",
            f"structure={self.structure!r}",
        ]
        if self.structure != "dense":
            parts.append(f"nblocks={self.nblocks}")
        if self.order != 2:
            parts.append(f"order={self.order}")
        return ", ".join(parts)


class _ShortConv(torch.autograd.Function):
    """`out[t] = sum_j w[j] ⊙ h[t - before + j]` (zero outside `0 .. N-1`) for `h` `(N, B, C)`, `w` `(k, C)`.

    Written as shifted multiply-adds into the output, forwards and backwards, with
    no padded copy of `h` and no zero-filled gradient per tap (which the same
    computation through autograd's slicing costs): the layer's flops are negligible
    but its passes over memory are not, and this halves their time.
    """

    @staticmethod
    def _taps(k: int, before: int, n: int):
        # Tap j reads h[t - s] for s = before - j; only shifts inside the sequence matter.
        return [(j, before - j) for j in range(k) if abs(before - j) < n]

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, before: int) -> torch.Tensor:
        n = h.shape[0]
        out = torch.zeros_like(h)
        for j, s in _ShortConv._taps(w.shape[0], before, n):
            if s >= 0:
                out[s:].addcmul_(h[: n - s], w[j])
            else:
                out[: n + s].addcmul_(h[-s:], w[j])
        ctx.save_for_backward(h, w)
        ctx.before = before
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, w = ctx.saved_tensors
        n = h.shape[0]
        need_h, need_w, _ = ctx.needs_input_grad
        grad_h = torch.zeros_like(h) if need_h else None
        grad_w = torch.zeros_like(w) if need_w else None
        for j, s in _ShortConv._taps(w.shape[0], ctx.before, n):
            # out[t] gets w[j] h[t - s]: the pairs (out, h) are (g[s:], h[:n-s]), or mirrored.
            g_part, h_slice = (g[s:], slice(0, n - s)) if s >= 0 else (g[: n + s], slice(-s, n))
            if need_h:
                grad_h[h_slice].addcmul_(g_part, w[j])
            if need_w:
                grad_w[j] = (g_part * h[h_slice]).sum((0, 1))
        return grad_h, grad_w, None
