"""Structured matmat on PyTorch against the dense matmul of the same shape, forward and forward+backward.

Each case applies a `d x d` operator to a batch of `batch` rows as a layer does,
`y = x @ A.T` (float32), against `x @ W.T` with a dense `W`. "fwd" is the product
alone (no autograd); "fwd+bwd" also takes the gradients with respect to `x`
and to every parameter of the operator (for dense: `x` and `W`). Next to the
time ratio the table gives the FLOP ratio, structured over dense multiply-adds
per row: the speed-up the structure allows at best, if its small matmuls ran
as fast as the one big matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import harness
import torch

import structlin as sl

NAME = "matmat"
DESCRIPTION = __doc__
PLOT = ("d", ["batch", "mode"])


def structures(d: int) -> dict[str, Callable[[], sl.LinearOperator]]:
    """The structured `d x d` operators of the issue, as zero-argument builders (PyTorch, float32)."""
    root = math.isqrt(d)
    kw = {"backend": "torch", "dtype": torch.float32, "rng": 0}
    out: dict[str, Callable[[], sl.LinearOperator]] = {}
    # nblocks and rank sqrt(d) carry that name, so both sizes plot as one line
    for nb, label in {4: "4", 16: "16", root: "√d"}.items():
        if nb <= root:
            out[f"monarch nb={label}"] = lambda nb=nb: sl.Monarch.random(d, d, nblocks=nb, **kw)
    for rank in (1, 2, 4):
        out[f"btt r={rank}"] = lambda rank=rank: sl.BTT.random(
            (root, root), (root, root), rank, **kw
        )
    gen = torch.Generator().manual_seed(0)
    out["kron"] = lambda: sl.Kron(
        torch.randn(root, root, generator=gen) / root**0.5,
        torch.randn(root, root, generator=gen) / root**0.5,
    )
    out["lowrank r=√d"] = lambda: sl.LowRank(
        torch.randn(d, root, generator=gen) / d**0.5, torch.randn(root, d, generator=gen) / d**0.5
    )
    return out


def multiply_adds_per_row(op: sl.LinearOperator) -> int:
    """Multiply-adds of one row times `op^T`: every parameter once, except Kron's shared factors."""
    if isinstance(op, sl.Kron):
        d = op.shape[1]
        return sum(d // f.shape[1] * f.shape[0] * f.shape[1] for f in op.factors)
    leaves, _ = sl.pytree.tree_flatten(op)
    return sum(
        math.prod(leaf.shape) for leaf in leaves if getattr(leaf, "is_floating_point", bool)()
    )


def _leaves_requiring_grad(op: sl.LinearOperator) -> tuple[sl.LinearOperator, list[torch.Tensor]]:
    leaves, treedef = sl.pytree.tree_flatten(op)
    params = [
        leaf.detach().requires_grad_()
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()
        else leaf
        for leaf in leaves
    ]
    return sl.pytree.tree_unflatten(treedef, params), [
        p for p in params if isinstance(p, torch.Tensor) and p.requires_grad
    ]


def contenders(
    op: sl.LinearOperator, x: torch.Tensor, W: torch.Tensor, mode: str
) -> dict[str, Callable[[], object]]:
    if mode == "fwd":

        def structured() -> object:
            with torch.no_grad():
                return x @ op.T

        def dense() -> object:
            with torch.no_grad():
                return x @ W.T

        return {"structlin": structured, "dense": dense}
    op, params = _leaves_requiring_grad(op)
    xg = x.detach().requires_grad_()
    Wg = W.detach().requires_grad_()
    G = torch.randn(x.shape[0], op.shape[0])

    def structured_bwd() -> object:
        return torch.autograd.grad(xg @ op.T, [xg, *params], G)

    def dense_bwd() -> object:
        return torch.autograd.grad(xg @ Wg.T, [xg, Wg], G)

    return {"structlin": structured_bwd, "dense": dense_bwd}


def run(settings: harness.Settings) -> list[harness.Record]:
    sizes = (
        [(64, 32)] if settings.quick else [(1024, 1024), (1024, 8192), (4096, 1024), (4096, 8192)]
    )
    rows: list[harness.Record] = []
    for d, batch in sizes:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, d, generator=gen).to(settings.device)
        W = (torch.randn(d, d, generator=gen) / d**0.5).to(settings.device)
        for name, build in structures(d).items():
            op = sl.to(build(), device=settings.device)
            flop_ratio = multiply_adds_per_row(op) / (d * d)
            for mode in ("fwd", "fwd+bwd"):
                timings = harness.compare(contenders(op, x, W, mode), settings, baseline="dense")
                case = {"d": d, "batch": batch, "mode": mode, "structure": name}
                rows += harness.records(
                    NAME, case, timings, {"structlin": {"flop ratio": flop_ratio}}
                )
                print(
                    f"   d={d} batch={batch} {mode:7s} {name:14s} "
                    f"ratio {timings['structlin'][2]:.3f} (flops {flop_ratio:.3f})",
                    flush=True,
                )
    return rows
