"""`BlockDiagonal`: the block-diagonal matrix of operators of any shapes, block by block."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from structlin import _checks, functions
from structlin._checks import dense_backend
from structlin._convert import unify
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, backend_of, is_array
from structlin.errors import SingularOperatorError
from structlin.expressions.dense import as_operator
from structlin.expressions.product import Product
from structlin.expressions.sum import Sum
from structlin.operator import LinearOperator


class BlockDiagonal(LinearOperator):
    """`A = diag(A_1, ..., A_b)` for blocks `A_i` of any shapes `(m_i, n_i)`, each an
    operator (a 2-D array is wrapped as a [`Dense`][structlin.Dense]).

    `A` has shape `(sum m_i, sum n_i)`. Every rule works block by block, through each
    block's own rules, so a block that is a [`Kron`][structlin.Kron] or a
    [`Diagonal`][structlin.Diagonal] keeps its structure: `A @ X` splits the rows of `X`
    and applies each block (the sum of the blocks' costs, one Python loop over the
    blocks); `A^T`, `A^H` are the blocks' transposes; `inv`, `solve`, `slogdet` and
    `eigh` (all blocks square) are the blocks' own (`solve` and `slogdet` of each block
    as [`sl.solve`][structlin.solve] and [`sl.slogdet`][structlin.slogdet] take them,
    so a large block without a structured rule gets an iterative method); `diag` and
    `trace` are the blocks' (square blocks); `c A`, and sums and products of two
    block-diagonal operators partitioned alike, stay block-diagonal. `A` is symmetric
    (PSD) when every block is.

    For `b` equal dense blocks, [`BlockDiag`][structlin.BlockDiag] is faster (one batched
    matmul); `sl.BlockDiag([...])` of a list picks it where it can and builds a
    `BlockDiagonal` otherwise.

    Args:
        blocks: A sequence of operators or 2-D arrays, at least one, of one backend.

    Raises:
        TypeError: `blocks` is not a sequence of operators or 2-D arrays, or mixes backends.
        ValueError: `blocks` is empty.
        SingularOperatorError: from `inv`/`solve` of a square `A` with a non-square or
            singular block, naming it.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.BlockDiagonal([np.array([[2.0]]), sl.Kron(np.eye(2), 3 * np.eye(2))])
        >>> A.shape, A @ np.ones(5)
        ((5, 5), array([2., 3., 3., 3., 3.]))
        >>> type(A.inv().blocks[1]).__name__  # each block's own inverse
        'Kron'
    """

    _children = ("blocks",)

    blocks: tuple[LinearOperator, ...]

    def __init__(self, blocks: Sequence[LinearOperator | Array]):
        if isinstance(blocks, LinearOperator) or is_array(blocks) or not _is_sequence(blocks):
            raise TypeError(
                "BlockDiagonal takes a list of blocks (operators or 2-D arrays), got "
                f"{type(blocks).__name__}; write sl.BlockDiagonal([A, B, ...])"
            )
        if not blocks:
            raise ValueError("BlockDiagonal needs at least one block")
        ops = tuple(as_operator(b, f"BlockDiagonal block {i}") for i, b in enumerate(blocks))
        self._set(blocks=unify(ops, "BlockDiagonal"))

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(b.shape[0] for b in self.blocks), sum(b.shape[1] for b in self.blocks))


def _is_sequence(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def _wrap(blocks: tuple[LinearOperator, ...]) -> BlockDiagonal:
    op = object.__new__(BlockDiagonal)
    op._set(blocks=blocks)
    return op


def _splits(sizes: list[int]) -> list[tuple[int, int]]:
    """`[(start, stop)]` of consecutive ranges of `sizes`."""
    out, start = [], 0
    for size in sizes:
        out.append((start, start + size))
        start += size
    return out


def _square(A: BlockDiagonal) -> bool:
    return all(b.shape[0] == b.shape[1] for b in A.blocks)


def _rectangular_block(A: BlockDiagonal, what: str) -> None:
    """`SingularOperatorError` for a (square) `A` with a non-square block: its rank is
    at most `sum min(m_i, n_i)`, below its size."""
    for i, b in enumerate(A.blocks):
        if b.shape[0] != b.shape[1]:
            raise SingularOperatorError(
                f"{what} of BlockDiagonal of shape {_checks.shape_str(A.shape)}: block {i} has "
                f"shape {_checks.shape_str(b.shape)}, and a square block-diagonal matrix with "
                "a non-square block has rank below its size (it is singular)"
            )


def _blockwise(A: BlockDiagonal, what: str, run: Any) -> list[Any]:
    """`run(i, block)` for each block, a singular block named in the error."""
    out = []
    for i, b in enumerate(A.blocks):
        try:
            out.append(run(i, b))
        except SingularOperatorError as e:
            raise SingularOperatorError(
                f"{what} of BlockDiagonal of shape {_checks.shape_str(A.shape)}: block {i} "
                f"({type(b).__name__} of shape {_checks.shape_str(b.shape)}) is singular: {e}"
            ) from None
    return out


@dispatch
def matmat(A: BlockDiagonal, X: object):
    backend = backend_of(X)
    cols = _splits([b.shape[1] for b in A.blocks])
    parts = [matmat(b, X[start:stop]) for b, (start, stop) in zip(A.blocks, cols, strict=True)]
    return backend.concatenate(parts, 0)


@dispatch
def rmatmat(X: object, A: BlockDiagonal):
    backend = backend_of(X)
    rows = _splits([b.shape[0] for b in A.blocks])
    parts = [rmatmat(X[:, start:stop], b) for b, (start, stop) in zip(A.blocks, rows, strict=True)]
    return backend.concatenate(parts, 1)


@dispatch
def to_dense(A: BlockDiagonal):
    backend, dtype, device = dense_backend(A)
    n = A.shape[1]
    rows = []
    for b, (start, stop) in zip(A.blocks, _splits([b.shape[1] for b in A.blocks]), strict=True):
        m = b.shape[0]
        block = backend.astype(to_dense(b), dtype)
        left, right = (
            backend.zeros((m, start), dtype, device),
            backend.zeros((m, n - stop), dtype, device),
        )
        rows.append(backend.concatenate([left, block, right], 1))
    return backend.concatenate(rows, 0)


@dispatch
def transpose(A: BlockDiagonal):
    return _wrap(tuple(transpose(b) for b in A.blocks))


@dispatch
def adjoint(A: BlockDiagonal):
    return _wrap(tuple(adjoint(b) for b in A.blocks))


@dispatch
def inv(A: BlockDiagonal):
    _rectangular_block(A, "inv")
    return _wrap(tuple(_blockwise(A, "inv", lambda i, b: functions.inv(b))))


@dispatch
def solve(A: BlockDiagonal, B: object):
    _rectangular_block(A, "solve")
    backend = backend_of(B)
    rows = _splits([b.shape[0] for b in A.blocks])

    def run(i: int, b: LinearOperator) -> Array:
        start, stop = rows[i]
        return functions.solve(b, B[start:stop])

    return backend.concatenate(_blockwise(A, "solve", run), 0)


@dispatch
def slogdet(A: BlockDiagonal):
    if not _square(A):  # singular (see `_rectangular_block`)
        backend, dtype, device = dense_backend(A)
        zero = backend.abs(backend.zeros((), dtype, device))
        return zero, zero - math.inf  # (0, -inf), as numpy.linalg.slogdet
    sign, logabsdet = 1, 0
    for b in A.blocks:
        s, ld = functions.slogdet(b)
        sign, logabsdet = sign * s, logabsdet + ld
    return sign, logabsdet


@dispatch
def diag(A: BlockDiagonal):
    backend = dense_backend(A)[0]
    if not _square(A):  # the diagonal crosses block boundaries
        return backend.diagonal(to_dense(A))
    return backend.concatenate([_as(backend, diag(b), A) for b in A.blocks], 0)


def _as(backend: Backend, x: Array, A: BlockDiagonal) -> Array:
    """`x` in `A`'s dtype (a value-free block's diagonal may be NumPy's default)."""
    dtype = dense_backend(A)[1]
    return x if x.dtype == dtype else backend.astype(x, dtype)


@dispatch
def trace(A: BlockDiagonal):
    if not _square(A):
        return dense_backend(A)[0].sum(diag(A))
    out = trace(A.blocks[0])
    for b in A.blocks[1:]:
        out = out + trace(b)
    return out


@dispatch
def eigh(A: BlockDiagonal):
    """The blocks' eigendecompositions (each block's own rule; each taken as Hermitian):
    the eigenvalues block by block, `Q` the block-diagonal of the blocks' eigenvectors."""
    if not _square(A):
        raise ValueError(
            f"eigh of a BlockDiagonal needs square blocks, got shapes {[b.shape for b in A.blocks]}"
        )
    pairs = [functions.eigh(b) for b in A.blocks]
    backend = dense_backend(A)[0]
    w = backend.concatenate([w for w, _ in pairs], 0)
    return w, _wrap(unify(tuple(Q for _, Q in pairs), "eigh of BlockDiagonal"))


@dispatch
def structured_eigh(A: BlockDiagonal):
    return _square(A)


@dispatch
def abs_squared(A: BlockDiagonal):
    return _wrap(tuple(abs_squared(b) for b in A.blocks))


@dispatch
def matrix_function(A: BlockDiagonal, f: object):
    """`f` of each block, by its own rule."""
    if not _square(A):
        raise ValueError(f"{f.name} of a BlockDiagonal needs square blocks")
    return _wrap(unify(tuple(matrix_function(b, f) for b in A.blocks), "BlockDiagonal"))


@dispatch
def is_symmetric(A: BlockDiagonal):
    return _square(A) and all(is_symmetric(b) for b in A.blocks)


@dispatch
def is_psd(A: BlockDiagonal):
    return all(is_psd(b) for b in A.blocks)


@dispatch
def scale(c: object, A: BlockDiagonal):
    return _wrap(tuple(scale(c, b) for b in A.blocks))


@dispatch
def compose(A: BlockDiagonal, B: BlockDiagonal):
    """Blockwise where the blocks chain (`A_i B_i`), else a lazy `Product`."""
    if len(A.blocks) != len(B.blocks) or any(
        a.shape[1] != b.shape[0] for a, b in zip(A.blocks, B.blocks, strict=True)
    ):
        return Product(A, B)
    return _wrap(tuple(functions.compose(a, b) for a, b in zip(A.blocks, B.blocks, strict=True)))


@dispatch
def add(A: BlockDiagonal, B: BlockDiagonal):
    """Blockwise where the blocks have equal shapes, else a lazy `Sum`."""
    if len(A.blocks) != len(B.blocks) or any(
        a.shape != b.shape for a, b in zip(A.blocks, B.blocks, strict=True)
    ):
        return Sum(A, B)
    return _wrap(tuple(functions.add(a, b) for a, b in zip(A.blocks, B.blocks, strict=True)))


@dispatch
def components(A: BlockDiagonal):
    # Each block reads its part of the input and writes its part of the output.
    return tuple(c for b in A.blocks for c in components(b))
