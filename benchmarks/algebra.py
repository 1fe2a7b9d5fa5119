"""Structured algebra: solves and log-determinants of Kronecker and Monarch matrices.

`sl.inv(A) @ x` (the inverse built from the factors' or blocks' inverses, then
applied) and `sl.slogdet(A)` against the dense LU solve and `slogdet` of
`A.to_dense()` (`torch.linalg.solve` / `torch.linalg.slogdet`; the dense matrix
is built once, outside the timing), and for the Kronecker product against
CoLA's `cola.linalg.inv` / `cola.linalg.slogdet` of `cola.ops.Kronecker` of the
same factors (when `cola-ml` is installed). PyTorch, float64, one right-hand
side; factors and blocks are well conditioned (`I + N(0, 1) / (4 sqrt(n))`),
and every contender's answer is checked against the dense one first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import harness
import torch

import structlin as sl

NAME = "algebra"
DESCRIPTION = __doc__
PLOT = ("d", ["op"])


def _well_conditioned(*shape: int, gen: torch.Generator) -> torch.Tensor:
    n = shape[-1]
    return torch.eye(n, dtype=torch.float64) + torch.randn(
        shape, generator=gen, dtype=torch.float64
    ) / (4 * n**0.5)


def kron_factors(d: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Three square factors with sizes as equal as possible and product `d` (a power of two)."""
    e = int(math.log2(d))
    sizes = [2 ** (e // 3 + (i < e % 3)) for i in range(3)]
    return [_well_conditioned(n, n, gen=gen) for n in sizes]


def _cola():
    try:
        import cola
    except ImportError:
        return None
    return cola


def cases(d: int, device: str) -> dict[str, tuple[sl.LinearOperator, object | None]]:
    """`{structure: (structlin operator, CoLA operator or None)}` for size `d`."""
    gen = torch.Generator().manual_seed(0)
    factors = [f.to(device) for f in kron_factors(d, gen)]
    nb = math.isqrt(d)
    blocks = [_well_conditioned(nb, d // nb, d // nb, gen=gen).to(device) for _ in range(2)]
    cola = _cola()
    kron_cola = cola.ops.Kronecker(*[cola.ops.Dense(f) for f in factors]) if cola else None
    return {
        "kron": (sl.Kron(*factors), kron_cola),
        "monarch nb=√d": (sl.Monarch(*blocks), None),  # one name for every d: one line
    }


def run(settings: harness.Settings) -> list[harness.Record]:
    sizes = [64] if settings.quick else [1024, 4096]
    rows: list[harness.Record] = []
    cola = _cola()
    for d in sizes:
        for structure, (A, C) in cases(d, settings.device).items():
            D = A.to_dense()
            x = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            x = x.to(settings.device)
            expected = torch.linalg.solve(D, x)
            torch.testing.assert_close(sl.inv(A) @ x, expected)
            solves: dict[str, Callable[[], object]] = {
                "structlin": lambda A=A, x=x: sl.inv(A) @ x,
                "dense": lambda D=D, x=x: torch.linalg.solve(D, x),
            }
            _, logabs = torch.linalg.slogdet(D)
            torch.testing.assert_close(torch.as_tensor(sl.slogdet(A)[1]), logabs)
            logdets: dict[str, Callable[[], object]] = {
                "structlin": lambda A=A: sl.slogdet(A),
                "dense": lambda D=D: torch.linalg.slogdet(D),
            }
            if C is not None:
                torch.testing.assert_close(cola.linalg.inv(C) @ x, expected)
                torch.testing.assert_close(torch.as_tensor(cola.linalg.slogdet(C)[1]), logabs)
                solves["cola"] = lambda C=C, x=x: cola.linalg.inv(C) @ x
                logdets["cola"] = lambda C=C: cola.linalg.slogdet(C)
            slow = (
                settings if settings.quick else harness.Settings(rounds=5, device=settings.device)
            )
            for op, contenders in (("inv @ x", solves), ("slogdet", logdets)):
                timings = harness.compare(contenders, slow, baseline="dense")
                rows += harness.records(NAME, {"d": d, "structure": structure, "op": op}, timings)
                summary = ", ".join(f"{k} {v[2]:.2g}" for k, v in timings.items())
                print(f"   d={d} {structure} {op}: {summary}", flush=True)
    return rows
