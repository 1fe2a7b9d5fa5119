"""`LowRank`: a matrix stored as the product of two thin factors."""

from __future__ import annotations

import math

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array, backend_of
from structlin.component import Component
from structlin.errors import SingularOperatorError
from structlin.expressions.inverse import Inverse
from structlin.operator import LinearOperator
from structlin.rules import pinv_cutoff
from structlin.structure import Structure, register_structure


class LowRank(LinearOperator):
    """`A = U V` with `U` of shape `(m, r)` and `V` of shape `(r, n)`.

    `A @ X = U (V X)` costs `O((m + n) r k)`. `A^T = V^T U^T` stays low-rank.
    With `r < min(m, n)` a square `A` is singular: `inv`/`solve` raise
    [`SingularOperatorError`][structlin.SingularOperatorError] and `slogdet`
    returns `(0, -inf)`; otherwise they fall back to the dense `O(n^3)` rules.

    Args:
        U: Floating-point array of shape `(m, r)`.
        V: Floating-point array of shape `(r, n)`, same backend.

    Raises:
        TypeError: non-floating arrays or mixed backends.
        ValueError: non-2-D arrays or mismatched inner dimensions.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.LowRank(np.ones((3, 1)), np.ones((1, 2)))
        >>> A @ np.array([1.0, 2.0])
        array([3., 3., 3.])
    """

    _children = ("U", "V")

    U: Array
    V: Array

    def __init__(self, U: Array, V: Array):
        U, _ = _checks.float_array(U, "LowRank U", ndim=2)
        V, _ = _checks.float_array(V, "LowRank V", ndim=2)
        _checks.same_backend((U, V), "LowRank")
        if U.shape[1] != V.shape[0]:
            raise ValueError(
                f"LowRank needs U of shape (m, r) and V of shape (r, n), got U "
                f"{_checks.shape_str(U.shape)} and V {_checks.shape_str(V.shape)}"
            )
        self._set(U=U, V=V)

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.U.shape[0], self.V.shape[1])


def _wrap(U: Array, V: Array) -> LowRank:
    op = object.__new__(LowRank)
    op._set(U=U, V=V)
    return op


@dispatch
def matmat(A: LowRank, X: object):
    b = A.backend
    return b.matmul(A.U, b.matmul(A.V, X))


@dispatch
def rmatmat(X: object, A: LowRank):
    b = A.backend
    return b.matmul(b.matmul(X, A.U), A.V)


@dispatch
def to_dense(A: LowRank):
    return A.backend.matmul(A.U, A.V)


@dispatch
def transpose(A: LowRank):
    b = A.backend
    return _wrap(b.swap_last(A.V), b.swap_last(A.U))


@dispatch
def adjoint(A: LowRank):
    b = A.backend
    return _wrap(b.conj(b.swap_last(A.V)), b.conj(b.swap_last(A.U)))


def _rank_deficient(A: LowRank) -> bool:
    return A.rank < A.shape[0]


@dispatch
def inv(A: LowRank):
    if _rank_deficient(A):
        raise SingularOperatorError(
            f"LowRank of shape {_checks.shape_str(A.shape)} and rank {A.rank} < "
            f"{A.shape[0]} is singular; for a regularised inverse use (A + c * Identity).inv()"
        )
    return Inverse(A)


@dispatch
def solve(A: LowRank, B: object):
    inv(A)  # raises for a rank-deficient A
    return A.backend.solve(to_dense(A), B)


@dispatch
def pinv(A: LowRank):
    """`(U V)^+` as a LowRank of rank at most `r`, from thin SVDs of the factors only:
    `U = P_1 S_1 W_1^H` and `V = W_2 S_2 Q_2^H` give `U V = P_1 C Q_2^H` with the small
    core `C = S_1 W_1^H W_2 S_2`; with `C = P S W^H`, `(U V)^+ = (Q_2 W) S^+ (P_1 P)^H`.
    `O((m + n) r^2 + r^3)`, nothing `m x n`; singular values of `U V` below the cutoff of
    `numpy.linalg.lstsq` (`max(m, n) eps` times the largest) count as zero."""
    b = A.backend
    P1, S1, W1h = b.svd(A.U)
    W2, S2, Q2h = b.svd(A.V)
    core = b.matmul(S1[:, None] * W1h, W2 * S2[None, :])
    P, S, Wh = b.svd(core)
    m, n = A.shape
    if S.shape[0] == 0:
        return _wrap(b.zeros((n, 0), A.dtype, A.device), b.zeros((0, m), A.dtype, A.device))
    kept = pinv_cutoff(S.dtype, m, n) * S[:1] < S
    inverse = b.where(kept, 1 / b.where(kept, S, 1 + 0 * S), 0 * S)
    left = b.matmul(b.conj(b.swap_last(Q2h)), b.conj(b.swap_last(Wh)))  # Q_2 W, (n, k)
    right = b.conj(b.swap_last(b.matmul(P1, P)))  # (P_1 P)^H, (k, m)
    return _wrap(left * inverse[None, :], right)


@dispatch
def slogdet(A: LowRank):
    b = A.backend
    if _rank_deficient(A):
        zero = b.zeros((), A.dtype, A.device)
        return zero, b.abs(zero) - math.inf  # (0, -inf), as numpy.linalg.slogdet
    return b.slogdet(to_dense(A))


@dispatch
def diag(A: LowRank):
    b = A.backend
    d = min(A.shape)
    return b.sum(A.U[:d] * b.swap_last(A.V[:, :d]), 1)


@dispatch
def project(W: object, structure: type[LowRank], *, rank: int):
    """The truncated SVD `U_r sqrt(S_r), sqrt(S_r) V_r^H`: optimal (Eckart-Young), `O(m n min(m, n))`.

    A `rank` above `min(m, n)` is reached with zero columns, so the factors always
    have the requested shapes `(m, rank)` and `(rank, n)`.
    """
    rank = _checks.size(rank, "project(W, LowRank): rank")
    backend = backend_of(W)
    U, S, Vh = backend.svd(W)
    r = min(rank, S.shape[0])
    root = backend.astype(S[:r] ** 0.5, W.dtype)
    U, V = U[:, :r] * root[None, :], root[:, None] * Vh[:r]
    return LowRank(backend.pad_to(U, 1, rank), backend.pad_to(V, 0, rank))


@dispatch
def components(A: LowRank):
    # A @ x = U (V x): V reads the input, U writes the output.
    (m, r), n = A.U.shape, A.V.shape[1]
    return (Component(1, m, r, first=False), Component(1, r, n, last=False))


# -- the layer structure "lowrank" (see structlin.structure) ----------------------------------

register_structure(
    Structure(
        "lowrank",
        LowRank,
        lambda zeros, d_in, d_out, *, rank: LowRank(zeros(d_out, rank), zeros(rank, d_in)),
        options={"rank": lambda d_in, d_out: max(1, round(math.sqrt(min(d_in, d_out))))},
        sizes=("rank",),
        doc_options="`rank` (`round(sqrt(min(d_in, d_out)))`)",
        doc_operator="[`LowRank`][structlin.LowRank] `U V`",
        doc_parameters="`(d_in + d_out) r`",
    )
)
