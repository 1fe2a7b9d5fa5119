"""`BlockDiag`: a block-diagonal matrix of equal rectangular blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, backend_of, is_array
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.product import Product
from structlin.operator import LinearOperator
from structlin.operators.block_diagonal import BlockDiagonal
from structlin.rules import pinv_array
from structlin.structure import Structure, register_structure


class BlockDiag(LinearOperator):
    """`A = diag(B_1, ..., B_b)` for `b` equal blocks `B_i` of shape `(q, p)`.

    `A` has shape `(b q, b p)`. It is stored as one `(b, q, p)` tensor and applied
    with one batched matmul: `A @ X` reshapes `X` to `(b, p, k)`, multiplies and
    reshapes back, `O(b q p k)` with no copy. `A^T` transposes each block.
    For square blocks `inv` is the batched inverse of the blocks (`O(b p^3)`)
    and `slogdet` the sum of the block log-determinants.

    Given a list of blocks instead, `sl.BlockDiag([B_1, ..., B_b])` stacks them into
    this tensor (a copy) when they are 2-D arrays of one shape, backend and dtype; blocks
    of unequal shapes, or operators, make a [`BlockDiagonal`][structlin.BlockDiagonal]
    (which applies them one by one, each by its own rules) instead of a `BlockDiag`.

    Args:
        blocks: Floating-point or complex array of shape `(nblocks, out_block, in_block)`,
            or a list of blocks (see above).

    Raises:
        TypeError: `blocks` is not a floating-point array (or a list of blocks).
        ValueError: `blocks` is not 3-D.
        SingularOperatorError: from `inv`/`solve`, naming the singular block.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.BlockDiag(np.stack([np.eye(2), 2 * np.eye(2)]))
        >>> A @ np.ones(4)
        array([1., 1., 2., 2.])
        >>> type(sl.BlockDiag([np.eye(2), 2 * np.eye(2)])).__name__  # stacked: the fast path
        'BlockDiag'
        >>> type(sl.BlockDiag([np.eye(2), np.ones((1, 3))])).__name__  # unequal blocks
        'BlockDiagonal'
    """

    _children = ("blocks",)

    blocks: Array

    def __new__(cls, blocks: Any = None) -> Any:
        # A list that is not one tensor's worth of equal arrays is a BlockDiagonal (which
        # Python then does not pass to `__init__`, not being a BlockDiag).
        if cls is BlockDiag and _is_list(blocks) and not _stackable(blocks):
            return BlockDiagonal(blocks)
        return super().__new__(cls)

    def __init__(self, blocks: Array | Sequence[Array]):
        if _is_list(blocks):
            blocks = backend_of(blocks[0]).stack(list(blocks), 0)
        if hasattr(blocks, "shape") and len(blocks.shape) != 3:
            raise ValueError(
                "BlockDiag needs blocks of shape (nblocks, out_block, in_block), got shape "
                f"{_checks.shape_str(blocks.shape)}; stack equal blocks with numpy.stack"
            )
        blocks, _ = _checks.float_array(blocks, "BlockDiag blocks", ndim=3)
        self._set(blocks=blocks)

    @property
    def nblocks(self) -> int:
        return self.blocks.shape[0]

    @property
    def block_shape(self) -> tuple[int, int]:
        _, q, p = self.blocks.shape
        return (q, p)

    @property
    def shape(self) -> tuple[int, int]:
        b, q, p = self.blocks.shape
        return (b * q, b * p)


def _is_list(blocks: Any) -> bool:
    return isinstance(blocks, Sequence) and not isinstance(blocks, (str, bytes))


def _stackable(blocks: Sequence[Any]) -> bool:
    """Whether `blocks` are 2-D arrays of one shape, backend, dtype and device."""
    if not blocks or not all(is_array(b) for b in blocks):
        return False
    first = blocks[0]
    backend = backend_of(first)
    return all(
        len(b.shape) == 2
        and tuple(b.shape) == tuple(first.shape)
        and backend_of(b) is backend
        and b.dtype == first.dtype
        and backend.device(b) == backend.device(first)
        for b in blocks
    )


def _wrap(blocks: Array) -> BlockDiag:
    op = object.__new__(BlockDiag)
    op._set(blocks=blocks)
    return op


@dispatch
def matmat(A: BlockDiag, X: object):
    backend = A.backend
    b, q, p = A.blocks.shape
    k = X.shape[1]
    Y = backend.block_matmul(A.blocks, backend.reshape(X, (b, p, k)))
    return backend.reshape(Y, (b * q, k))


@dispatch
def rmatmat(X: object, A: BlockDiag):
    backend = A.backend
    b, q, p = A.blocks.shape
    rows = X.shape[0]
    # (rows, b, q) -> (b, rows, q) @ (b, q, p) -> (b, rows, p) -> (rows, b p)
    Xb = backend.permute_dims(backend.reshape(X, (rows, b, q)), (1, 0, 2))
    Y = backend.permute_dims(backend.block_matmul(Xb, A.blocks), (1, 0, 2))
    return backend.reshape(Y, (rows, b * p))


@dispatch
def to_dense(A: BlockDiag):
    backend = A.backend
    b, q, p = A.blocks.shape
    # D[i, :, j, :] = delta_ij B_i, written directly (no identity matmul).
    dense = backend.einsum("iqp,ij->iqjp", A.blocks, backend.eye(b, A.dtype, A.device))
    return backend.reshape(dense, (b * q, b * p))


@dispatch
def transpose(A: BlockDiag):
    return _wrap(A.backend.swap_last(A.blocks))


@dispatch
def adjoint(A: BlockDiag):
    return _wrap(A.backend.conj(A.backend.swap_last(A.blocks)))


def _square_blocks(A: BlockDiag, what: str) -> None:
    q, p = A.block_shape
    if q != p:
        raise ValueError(
            f"{what} of a BlockDiag needs square blocks, got {A.nblocks} blocks of shape "
            f"({q}, {p}); a block-diagonal matrix with non-square blocks is singular or non-square"
        )


def singular_blocks(blocks: Array, backend: Backend) -> list[int]:
    """The indices of the singular matrices in the batch `blocks` `(nb, p, p)` (a sync:
    called to word an error once an inverse or a solve has failed)."""
    sign, _ = backend.slogdet(blocks)
    return (backend.to_numpy(sign) == 0).nonzero()[0].tolist()


def _singular_block(A: BlockDiag, error: SingularOperatorError) -> SingularOperatorError:
    bad = singular_blocks(A.blocks, A.backend)
    where = f"block(s) {bad[:10]}" if bad else "a block"
    return SingularOperatorError(
        f"BlockDiag of shape {_checks.shape_str(A.shape)} is singular: {where} of shape "
        f"{_checks.shape_str(A.block_shape)} not invertible"
    )


@dispatch
def inv(A: BlockDiag):
    _square_blocks(A, "inv")
    try:
        return _wrap(A.backend.inv(A.blocks))
    except SingularOperatorError as e:
        raise _singular_block(A, e) from None


@dispatch
def pinv(A: BlockDiag):
    """The BlockDiag of the blocks' pseudo-inverses, any block shape: one batched thin SVD,
    `O(b q p min(q, p))`. Each block drops singular values below its own cutoff."""
    return _wrap(pinv_array(A.blocks))


@dispatch
def solve(A: BlockDiag, B: object):
    _square_blocks(A, "solve")
    backend = A.backend
    b, _, p = A.blocks.shape
    k = B.shape[1]
    try:
        Y = backend.solve(A.blocks, backend.reshape(B, (b, p, k)))
    except SingularOperatorError as e:
        raise _singular_block(A, e) from None
    return backend.reshape(Y, (b * p, k))


@dispatch
def slogdet(A: BlockDiag):
    _square_blocks(A, "slogdet")
    backend = A.backend
    sign, logabsdet = backend.slogdet(A.blocks)
    return backend.prod(sign), backend.sum(logabsdet)


@dispatch
def diag(A: BlockDiag):
    backend = A.backend
    q, p = A.block_shape
    if q != p:
        return backend.diagonal(to_dense(A))
    return backend.reshape(backend.diagonal(A.blocks), (-1,))


@dispatch
def eigh(A: BlockDiag):
    """The blocks' eigendecompositions (each block taken as Hermitian), batched:
    `O(b p^3)`; eigenvalues block by block, ascending within each block."""
    _square_blocks(A, "eigh")
    w, V = A.backend.eigh(A.blocks)
    return A.backend.reshape(w, (-1,)), _wrap(V)


@dispatch
def structured_eigh(A: BlockDiag):
    q, p = A.block_shape
    return q == p


@dispatch
def monomial(A: BlockDiag):
    return A.block_shape == (1, 1)


@dispatch
def monomial_eigenvectors(A: BlockDiag):
    return A.block_shape == (1, 1)  # 1 x 1 blocks of eigenvectors, each +-1


@dispatch
def abs_squared(A: BlockDiag):
    backend = A.backend
    return _wrap(backend.real(A.blocks * backend.conj(A.blocks)))


@dispatch
def matrix_function(A: BlockDiag, f: object):
    """`f` of each block, `V_b diag(f(w_b)) V_b^H`, batched: `O(b p^3)`, exact."""
    _square_blocks(A, "a matrix function")
    backend = A.backend
    w, V = backend.eigh(A.blocks)
    fw = f(backend, w)
    VH = backend.conj(backend.swap_last(V))
    if backend.is_complex(VH.dtype) and not backend.is_complex(fw.dtype):
        fw = backend.astype(fw, VH.dtype)
    return _wrap(backend.matmul(V * fw[:, None, :], VH))


@dispatch
def compose(A: BlockDiag, B: BlockDiag):
    if A.nblocks == B.nblocks:
        return _wrap(A.backend.block_matmul(A.blocks, B.blocks))
    return Product(A, B)


@dispatch
def project(W: object, structure: type[BlockDiag], *, nblocks: int):
    """The `nblocks` diagonal blocks of `W`: optimal (`O(size of the blocks)`).

    `W` of shape `(b q, b p)` gives blocks of shape `(q, p)`; entries off the block
    diagonal are fixed at zero, so keeping the others is the nearest.
    """
    m, n = W.shape
    b = _checks.size(nblocks, "project(W, BlockDiag): nblocks")
    if m % b or n % b:
        raise ValueError(
            f"project(W, BlockDiag): nblocks={b} must be a positive integer dividing both sides of W of shape "
            f"{_checks.shape_str(W.shape)}"
        )
    backend = backend_of(W)
    return BlockDiag(backend.einsum("iqip->iqp", backend.reshape(W, (b, m // b, b, n // b))))


@dispatch
def components(A: BlockDiag):
    return (Component(*A.blocks.shape, block_axes=(0,)),)


# -- the layer structure "blockdiag" (see structlin.structure) --------------------------------


def _layer_check(d_in: int, d_out: int, *, nblocks: int) -> dict[str, int]:
    if d_in % nblocks or d_out % nblocks:
        raise ValueError(
            f"blockdiag with nblocks={nblocks} needs d_in and d_out divisible by {nblocks}, got "
            f"d_in={d_in}, d_out={d_out}; pick a common divisor (Monarch pads instead)"
        )
    return {"nblocks": nblocks}


register_structure(
    Structure(
        "blockdiag",
        BlockDiag,
        lambda zeros, d_in, d_out, *, nblocks: BlockDiag(
            zeros(nblocks, d_out // nblocks, d_in // nblocks)
        ),
        options={"nblocks": 4},
        sizes=("nblocks",),
        check=_layer_check,
        doc_options="`nblocks` (4)",
        doc_operator="[`BlockDiag`][structlin.BlockDiag]",
        doc_parameters="`d_out d_in / b`",
    )
)
