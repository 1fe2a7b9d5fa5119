"""Monarch matrices: block-diagonal factors interleaved with stride permutations.

[`GeneralizedMonarch`][structlin.GeneralizedMonarch] is the general form
`P_c B_c ... P_1 B_1 P_0` (any number of factors, block sizes per factor), and
[`Monarch`][structlin.Monarch] the two-factor matrix of the Monarch paper in the
layout of its original code. Both are applied by one batched matmul per factor and
a reshape-transpose per permutation; their transpose and inverse are again of the
same form, and the Frobenius-optimal Monarch approximation of a dense matrix is a
batch of small truncated SVDs ([`project`][structlin.project]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from structlin import _checks, kernels, rules
from structlin._checks import dense_backend
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, Device, DType, backend_of, get_backend
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.product import Product
from structlin.expressions.spectral import dense_eigh
from structlin.operator import LinearOperator
from structlin.operators._random import Seed, mup_std, normal
from structlin.operators.block_diag import BlockDiag, singular_blocks
from structlin.operators.permutation import Permutation, stride_permute
from structlin.structure import Structure, register_structure

Stride = tuple[int, int] | None
"""A stride permutation `x -> x.reshape(rows, cols).T.reshape(-1)` as `(rows, cols)`; `None` is the identity."""

AxisPerm = tuple[tuple[int, ...], tuple[int, ...]]
"""An axis permutation `x -> x.reshape(dims).transpose(axes).reshape(-1)` as `(dims, axes)`.

The tensor transpositions of the order-`p` Monarch matrices (Fu et al. 2023): a stride
permutation is the two-axis case `((rows, cols), (1, 0))`, and is always written
`(rows, cols)`. Stored in a canonical form (axes of size 1 dropped, axes that stay
neighbours merged), so that equal permutations compare equal.
"""

Perm = Stride | AxisPerm
"""One permutation of a [`GeneralizedMonarch`][structlin.GeneralizedMonarch]: `None`, a
`Stride` `(rows, cols)` or an `AxisPerm` `(dims, axes)`."""

DEFAULT = "default"
"""`GeneralizedMonarch.perm_layout` of a two-factor matrix in the original code's layout,
`perms == default_perms(blocks[1].shape)`: what the Monarch kernels compute."""

TRANSPOSED = "transposed"
"""`GeneralizedMonarch.perm_layout` of the transpose of a `DEFAULT` one (its `.T`, `.H` and `.inv()`)."""


def default_perms(blkdiag2_shape: tuple[int, int, int]) -> tuple[Stride, Stride, Stride]:
    """The permutations `(P_in, P_mid, P_out)` of the original Monarch layout: `(None, (r, l), (l, s))`.

    `blkdiag2_shape = (l, s, r)` is the second factor's. The one place this layout
    is written: [`Monarch`][structlin.Monarch]'s default, the `DEFAULT` and
    `TRANSPOSED` layouts, and through them the kernels and `project` all read it.

    Examples:
        >>> from structlin.operators.monarch import default_perms
        >>> default_perms((4, 3, 2))
        (None, (2, 4), (4, 3))
    """
    l, s, r = blkdiag2_shape
    return (None, (r, l), (l, s))


def _layout_of(blocks: tuple[Array, ...], perms: tuple[Stride, ...]) -> str | None:
    """`DEFAULT`, `TRANSPOSED` or `None` (any other permutations), read once from the permutations."""
    if len(blocks) != 2:
        return None
    if perms == default_perms(tuple(blocks[1].shape)):
        return DEFAULT
    # The transpose of a default N has blocks (N.blkdiag2^T, N.blkdiag1^T) and N's
    # permutations reversed and transposed.
    nb, q, p = blocks[0].shape  # N.blkdiag2 = (nb, p, q)
    if perms == tuple(_transposed(s) for s in reversed(default_perms((nb, p, q)))):
        return TRANSPOSED
    return None


_FLIPPED = {DEFAULT: TRANSPOSED, TRANSPOSED: DEFAULT, None: None}


class GeneralizedMonarch(LinearOperator):
    """`M = S_out P_c B_c P_{c-1} ... P_1 B_1 P_0 S_in^T`: block-diagonal factors and stride permutations.

    - `B_i` is block-diagonal with `nb_i` equal blocks of shape `(q_i, p_i)`, stored
      as `blocks[i]` of shape `(nb_i, q_i, p_i)`; `B_1` acts first.
    - `P_i` is the stride permutation `perms[i] = (rows, cols)`, which maps a vector
      `x` to `x.reshape(rows, cols).T.reshape(-1)`, the identity for `None`, or an
      axis permutation `perms[i] = (dims, axes)`, which maps `x` to
      `x.reshape(dims).transpose(axes).reshape(-1)` (the tensor transpositions of the
      order-`p` Monarch matrices of Monarch Mixer; [`dft`][structlin.dft] with `p >= 3`
      factors ends with one).
    - `S_in^T` zero-pads the input from `d_in` to `N_in = nb_1 p_1` entries and
      `S_out` keeps the first `d_out` of the `N_out = nb_c q_c` outputs, when
      `shape = (d_out, d_in)` is smaller than `(N_out, N_in)`.

    This is the generalisation `prod_i P_i B_i` of the Monarch matrices
    (Dao et al. 2022); a [`Monarch`][structlin.Monarch] is the two-factor case and
    a product of `k` Monarch matrices (`Monarch^k`) is a `GeneralizedMonarch` with
    `2k` factors (`M1 @ M2` builds it). Costs, for `X` with `k` columns:

    - `M @ X`: `sum_i nb_i q_i p_i k` multiply-adds in `c` batched matmuls, plus one
      copy per permutation; no dense matrix is formed.
    - `M^T = S_in P_0^T B_1^T ... B_c^T P_c^T S_out^T` is of the same form (reversed
      factors, transposed blocks, inverse permutations), at no cost.
    - `M^{-1} = P_0^T B_1^{-1} P_1^T ... B_c^{-1} P_c^T` for square blocks and no
      padding: `sum_i nb_i p_i^3` to invert the blocks, the same form again.
    - `log|det M| = sum_i sum_blocks log|det B_i[b]|`; the sign includes the stride
      permutations' signs (`(-1)^{C(rows, 2) C(cols, 2)}` for a stride permutation).

    Padded operators, and square ones with rectangular blocks, fall back to the
    dense inverse and log-determinant.

    `perm_layout` says, once, whether the permutations are the original Monarch layout
    (`DEFAULT`, see `structlin.operators.monarch.default_perms`),
    its transpose (`TRANSPOSED`: what `.T`, `.H` and `.inv()` of a default one give)
    or neither (`None`). It is read from `perms` by the constructor and carried by
    every derived operator, so the kernels (chosen through
    [`structlin.kernels`][structlin.kernels]) never compare permutations.

    Args:
        blocks: Floating-point or complex arrays of shapes `(nb_i, q_i, p_i)`, in the
            order they are applied, all of one backend, dtype and device.
        perms: `len(blocks) + 1` permutations: `None`, stride permutations `(rows, cols)`
            or axis permutations `(dims, axes)`; `perms[0]` is applied before
            `blocks[0]`, `perms[-1]` after the last block.
        shape: `(d_out, d_in)`, at most `(N_out, N_in)`; defaults to `(N_out, N_in)`.

    Raises:
        ValueError: consecutive sizes do not chain (`nb_i q_i != nb_{i+1} p_{i+1}`),
            a permutation does not fit the size it acts on, or `shape` is too large.
        TypeError: non-floating blocks, or blocks of different backends or dtypes.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> B = np.random.default_rng(0).standard_normal((2, 3, 3))
        >>> M = sl.GeneralizedMonarch([B, B], [None, (2, 3), None])
        >>> M.shape
        (6, 6)
    """

    _children = ("blocks",)
    _static = ("perms", "_shape", "perm_layout")

    blocks: tuple[Array, ...]
    perms: tuple[Stride, ...]
    perm_layout: str | None

    def __init__(
        self,
        blocks: Sequence[Array],
        perms: Sequence[Stride],
        shape: tuple[int, int] | None = None,
    ):
        blocks = tuple(blocks)
        if not blocks:
            raise ValueError(f"{type(self).__name__} needs at least one block-diagonal factor")
        blocks = tuple(
            _checks.float_array(b, f"{type(self).__name__} blocks[{i}]")[0]
            for i, b in enumerate(blocks)
        )
        for i, b in enumerate(blocks):
            if len(b.shape) != 3:
                raise ValueError(
                    f"{type(self).__name__} blocks[{i}] must have shape (nblocks, out_block, "
                    f"in_block), got {_checks.shape_str(b.shape)}"
                )
        _checks.same_backend(blocks, type(self).__name__)
        dtypes = {str(b.dtype) for b in blocks}
        if len(dtypes) > 1:
            raise TypeError(
                f"{type(self).__name__} blocks have different dtypes {sorted(dtypes)}; "
                "cast them to one dtype first"
            )
        if perms is None or isinstance(perms, str) or not hasattr(perms, "__len__"):
            raise ValueError(
                f"{type(self).__name__} perms must be a sequence of permutations: None, "
                f"(rows, cols) pairs or (dims, axes) axis permutations, got {perms!r}"
            )
        perms = tuple(
            normalize_perm(p, f"{type(self).__name__} perms[{i}]") for i, p in enumerate(perms)
        )
        if len(perms) != len(blocks) + 1:
            raise ValueError(
                f"{type(self).__name__} needs len(blocks) + 1 = {len(blocks) + 1} permutations "
                f"(one before each factor and one after the last), got {len(perms)}"
            )
        _check_chain(blocks, perms, type(self).__name__)
        full = (_out_size(blocks), _in_size(blocks))
        if shape is not None:
            if isinstance(shape, str) or len(shape) != 2:
                raise ValueError(
                    f"{type(self).__name__} shape must be a pair (d_out, d_in), got {shape!r}"
                )
            shape = (
                _checks.size(shape[0], f"{type(self).__name__} shape[0] (d_out)"),
                _checks.size(shape[1], f"{type(self).__name__} shape[1] (d_in)"),
            )
        shape = full if shape is None else shape
        if not (0 < shape[0] <= full[0] and 0 < shape[1] <= full[1]):
            raise ValueError(
                f"{type(self).__name__} shape {_checks.shape_str(shape)} must be positive and "
                f"at most the unpadded size {_checks.shape_str(full)} of its factors"
            )
        self._set(blocks=blocks, perms=perms, _shape=shape, perm_layout=_layout_of(blocks, perms))

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def padded(self) -> bool:
        """Whether the input is zero-padded or the output truncated (`shape` below the factors' size)."""
        return self._shape != (_out_size(self.blocks), _in_size(self.blocks))

    @property
    def nfactors(self) -> int:
        return len(self.blocks)


def _in_size(blocks: Sequence[Array]) -> int:
    nb, _, p = blocks[0].shape
    return nb * p


def _out_size(blocks: Sequence[Array]) -> int:
    nb, q, _ = blocks[-1].shape
    return nb * q


def _check_chain(blocks: tuple[Array, ...], perms: tuple[Stride, ...], what: str) -> None:
    size = _in_size(blocks)
    for i, b in enumerate(blocks):
        _check_perm(perms[i], size, f"{what} perms[{i}]")
        nb, q, p = b.shape
        if nb * p != size:
            raise ValueError(
                f"{what}: blocks[{i}] of shape {_checks.shape_str(b.shape)} acts on "
                f"{nb} * {p} = {nb * p} entries but the previous factor gives {size}; "
                "consecutive factors need nblocks_i * out_block_i == nblocks_{i+1} * in_block_{i+1}"
            )
        size = nb * q
    _check_perm(perms[-1], size, f"{what} perms[{len(blocks)}]")


def _check_perm(perm: Perm, size: int, what: str) -> None:
    if perm is None:
        return
    have = _perm_size(perm)
    if have != size and isinstance(perm[0], int):
        raise ValueError(
            f"{what} = {perm} must be (rows, cols) with rows * cols == {size}, the size of "
            "the vector it permutes"
        )
    if have != size:
        raise ValueError(
            f"{what} = {perm} must be (dims, axes) with prod(dims) == {size}, the size of "
            "the vector it permutes"
        )


def _perm_size(perm: Perm) -> int:
    dims = perm if isinstance(perm[0], int) else perm[0]
    return math.prod(dims)


def normalize_perm(perm: object, what: str = "perm") -> Perm:
    """`perm` checked and in canonical form: `None`, `(rows, cols)` or `(dims, axes)`.

    Examples:
        >>> from structlin.operators.monarch import normalize_perm
        >>> normalize_perm(((2, 1, 3), (2, 1, 0)))  # a size-1 axis dropped: a stride
        (2, 3)
    """
    if perm is None:
        return None
    if isinstance(perm, str) or not hasattr(perm, "__len__") or len(perm) != 2:
        raise ValueError(
            f"{what} must be None, one of the (rows, cols) pairs of a stride permutation or "
            f"an axis permutation (dims, axes), got {perm!r}"
        )
    first, second = perm
    if np.ndim(first) == 0:  # (rows, cols)
        return (_checks.size(first, f"{what} rows"), _checks.size(second, f"{what} cols"))
    dims = tuple(_checks.size(d, f"{what} dims[{i}]") for i, d in enumerate(first))
    axes = tuple(second) if np.ndim(second) == 1 else None
    if axes is None or sorted(int(a) for a in axes) != list(range(len(dims))):
        raise ValueError(
            f"{what}: axes {second!r} must be a permutation of range({len(dims)}) for dims {dims}"
        )
    return _canonical(dims, tuple(int(a) for a in axes))


@lru_cache(maxsize=256)
def _canonical(dims: tuple[int, ...], axes: tuple[int, ...]) -> Perm:
    """The axis permutation `(dims, axes)` with axes of size 1 dropped and neighbours merged."""
    kept = [a for a in axes if dims[a] > 1]
    rank = {a: i for i, a in enumerate(sorted(kept))}
    dims = tuple(dims[a] for a in sorted(kept))
    axes = tuple(rank[a] for a in kept)
    # Runs of output axes that are consecutive input axes move together: merge them.
    runs: list[list[int]] = []
    for a in axes:
        if runs and runs[-1][-1] + 1 == a:
            runs[-1].append(a)
        else:
            runs.append([a])
    by_start = sorted(range(len(runs)), key=lambda i: runs[i][0])
    merged = tuple(math.prod(dims[a] for a in runs[i]) for i in by_start)
    order = {i: j for j, i in enumerate(by_start)}
    out = tuple(order[i] for i in range(len(runs)))
    if len(out) <= 1:
        return None
    if len(out) == 2:
        return merged  # out == (1, 0): the stride permutation (rows, cols)
    return (merged, out)


def axis_form(perm: Perm) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A stride or axis permutation (not `None`) as `(dims, axes)`."""
    return (perm, (1, 0)) if isinstance(perm[0], int) else perm


def _wrap(
    cls: type,
    blocks: tuple[Array, ...],
    perms: tuple[Stride, ...],
    shape: tuple[int, int],
    layout: str | None,
):
    op = object.__new__(cls)
    op._set(blocks=blocks, perms=perms, _shape=shape, perm_layout=layout)
    return op


def _transposed(perm: Perm) -> Perm:
    """The inverse (and transpose) of a permutation."""
    if perm is None:
        return None
    if isinstance(perm[0], int):
        return (perm[1], perm[0])
    dims, axes = perm
    return _canonical(tuple(dims[a] for a in axes), tuple(int(i) for i in np.argsort(axes)))


def _permute(X: Array, perm: Perm, backend: Backend) -> Array:
    """`P X` for the columns of `X`."""
    if perm is None:
        return X
    if isinstance(perm[0], int):
        return stride_permute(X, perm[0], perm[1], backend, axis=0)
    dims, axes = perm
    n, k = X.shape
    Y = backend.permute_dims(backend.reshape(X, (*dims, k)), (*axes, len(dims)))
    return backend.reshape(Y, (n, k))


def _permute_rows(X: Array, perm: Perm, backend: Backend) -> Array:
    """`X P` for the rows of `X`: each row `x` becomes `P^T x`."""
    if perm is None:
        return X
    if isinstance(perm[0], int):
        return stride_permute(X, perm[1], perm[0], backend, axis=-1)
    dims, axes = _transposed(perm)
    rows, n = X.shape
    Y = backend.permute_dims(backend.reshape(X, (rows, *dims)), (0, *(a + 1 for a in axes)))
    return backend.reshape(Y, (rows, n))


def perm_indices(perm: Perm, size: int) -> np.ndarray:
    """`src` with `(P x)[i] = x[src[i]]` for the permutation `perm` of `size` entries.

    Examples:
        >>> from structlin.operators.monarch import perm_indices
        >>> perm_indices((2, 3), 6).tolist()
        [0, 3, 1, 4, 2, 5]
    """
    if perm is None:
        return np.arange(size)
    dims, axes = axis_form(perm)
    return np.arange(size).reshape(dims).transpose(axes).reshape(-1)


def _apply_blocks(blocks: Array, X: Array, backend: Backend) -> Array:
    nb, q, p = blocks.shape
    k = X.shape[1]
    return backend.reshape(
        backend.block_matmul(blocks, backend.reshape(X, (nb, p, k))), (nb * q, k)
    )


# The two products of a default-layout Monarch `M = Monarch(blkdiag1, blkdiag2)` (unpadded:
# the rules pad and truncate around them) that kernels may compute; `BTT` with two cores
# is such an `M` and takes them too. `structlin.kernels` picks a kernel by backend.
MONARCH_COLS = kernels.declare_product(
    "monarch: M @ X",
    "(X (k p, n), blkdiag1 (k, q, p), blkdiag2 (l, s, r)) -> M X (l s, n), M in the default layout",
)
MONARCH_ROWS = kernels.declare_product(
    "monarch: X @ M^T",
    "(X (n, k p), blkdiag1 (k, q, p), blkdiag2 (l, s, r)) -> X M^T (n, l s), M in the default layout",
)


def _real_torch(X: Array, blkdiag1: Array, blkdiag2: Array) -> bool:
    return not (X.dtype.is_complex or blkdiag1.dtype.is_complex)


kernels.register_kernel(
    MONARCH_COLS,
    "torch",
    "structlin.operators._monarch_torch:monarch_times_cols",
    applies=_real_torch,
    name="monarch-torch-cols",
)
kernels.register_kernel(
    MONARCH_ROWS,
    "torch",
    "structlin.operators._monarch_torch:rows_times_monarch_t",
    applies=_real_torch,
    name="monarch-torch-rows",
)


def by_kernel(
    product: str, backend: Backend, X: Array, blkdiag1: Array, blkdiag2: Array
) -> Array | None:
    """`product` of the default-layout `Monarch(blkdiag1, blkdiag2)` and `X` (arrays of
    `backend`) by a registered kernel, or `None` when none applies (the caller then takes
    its generic path)."""
    kernel = kernels.select(product, backend.name, X, blkdiag1, blkdiag2)
    return None if kernel is None else kernel(X, blkdiag1, blkdiag2)


def _untransposed_blocks(A: GeneralizedMonarch, backend: Backend) -> tuple[Array, Array]:
    """`(blkdiag1, blkdiag2)` of the default-layout `N` with `A = N^T` (`A.perm_layout == TRANSPOSED`)."""
    return backend.swap_last(A.blocks[1]), backend.swap_last(A.blocks[0])


def kernel_for(A: GeneralizedMonarch, X: Array, side: str = "rows") -> kernels.Kernel | None:
    """The kernel `X @ A` (`side="rows"`, `X` of shape `(n, A.shape[0])`) or `A @ X`
    (`side="cols"`) would run, or `None` for the generic path.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin.operators.monarch import kernel_for
        >>> M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
        >>> kernel_for(M.T, np.ones((8, 16))) is None  # NumPy has no Monarch kernel
        True
    """
    backend = backend_of(X)
    if side == "cols" and A.perm_layout == DEFAULT:
        X = backend.pad_to(X, 0, _in_size(A.blocks))
        return kernels.select(MONARCH_COLS, backend.name, X, *A.blocks)
    if side == "rows" and A.perm_layout == TRANSPOSED:
        X = backend.pad_to(X, 1, _out_size(A.blocks))
        return kernels.select(MONARCH_ROWS, backend.name, X, *_untransposed_blocks(A, backend))
    if side not in ("rows", "cols"):
        raise ValueError(f"kernel_for: side must be 'rows' or 'cols', got {side!r}")
    return None


@dispatch
def matmat(A: GeneralizedMonarch, X: object):
    return apply(A, X)


def apply(A: GeneralizedMonarch, X: Array) -> Array:
    """`A @ X` for a 2-D `X` of `A`'s backend: the `matmat` rule without the dispatch, for
    rules of other operators that apply a Monarch matrix (the Monarch DFT of a circulant)."""
    backend = backend_of(X)
    X = backend.pad_to(X, 0, _in_size(A.blocks))
    Y = by_kernel(MONARCH_COLS, backend, X, *A.blocks) if A.perm_layout == DEFAULT else None
    if Y is None:
        Y = X
        for perm, blocks in zip(A.perms, A.blocks, strict=False):
            Y = _apply_blocks(blocks, _permute(Y, perm, backend), backend)
        Y = _permute(Y, A.perms[-1], backend)
    return Y if Y.shape[0] == A.shape[0] else Y[: A.shape[0]]


@dispatch
def rmatmat(X: object, A: GeneralizedMonarch):
    # Rows of X times M, factor by factor from the output side: X P = (P^T X^T)^T and
    # X B = batched row-vector products, so no transpose of X as a whole is needed.
    backend = backend_of(X)
    rows = X.shape[0]
    X = backend.pad_to(X, 1, _out_size(A.blocks))
    # X N^T for a default-layout N: the layers' hot path.
    Y = None
    if A.perm_layout == TRANSPOSED:
        Y = by_kernel(MONARCH_ROWS, backend, X, *_untransposed_blocks(A, backend))
    if Y is None:
        Y = X
        for i in reversed(range(A.nfactors)):
            Y = _permute_rows(Y, A.perms[i + 1], backend)
            nb, q, p = A.blocks[i].shape
            Yb = backend.permute_dims(backend.reshape(Y, (rows, nb, q)), (1, 0, 2))
            Y = backend.reshape(
                backend.permute_dims(backend.block_matmul(Yb, A.blocks[i]), (1, 0, 2)),
                (rows, nb * p),
            )
        Y = _permute_rows(Y, A.perms[0], backend)
    return Y if Y.shape[1] == A.shape[1] else Y[:, : A.shape[1]]


def _reversed(A: GeneralizedMonarch, blocks: tuple[Array, ...], shape: tuple[int, int]):
    """`A`'s class with `blocks` and `A`'s permutations reversed and transposed: the form of
    `A^T`, `A^H` and `A^{-1}`, each a `TRANSPOSED` layout of a `DEFAULT` one and back."""
    perms = tuple(_transposed(p) for p in reversed(A.perms))
    return _wrap(type(A), blocks, perms, shape, _FLIPPED[A.perm_layout])


@dispatch
def transpose(A: GeneralizedMonarch):
    backend = A.backend
    blocks = tuple(backend.swap_last(b) for b in reversed(A.blocks))
    return _reversed(A, blocks, (A.shape[1], A.shape[0]))


@dispatch
def adjoint(A: GeneralizedMonarch):
    backend = A.backend
    blocks = tuple(backend.conj(backend.swap_last(b)) for b in reversed(A.blocks))
    return _reversed(A, blocks, (A.shape[1], A.shape[0]))


def _square_unpadded(A: GeneralizedMonarch) -> bool:
    return not A.padded and all(b.shape[1] == b.shape[2] for b in A.blocks)


def _singular_factor(A: GeneralizedMonarch) -> SingularOperatorError:
    for i, b in enumerate(A.blocks):
        bad = singular_blocks(b, A.backend)
        if bad:
            return SingularOperatorError(
                f"{type(A).__name__} of shape {_checks.shape_str(A.shape)} is singular: "
                f"blocks[{i}] has singular block(s) {bad[:10]} of shape "
                f"{_checks.shape_str(b.shape[1:])}"
            )
    return SingularOperatorError(
        f"{type(A).__name__} of shape {_checks.shape_str(A.shape)} is singular"
    )


@dispatch
def inv(A: GeneralizedMonarch):
    if not _square_unpadded(A):
        from structlin.expressions.inverse import Inverse

        return Inverse(A)
    backend = A.backend
    try:
        blocks = tuple(backend.inv(b) for b in reversed(A.blocks))
    except SingularOperatorError:
        raise _singular_factor(A) from None
    return _reversed(A, blocks, A.shape)


@dispatch
def solve(A: GeneralizedMonarch, B: object):
    if not _square_unpadded(A):
        return dense_backend(A)[0].solve(rules.to_dense(A), B)
    backend = A.backend
    n = A.shape[0]
    B = _permute(B, _transposed(A.perms[-1]), backend)
    for i in reversed(range(A.nfactors)):
        nb, _, p = A.blocks[i].shape
        k = B.shape[1]
        try:
            B = backend.solve(A.blocks[i], backend.reshape(B, (nb, p, k)))
        except SingularOperatorError:
            raise _singular_factor(A) from None
        B = _permute(backend.reshape(B, (n, k)), _transposed(A.perms[i]), backend)
    return B


@lru_cache(maxsize=64)
def _stride_sign(perm: Perm) -> int:
    if perm is None:
        return 1
    if isinstance(perm[0], int):
        rows, cols = perm
        return -1 if (rows * (rows - 1) // 2) * (cols * (cols - 1) // 2) % 2 else 1
    # An axis permutation: (-1)^(n - #cycles).
    src = perm_indices(perm, _perm_size(perm))
    seen = np.zeros(len(src), dtype=bool)
    cycles = 0
    for start in range(len(src)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i] = True
                i = src[i]
    return -1 if (len(src) - cycles) % 2 else 1


@dispatch
def slogdet(A: GeneralizedMonarch):
    if not _square_unpadded(A):
        return dense_backend(A)[0].slogdet(rules.to_dense(A))
    backend = A.backend
    sign = math.prod(
        [_stride_sign(p) for p in A.perms]
    )  # a list: dynamo traces no generator into prod
    logabsdet = 0
    for b in A.blocks:
        s, ld = backend.slogdet(b)
        sign = sign * backend.prod(s)
        logabsdet = logabsdet + backend.sum(ld)
    return sign, logabsdet


def _merge(outer: Perm, inner: Perm) -> tuple[bool, Perm]:
    """`outer @ inner` as one stride permutation, if it is one (identity or a single stride)."""
    if outer is None or inner is None:
        return True, inner if outer is None else outer
    if outer == _transposed(inner):
        return True, None
    return False, None


@dispatch
def compose(A: GeneralizedMonarch, B: GeneralizedMonarch):
    """`Monarch^k`: chaining two unpadded generalised Monarch matrices gives one with all factors."""
    ok, junction = _merge(A.perms[0], B.perms[-1])
    if ok and not A.padded and not B.padded:
        blocks = B.blocks + A.blocks
        perms = (*B.perms[:-1], junction, *A.perms[1:])
        return _wrap(
            GeneralizedMonarch, blocks, perms, (A.shape[0], B.shape[1]), _layout_of(blocks, perms)
        )
    from structlin.expressions.product import Product

    return Product(A, B)


class Monarch(GeneralizedMonarch):
    """A Monarch matrix `M = P_out B_2 P_mid B_1` (Dao et al. 2022) in the original code's layout.

    In full, `M = S_out P_out B_2 P_mid B_1 S_in^T` with the padding `S` described below.

    `blkdiag1` of shape `(k, q, p)` is applied first to the input of size `k p`,
    `blkdiag2` of shape `(l, s, r)` second, with `l r == k q`; between them the
    intermediate vector is viewed as `(r, l)` and transposed (`P_mid`), and the
    output, viewed as `(l, s)`, is transposed to `(s, l)` (`P_out`). As an index
    identity (the 4-D view of the projection):

        M[(ss, ll), (kk, pp)] = sum_{t : t // q = kk, t % l = ll} blkdiag2[ll, ss, t // l] * blkdiag1[kk, t % q, pp]

    so each `(s, p)` block `(ll, kk)` of `M` has rank at most `#{t}`, which is
    `q / l` when `l` divides `q` (the rank-`r` Monarch of "Compute Better Spent";
    a 2-core [`BTT`][structlin.BTT] is the same matrix). With `nblocks` blocks on
    both sides of a square `n x n` matrix (`k = l = nblocks`, `p = q = r = s = n / nblocks`)
    this is the `M = P^T L P R` of the paper with `2 n^2 / nblocks` parameters and
    as many multiply-adds per vector.

    Sizes that do not divide are padded: `shape = (d_out, d_in)` below `(l s, k p)`
    zero-pads the input and truncates the output, as the original `MonarchLinear`
    does; [`Monarch.layout`][structlin.Monarch.layout] gives its block shapes for
    `(d_in, d_out, nblocks)`.

    Every rule of [`GeneralizedMonarch`][structlin.GeneralizedMonarch] applies. In
    particular `M^T` and `M^H` are `Monarch` operators of transposed blocks with the
    permutations swapped (`perms` then differ from the default layout), and
    `M^{-1} = B_1^{-1} P_mid^T B_2^{-1} P_out^T` is a `Monarch` of the block inverses
    (`O(k p^3 + l r^3)` to build, `O(n (p + r))` per vector).

    `isinstance(op, Monarch)` means "two block-diagonal factors and three stride
    permutations", not "the default layout": `M.T`, `M.H`, `M.inv()` and
    `Monarch(..., perms=...)` (as [`dft`][structlin.dft] builds) are `Monarch`
    operators too. The layout is `op.perm_layout`: `"default"` for the original
    layout (`structlin.operators.monarch.default_perms`),
    `"transposed"` for the transpose of one (`M.T`, `M.H`, `M.inv()` of a default
    `M`), `None` otherwise. Code that needs the original layout (the kernels,
    exporting to the original `MonarchLinear`) tests `op.perm_layout == "default"`,
    never the permutations.

    Args:
        blkdiag1: Array of shape `(k, q, p)`, applied first.
        blkdiag2: Array of shape `(l, s, r)` with `l r == k q`, applied second.
        shape: `(d_out, d_in)` for padded sizes; defaults to `(l s, k p)`.
        perms: The three stride permutations `(P_in, P_mid, P_out)`, each `(rows, cols)`
            or `None`; defaults to the original layout `(None, (r, l), (l, s))`
            (`structlin.operators.monarch.default_perms`).
            [`dft`][structlin.dft] uses `P_in = (a, b)`; transposes swap them.

    Raises:
        ValueError: `l r != k q`, or as for `GeneralizedMonarch`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
        >>> x = np.ones(16)
        >>> bool(np.allclose(M.inv() @ (M @ x), x))
        True
    """

    def __init__(
        self,
        blkdiag1: Array,
        blkdiag2: Array,
        shape: tuple[int, int] | None = None,
        perms: Sequence[Stride] | None = None,
    ):
        shapes = [tuple(getattr(b, "shape", ())) for b in (blkdiag1, blkdiag2)]
        if all(len(shape) == 3 for shape in shapes):  # else the base class names the problem
            (k, q, _), (l, s, r) = shapes
            if l * r != k * q:
                raise ValueError(
                    f"Monarch needs l * r == k * q for blkdiag1 (k, q, p) = "
                    f"{_checks.shape_str(shapes[0])} and blkdiag2 (l, s, r) = "
                    f"{_checks.shape_str(shapes[1])}: {l} * {r} != {k} * {q}; the second "
                    "factor must consume exactly the first one's outputs"
                )
            if perms is None:
                perms = default_perms((l, s, r))
        super().__init__((blkdiag1, blkdiag2), perms, shape)

    @property
    def blkdiag1(self) -> Array:
        """The first factor's blocks, `(k, q, p)`."""
        return self.blocks[0]

    @property
    def blkdiag2(self) -> Array:
        """The second factor's blocks, `(l, s, r)`."""
        return self.blocks[1]

    @staticmethod
    def layout(d_in: int, d_out: int, nblocks: int) -> tuple[tuple[int, int, int], ...]:
        """Block shapes `((k, q, p), (l, s, r))` of a `d_out x d_in` Monarch with `nblocks` blocks.

        As in the original `MonarchLinear`: `p = ceil(d_in / nblocks)`,
        `s = ceil(d_out / nblocks)`, `k = l = nblocks`, and the middle size
        `q = r = min(p, s)` so that the smaller side sets the rank. Any positive
        `nblocks` is taken, as there: more blocks than `min(d_in, d_out)` give blocks of
        width 1 and pad the input (or output) up to `nblocks` entries.
        """
        d_in = _checks.size(d_in, "Monarch.layout: d_in")
        d_out = _checks.size(d_out, "Monarch.layout: d_out")
        nblocks = _checks.size(nblocks, "Monarch.layout: nblocks")
        p = -(-d_in // nblocks)
        s = -(-d_out // nblocks)
        mid = p if nblocks * p < nblocks * s else s
        return ((nblocks, mid, p), (nblocks, s, mid))

    @classmethod
    def random(
        cls,
        d_in: int,
        d_out: int,
        nblocks: int = 4,
        *,
        rng: Seed = None,
        dtype: DType = None,
        backend: Backend | str = "numpy",
        device: Device = None,
    ) -> Monarch:
        """A random `d_out x d_in` Monarch with the blocks of [`layout`][structlin.Monarch.layout].

        Each block is a dense component with entries `N(0, sigma^2)`,
        `sigma = sqrt(min(fan_in, fan_out)) / fan_in` (the structure-aware muP
        initialisation of "Compute Better Spent"), so `M` has spectral norm of order
        `sqrt(d_out / d_in)` like a well-initialised dense layer.

        Args:
            d_in: Input size (columns).
            d_out: Output size (rows).
            nblocks: Blocks per factor (any positive number; see `layout`).
            rng: NumPy generator or seed; a seed gives the same blocks on every backend.
            dtype: The blocks' dtype (the backend's default float if `None`).
            backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
            device: Where to put the blocks.

        Raises:
            ValueError: non-positive sizes.
        """
        (k, q, p), (l, s, r) = cls.layout(d_in, d_out, nblocks)
        if isinstance(backend, str):
            backend = get_backend(backend)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        b1 = normal((k, q, p), mup_std(p, q), rng=rng, dtype=dtype, backend=backend, device=device)
        b2 = normal((l, s, r), mup_std(r, s), rng=rng, dtype=dtype, backend=backend, device=device)
        return cls(b1, b2, shape=(d_out, d_in))


@dispatch
def project(
    W: object,
    structure: type[Monarch],
    *,
    nblocks: int | None = None,
    blocks: Sequence[tuple[int, int, int]] | None = None,
):
    """The Frobenius-nearest [`Monarch`][structlin.Monarch] in the default layout: optimal.

    Give either `nblocks` (block shapes from [`Monarch.layout`][structlin.Monarch.layout])
    or `blocks = ((k, q, p), (l, s, r))`. By the index identity in the `Monarch`
    docstring, `||W - M||_F^2` splits into independent terms, one per `(s, p)`
    block `(ll, kk)` of `W`, each a best-rank-`#{t}` problem over disjoint
    parameters; one batched SVD of the `k l` blocks solves them all (Eckart-Young),
    `O(k l s p min(s, p))`. The leading singular vectors each pair needs are
    gathered into the factors with index arrays computed from the sizes. Padded
    rows and columns are zero in `W`'s padding, which keeps the solution optimal
    for the unpadded `W`.
    """
    d_out, d_in = W.shape
    if (nblocks is None) == (blocks is None):
        raise TypeError(
            "project(W, Monarch, ...) needs exactly one of nblocks=... or "
            "blocks=((k, q, p), (l, s, r))"
        )
    (k, q, p), (l, s, r) = (
        Monarch.layout(d_in, d_out, nblocks) if blocks is None else _block_shapes(blocks)
    )
    if l * r != k * q or d_in > k * p or d_out > l * s:
        raise ValueError(
            f"project(W, Monarch): blocks (k, q, p) = {(k, q, p)}, (l, s, r) = {(l, s, r)} do "
            f"not fit W of shape {_checks.shape_str(W.shape)}: need l * r == k * q, "
            "d_in <= k * p and d_out <= l * s"
        )
    backend = backend_of(W)
    # Pad to (l s, k p) and view as a (k, l) batch of (s, p) blocks: W4[kk, ll, ss, pp].
    Wp = backend.pad_to(backend.pad_to(W, 0, l * s), 1, k * p)
    W4 = backend.permute_dims(backend.reshape(Wp, (s, l, k, p)), (2, 1, 0, 3))
    U, S, Vh = backend.svd(W4)
    *index, c = _scatter_index(k, q, l)
    kk, ll, slot = (backend.asarray(i, device=backend.device(W)) for i in index)
    # A pair can take more triplets (c) than its block has (min(s, p)): zero ones.
    U, S, Vh = backend.pad_to(U, 3, c), backend.pad_to(S, 2, c), backend.pad_to(Vh, 2, c)
    # Gather each t's triplet straight into the factors' layout: work the size of the
    # factors, not of the SVD (a pair uses one of its min(s, p) triplets when l = q).
    # The SVD's outputs keep W4's strides, so merging their (k, l) axes would copy them.
    root = backend.astype(S[kk, ll, slot] ** 0.5, W.dtype)[:, None]
    blkdiag1 = backend.reshape(Vh[kk, ll, slot] * root, (k, q, p))
    taken = U[kk, ll, :, slot] * root  # rows t = rr l + ll
    blkdiag2 = backend.permute_dims(backend.reshape(taken, (k * q // l, l, s)), (1, 2, 0))
    return Monarch(blkdiag1, blkdiag2, shape=(d_out, d_in))


def _block_shapes(blocks: object) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """`blocks = ((k, q, p), (l, s, r))` of `project(W, Monarch, blocks=...)`, checked."""
    if (
        isinstance(blocks, str)
        or not hasattr(blocks, "__len__")
        or len(blocks) != 2
        or any(isinstance(b, str) or not hasattr(b, "__len__") or len(b) != 3 for b in blocks)
    ):
        raise ValueError(
            f"project(W, Monarch): blocks must be ((k, q, p), (l, s, r)), got {blocks!r}"
        )
    (k, q, p), (l, s, r) = (
        tuple(_checks.size(v, f"project(W, Monarch): blocks[{i}][{j}]") for j, v in enumerate(b))
        for i, b in enumerate(blocks)
    )
    return (k, q, p), (l, s, r)


@lru_cache(maxsize=64)
def _scatter_index(k: int, q: int, l: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For each intermediate index `t`: its block pair `(kk, ll)` and triplet slot; and the most slots.

    `t` couples input block `kk = t // q` to output block `ll = t % l`; the `a`-th
    such `t` of a pair takes the pair's `a`-th singular triplet (slot `a`). The
    most slots of any pair bounds the pairs' ranks.
    """
    t = np.arange(k * q)
    pair = (t // q) * l + t % l
    order = np.argsort(pair, kind="stable")
    starts = np.searchsorted(pair[order], pair[order])
    slot = np.empty_like(t)
    slot[order] = np.arange(len(t)) - starts
    return t // q, t % l, slot, int(slot.max()) + 1


@dispatch
def components(A: GeneralizedMonarch):
    # Factor B_i is nb_i blocks of shape (q_i, p_i); B_1 reads the input, B_c writes the output.
    c = len(A.blocks)
    return tuple(
        Component(*block.shape, first=i == 0, last=i == c - 1, block_axes=(0,))
        for i, block in enumerate(A.blocks)
    )


# -- the layer structure "monarch" (see structlin.structure) ----------------------------------


def _layer_template(zeros: Any, d_in: int, d_out: int, *, nblocks: int) -> Monarch:
    first, second = Monarch.layout(d_in, d_out, nblocks)
    return Monarch(zeros(*first), zeros(*second), shape=(d_out, d_in))


register_structure(
    Structure(
        "monarch",
        Monarch,
        _layer_template,
        options={"nblocks": 4},
        sizes=("nblocks",),
        project_options=lambda d_in, d_out, *, nblocks: {
            "blocks": Monarch.layout(d_in, d_out, nblocks)
        },
        layout=Monarch.layout,
        doc_options="`nblocks` (4)",
        doc_operator="[`Monarch`][structlin.Monarch] in [`layout`][structlin.Monarch.layout]",
        doc_parameters="about `2 d^2 / b`",
    )
)


# -- eigh: a Monarch matrix that is a permuted block-diagonal one --------------------------------
# An eigendecomposition survives only similarity, M = S^{-1} C S. A product of block-diagonal
# factors and permutations is similar to a block-diagonal C by a permutation exactly when
# (read from the types, the block shapes and the permutations, never from values):
#
# - it is unpadded, every block is square, and at most one factor j has blocks larger than
#   1 x 1 (the others are diagonal: `(nb, 1, 1)` blocks); a diagonal factor moves through a
#   permutation as another diagonal (P D = (P D P^T) P), so
#   M = D_L Pi_out B_j D_R Pi_in, with Pi_in the permutations before factor j and Pi_out those
#   after it;
# - and Pi_out Pi_in = I. Then M = Pi_in^T C Pi_in with C = (Pi_in D_L Pi_in^T) B_j D_R,
#   block-diagonal with B_j's blocks, and M is Hermitian exactly when C's blocks are.
#
# That covers `GeneralizedMonarch([B], [P, P^T])` (a symmetric block-diagonal matrix in a
# permuted basis) and a default-layout `Monarch` with a diagonal first factor and square
# second blocks (`P^T B_2 P D = P^T (B_2 D') P`). A Monarch with two dense factors,
# `P^T L P R`, is a product of two block-diagonal matrices in different bases: even when
# symmetric it has no eigendecomposition of that form, and takes the dense one.


def _diagonal_factor(block_shape: tuple[int, int, int]) -> bool:
    return block_shape[1] == block_shape[2] == 1


def _track(src: np.ndarray, perm: Perm) -> tuple[np.ndarray, np.ndarray]:
    """`src` after one more permutation, and the gather that moves a diagonal scaling with it."""
    step = perm_indices(perm, src.shape[0])
    return src[step], step


@lru_cache(maxsize=64)
def _block_diagonal_similarity(
    shapes: tuple[tuple[int, int, int], ...], perms: tuple[Perm, ...], padded: bool
) -> tuple[int, np.ndarray] | None:
    """`(j, src_in)` with `M = Pi_in^T C Pi_in` where `C` is block-diagonal with factor `j`'s
    blocks and `(Pi_in x)[i] = x[src_in[i]]`; `None` if `M` is not of that form (see above)."""
    if padded or any(q != p for _, q, p in shapes):
        return None
    dense = [i for i, shape in enumerate(shapes) if not _diagonal_factor(shape)]
    if len(dense) > 1:
        return None
    j = dense[0] if dense else 0
    n = shapes[0][0] * shapes[0][2]
    src_in = np.arange(n)
    for perm in perms[: j + 1]:
        src_in = _track(src_in, perm)[0]
    src_out = np.arange(n)
    for perm in perms[j + 1 :]:
        src_out = _track(src_out, perm)[0]
    if not np.array_equal(src_in[src_out], np.arange(n)):
        return None
    src_in.flags.writeable = False  # cached: shared by every caller
    return j, src_in


def block_diagonal_similarity(A: GeneralizedMonarch) -> tuple[int, np.ndarray] | None:
    """`(j, src_in)` if `A = Pi^T C Pi` for a permutation `Pi` and a block-diagonal `C` with
    factor `j`'s blocks, else `None`: from the block shapes and permutations alone."""
    shapes = tuple(tuple(int(s) for s in b.shape) for b in A.blocks)
    return _block_diagonal_similarity(shapes, A.perms, A.padded)


def _scaling(
    A: GeneralizedMonarch, factors: range, perms: Sequence[Perm], backend: Backend
) -> tuple[Array | None, np.ndarray]:
    """`(s, src)` with `perms[-1] B ... perms[0] = diag(s) Pi` over the diagonal `factors`
    (`s` `None` for no scaling) and `(Pi x)[i] = x[src[i]]`."""
    n = A.shape[0]
    src, scale = np.arange(n), None
    for k, i in enumerate(factors):
        src, step = _track(src, perms[k])
        if scale is not None:
            scale = backend.take(scale, backend.asarray(step, device=A.device), 0)
        d = backend.reshape(A.blocks[i], (-1,))
        scale = d if scale is None else d * scale
    src, step = _track(src, perms[len(factors)])
    if scale is not None:
        scale = backend.take(scale, backend.asarray(step, device=A.device), 0)
    return scale, src


def similar_block_diagonal(A: GeneralizedMonarch) -> tuple[Array, np.ndarray] | None:
    """`(blocks of C, src_in)` with `A = Pi_in^T C Pi_in`, `C` block-diagonal, where
    `block_diagonal_similarity`
    finds one; else `None`. `O(size of the blocks)`."""
    found = block_diagonal_similarity(A)
    if found is None:
        return None
    j, src_in = found
    backend = A.backend
    c = A.nfactors
    right, _ = _scaling(A, range(j), A.perms[: j + 1], backend)
    left, src_out = _scaling(A, range(j + 1, c), A.perms[j + 1 :], backend)
    nb, p, _ = A.blocks[j].shape
    blocks = A.blocks[j]
    if left is not None:
        # D_L Pi_out = Pi_out (Pi_out^T D_L Pi_out), and Pi_out^T = Pi_in.
        left = backend.take(left, backend.asarray(np.argsort(src_out), device=A.device), 0)
        blocks = backend.reshape(left, (nb, p, 1)) * blocks
    if right is not None:
        blocks = blocks * backend.reshape(right, (nb, 1, p))
    return blocks, src_in


@dispatch
def eigh(A: GeneralizedMonarch):
    """`(w, Pi^T V)` for a Monarch matrix `Pi^T C Pi` similar by a permutation to a
    block-diagonal `C` (each block taken as Hermitian): one diagonal-free factor, the others
    diagonal, and permutations that cancel around it (see `block_diagonal_similarity`).
    `V` is the BlockDiag of `C`'s blocks' eigenvectors: `O(nb p^3)`. Otherwise the dense
    eigendecomposition, `O(n^3)`."""
    found = similar_block_diagonal(A)
    if found is None:
        return dense_eigh(A)
    blocks, src_in = found
    backend = A.backend
    w, V = backend.eigh(blocks)
    vectors = BlockDiag(V)
    if not np.array_equal(src_in, np.arange(src_in.shape[0])):
        back = backend.asarray(np.argsort(src_in), device=A.device)  # Pi_in^T
        vectors = Product(Permutation(back, A.dtype), vectors)
    return backend.reshape(w, (-1,)), vectors


@dispatch
def structured_eigh(A: GeneralizedMonarch):
    return block_diagonal_similarity(A) is not None


@dispatch
def _exact_path(A: GeneralizedMonarch, operation: object):
    if operation == "eigh":
        return "dense" if block_diagonal_similarity(A) is None else "structured"
    return rules._exact_path.resolve(LinearOperator, object)(A, operation)
