"""The PyTorch kernel for a batch of rows times a two-factor Monarch: `X M^T`.

This is the hot path of every Monarch layer (`y = x W^T` with `W` a
[`Monarch`][structlin.Monarch] in its default layout). Written naively, as two
batched matmuls over the blocks with the activations kept row by row, each
stride permutation costs a transposing copy of the whole batch, forwards and
backwards, and those copies cost more than the matmuls. Here the activations
between the two factors are kept *by column* (features times batch): the first
batched matmul reads the row-major input through a transposed view and writes
columns, and in column layout the middle permutation `P_mid` is only a
reshape, so the second factor reads it through a strided view (a legal
leading dimension for BLAS) and nothing is copied between the factors. The
only transposing copies left are the ones a row-major output and gradient
cannot avoid (the output permutation `P_out` puts the block index innermost):
one in the forward pass and one for the incoming gradient, plus a cheap
block-order copy for the input gradient (and one more on the way back through
`P_mid` when its sizes do not line up with the first factor's blocks).

PyTorch's CPU `bmm` takes its batched BLAS path only for a contiguous result and
operands whose matrices have a unit stride, so every result below is a fresh
contiguous tensor and every operand a view with a unit stride in one of its last
two dimensions.

A few rows (fewer than `SMALL`) take a plainer path instead: with one row the
column layout makes the second factor a matrix-vector product with a strided
vector, which BLAS runs several times slower than a row-vector product, and the
copies it saves cost nothing at that size (a single vector at `d = 4096`: 264 µs
through the kernel, 97 µs the plain way). Columns `M X` (the operator applied
from the left, as in `M @ X`) keep each block's output rows together, so the
output permutation there moves whole rows of `X` rather than single entries.
"""

from __future__ import annotations

import torch

__all__ = ["monarch_times_cols", "rows_times_monarch_t"]

# Below this many rows (or columns, for `monarch_times_cols`) the plain row-layout path is
# the faster one on a CPU (measured at d = 1024 and 4096: it wins up to 8 rows, the
# kernel from 16).
SMALL = 16


class _RowsTimesMonarchT(torch.autograd.Function):
    """`Y = X M^T` for `M = P_out B_2 P_mid B_1` in the default Monarch layout.

    Shapes: `X (n, k p)`, `blkdiag1 (k, q, p)`, `blkdiag2 (l, s, r)` with
    `l r = k q`; the result is `(n, s l)`. The backward pass keeps `X` itself (no
    copy) and the intermediate `Y = B_1 X^T` in column layout, `(k, q, n)`.
    """

    @staticmethod
    def forward(ctx, X: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor):
        n = X.shape[0]
        k, _, p = blkdiag1.shape
        l, s, r = blkdiag2.shape
        # B_1 on the columns of X: (k, q, p) @ (k, p, n) -> (k, q, n), i.e. (k q, n).
        Y = torch.bmm(blkdiag1, X.t().reshape(k, p, n))
        # P_mid views the (k q) axis as (r, l) and swaps it: block ll of B_2 reads rows
        # rr * l + ll, a stride-l slice, so (l, n, r) is a view of Y with unit stride on n.
        Z = Y.view(r, l, n).permute(1, 2, 0)
        O = torch.bmm(Z, blkdiag2.transpose(1, 2))  # (l, n, s)
        ctx.save_for_backward(X, blkdiag1, blkdiag2, Y)
        ctx.set_materialize_grads(False)
        # P_out: output feature ss * l + ll of row b is O[ll, b, ss]. Y is returned too (and
        # dropped by the caller) so that a second derivative sees the graph through it.
        return O.permute(1, 2, 0).reshape(n, s * l), Y

    @staticmethod
    def backward(ctx, G: torch.Tensor | None, GY_direct: torch.Tensor | None):
        X, blkdiag1, blkdiag2, Y = ctx.saved_tensors
        # Under autocast the forward matmuls ran in a lower precision than the saved
        # inputs; the backward runs outside autocast, so it casts to that precision itself.
        X, blkdiag1, blkdiag2 = (
            t if t.dtype == Y.dtype else t.to(Y.dtype) for t in (X, blkdiag1, blkdiag2)
        )
        G, GY_direct = (
            t if t is None or t.dtype == Y.dtype else t.to(Y.dtype) for t in (G, GY_direct)
        )
        n = X.shape[0]
        k, q, p = blkdiag1.shape
        l, s, r = blkdiag2.shape
        need_x, need_1, need_2 = ctx.needs_input_grad
        grad_x = grad_1 = grad_2 = GY = None
        if G is not None:
            # The gradient of O, as (l, n, s) with unit stride on s: one transposing copy.
            GO = G.reshape(n, s, l).transpose(1, 2).contiguous().transpose(0, 1)
            if need_2:
                grad_2 = torch.bmm(GO.transpose(1, 2), Y.view(r, l, n).permute(1, 2, 0))
            if need_x or need_1:
                GZ = torch.bmm(blkdiag2.transpose(1, 2), GO.transpose(1, 2))  # (l, r, n)
                GY = GZ.transpose(0, 1).reshape(k, q, n)  # back through P_mid
        if GY_direct is not None:  # only in a second derivative
            GY = GY_direct if GY is None else GY + GY_direct
        if GY is not None:
            if need_1:
                grad_1 = torch.bmm(GY, X.reshape(n, k, p).transpose(0, 1))  # (k, q, p)
            if need_x:
                grad_x = torch.bmm(GY.transpose(1, 2), blkdiag1)  # (k, n, p)
                grad_x = grad_x.transpose(0, 1).reshape(n, k * p)
        return grad_x, grad_1, grad_2


def rows_times_monarch_t(
    X: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor
) -> torch.Tensor:
    """`X @ M^T` for rows `X (n, k p)` and the unpadded default-layout Monarch `M(blkdiag1, blkdiag2)`.

    Real floating-point tensors of one dtype and device; differentiable in all
    three arguments, to any order (the backward pass is made of differentiable ops).
    """
    if X.shape[0] < SMALL:
        return _few_rows_times_monarch_t(X, blkdiag1, blkdiag2)
    return _RowsTimesMonarchT.apply(X, blkdiag1, blkdiag2)[0]


def monarch_times_cols(
    X: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor
) -> torch.Tensor:
    """`M @ X` for columns `X (k p, n)` and the unpadded default-layout Monarch `M`.

    The result `(s l, n)` is contiguous from `SMALL` columns on; fewer take the few-rows path
    and return its transpose, a view. Differentiable by autograd (plain PyTorch operations).
    """
    n = X.shape[1]
    if n < SMALL:
        return _few_rows_times_monarch_t(X.t(), blkdiag1, blkdiag2).t()
    k, _, p = blkdiag1.shape
    l, s, r = blkdiag2.shape
    Y = torch.bmm(blkdiag1, X.reshape(k, p, n))  # (k, q, n), i.e. (k q, n)
    # P_mid: block ll of B_2 reads rows rr * l + ll of Y, a view with unit stride on n.
    O = torch.bmm(blkdiag2, Y.view(r, l, n).transpose(0, 1))  # (l, s, n)
    # P_out: output row ss * l + ll is O[ll, ss], a whole row of n entries.
    return O.transpose(0, 1).reshape(s * l, n)


def _few_rows_times_monarch_t(
    X: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor
) -> torch.Tensor:
    """`X @ M^T` kept by row throughout, every permutation a copy (cheap for a few rows)."""
    n = X.shape[0]
    k, _, p = blkdiag1.shape
    l, s, r = blkdiag2.shape
    Y = torch.bmm(X.reshape(n, k, p).transpose(0, 1), blkdiag1.transpose(1, 2))  # (k, n, q)
    Z = Y.transpose(0, 1).reshape(n, r, l).permute(2, 0, 1).contiguous()  # P_mid: (l, n, r)
    O = torch.bmm(Z, blkdiag2.transpose(1, 2))  # (l, n, s)
    return O.permute(1, 2, 0).reshape(n, s * l)  # P_out
