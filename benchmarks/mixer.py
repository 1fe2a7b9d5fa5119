"""The long convolution of `MonarchMixer` by order-p Monarch DFTs, against `torch.fft` and attention.

One sequence (batch 1) of `d = 16` channels, float32, forward only: the sequence-mixing
operation alone. "monarch p=k" is `MonarchMixer(order=k).long_conv` (bidirectional
kernels, a DFT of length `n >= 2N` with `k` factors of about `n^{1/k}`); "torch.fft" is
the same convolution by `torch.fft.rfft`/`irfft` of length `2N`; "attention" is one
head of softmax attention of width `d` (`scaled_dot_product_attention`), the quadratic
mixer the others replace, measured up to 16K positions (at 64K it would take about
3 s per call here, 16 times its 16K time). "flops" is the matmuls' real flops of one DFT per channel as
computed (`(4 n_1 + 16 n_2) n` for order 2, `8 n (n_1 + ... + n_p)` for order p),
"factors" the DFT's split.
"""

from __future__ import annotations

import dataclasses

import harness
import torch
import torch.nn.functional as F

import structlin.nn as slnn

NAME = "mixer"
DESCRIPTION = __doc__
PLOT = ("N", [])

D = 16
ATTENTION_MAX = 16384


def _fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`u` `(1, N, d)` convolved with the two-sided kernel `k` `(2N, d)` by the real FFT."""
    N = u.shape[1]
    spectrum = torch.fft.rfft(u, n=2 * N, dim=1) * torch.fft.rfft(k, n=2 * N, dim=0)
    return torch.fft.irfft(spectrum, n=2 * N, dim=1)[:, :N]


def _flops(N: int, order: int) -> tuple[int, str]:
    n, *factors = slnn.MonarchMixer.dft_size(N, order=order)
    if order == 2:
        return (4 * factors[0] + 16 * factors[1]) * n, "x".join(map(str, factors))
    return 8 * n * sum(factors), "x".join(map(str, factors))


def run(settings: harness.Settings) -> list[harness.Record]:
    lengths = [64, 256] if settings.quick else [1024, 4096, 16384, 65536]
    if not settings.quick:
        settings = dataclasses.replace(settings, rounds=5, min_sample_s=0.1)
    device = settings.device
    rows: list[harness.Record] = []
    for N in lengths:
        torch.manual_seed(0)
        u = torch.randn(1, N, D, device=device)
        contenders, extra = {}, {}
        for order in (2, 3, 4):
            layer = slnn.MonarchMixer(D, N, causal=False, order=order, structure="dense")
            layer = layer.to(device)
            name = f"monarch p={order}"
            contenders[name] = lambda layer=layer, u=u: layer.long_conv(u)
            flops, factors = _flops(N, order)
            extra[name] = {"flops": flops, "factors": factors}
        k_fwd, k_rev = layer.kernels(N)
        k = torch.cat([k_fwd, k_fwd.new_zeros(1, D), k_rev.flip(0)]).detach()
        contenders["torch.fft"] = lambda u=u, k=k: _fft_conv(u, k)
        extra["torch.fft"] = {"flops": None, "factors": "rfft 2N"}
        if N <= ATTENTION_MAX:
            q = torch.randn(1, 1, N, D, device=device)
            contenders["attention"] = lambda q=q: F.scaled_dot_product_attention(q, q, q)
            extra["attention"] = {"flops": 4 * N * N, "factors": "N^2"}  # per channel
        with torch.no_grad():
            timings = harness.compare(contenders, settings, baseline="torch.fft")
        rows += harness.records(NAME, {"N": N, "d": D}, timings, extra)
        for name, (median, _, ratio) in timings.items():
            print(f"   N={N:6d} {name:12s} {median * 1e3:9.2f} ms (x{ratio:.2f} torch.fft)")
    return rows
