"""The same Monarch matrix in structlin and composed from CoLA's operators, for one vector and a batch.

CoLA has no Monarch operator; a user builds it as the product
`P_out @ BlockDiag(L_1, ..., L_l) @ P_mid @ BlockDiag(R_1, ..., R_k)` of
`cola.ops.Permutation` and `cola.ops.BlockDiag` of `cola.ops.Dense` blocks (its
BlockDiag applies one block at a time). Both sides hold the same blocks
(PyTorch, float32) and compute `M @ X` for `X` of shape `(d,)` or
`(d, batch)`; the two results are checked equal before timing. Skipped, with a
note, when `cola-ml` is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import harness
import torch

import structlin as sl

NAME = "cola_monarch"
DESCRIPTION = __doc__
PLOT = ("d", ["batch"])


def cola_monarch(M: sl.Monarch):
    """`M` as a CoLA product of permutations and block-diagonal operators."""
    import cola

    l, s, r = M.blkdiag2.shape

    def stride(rows: int, cols: int):  # x -> x.reshape(rows, cols).T.reshape(-1) as an index
        index = torch.arange(rows * cols, device=M.device).reshape(rows, cols).T.reshape(-1)
        return cola.ops.Permutation(index, dtype=M.dtype)

    B1 = cola.ops.BlockDiag(*[cola.ops.Dense(b) for b in M.blkdiag1])
    B2 = cola.ops.BlockDiag(*[cola.ops.Dense(b) for b in M.blkdiag2])
    return stride(l, s) @ B2 @ stride(r, l) @ B1


def run(settings: harness.Settings) -> list[harness.Record]:
    try:
        import cola  # noqa: F401
    except ImportError:
        print("   cola-ml is not installed: skipped (pip install cola-ml)")
        return []
    cases = (
        [(64, 1), (64, 16)]
        if settings.quick
        else [(d, batch) for d in (1024, 4096) for batch in (1, 2048)]
    )
    rows: list[harness.Record] = []
    for d, batch in cases:
        nb = math.isqrt(d)
        M = sl.Monarch.random(
            d, d, nb, rng=0, backend="torch", dtype=torch.float32, device=settings.device
        )
        C = cola_monarch(M)
        gen = torch.Generator().manual_seed(0)
        X = torch.randn((d,) if batch == 1 else (d, batch), generator=gen).to(settings.device)
        torch.testing.assert_close(C @ X, M @ X, rtol=1e-4, atol=1e-4)
        contenders: dict[str, Callable[[], object]] = {
            "structlin": lambda M=M, X=X: M @ X,
            "cola": lambda C=C, X=X: C @ X,
        }
        timings = harness.compare(contenders, settings, baseline="cola")
        case = {"d": d, "nblocks": nb, "batch": batch}
        rows += harness.records(NAME, case, timings)
        print(
            f"   d={d} batch={batch}: structlin is {1 / timings['structlin'][2]:.1f}x faster",
            flush=True,
        )
    return rows
