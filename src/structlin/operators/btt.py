"""`BTT`: a Block Tensor-Train matrix, the TT format without parameter sharing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from structlin import _checks
from structlin._dispatch import dispatch
from structlin.backends import Array, Backend, Device, DType, backend_of
from structlin.component import Component
from structlin.operator import LinearOperator
from structlin.operators._random import Seed, mup_std, normal
from structlin.operators._tensor_train import (
    balanced_project_options,
    check_fits,
    common_dtype,
    core_shapes,
    spec_sizes,
)
from structlin.operators.monarch import MONARCH_COLS, MONARCH_ROWS, by_kernel
from structlin.structure import Structure, balanced_factors, register_structure


class BTT(LinearOperator):
    """A Block Tensor-Train matrix ("Compute Better Spent", Section 2 and Appendix C, eq. 6-8).

    `W` has shape `(m, n)` with `m = m_1 ... m_c` and `n = n_1 ... n_c`; the row
    index is `i = (i_1, ..., i_c)` and the column index `j = (j_1, ..., j_c)`, both
    row-major (`i_1` slowest). Write `N_<t = n_1 ... n_{t-1}` and
    `M_>t = m_{t+1} ... m_c` (both 1 when empty) and `r_0 = r_c = 1`. Core `t` has
    shape `(N_<t, M_>t, r_{t-1} m_t, n_t r_t)`: one dense
    `(r_{t-1} m_t) x (n_t r_t)` matrix for every value of `(j_<t, i_>t)`, its rows
    indexed by `(a_{t-1}, i_t)` and its columns by `(j_t, a_t)`, row-major. Then

        W[i, j] = sum_{a_1..a_{c-1}} prod_t G_t[j_<t, i_>t, (a_{t-1}, i_t), (j_t, a_t)].

    This is the TT format ([`TT`][structlin.TT]) with the core made
    to depend on the indices `j_<t, i_>t` already fixed when the recurrence
    reaches it: the same flops, `N_<t M_>t` times the parameters.

    `A @ X` contracts the cores from `t = c` down to `1` (eq. 8). The state before
    core `t` is `Z_t[j_<t, i_>t, (j_t, a_t), k]`, of shape `(N_<t, M_>t, n_t r_t, k)`,
    so applying core `t` is one batched matmul `G_t @ Z_t` over the `N_<t M_>t`
    blocks, and one transposition of the result regroups
    `[(j_<t-1, j_{t-1}), i_>t, (a_{t-1}, i_t), k]` into `Z_{t-1}`. The cost,
    `sum_t N_<t M_>t r_{t-1} m_t n_t r_t k` flops, is exactly the number of
    parameters times `k`: every parameter is used once per column, as in a dense
    matrix, which is the paper's argument for BTT.

    With `transposed=True` the operator is `W^T`, of shape `(n, m)`, stored with
    the same cores; its `matmat` runs the recurrence the other way (`t = 1` up to
    `c`, state `[j_<t, i_>t, (a_{t-1}, i_t), k]`, each step `G_t^T @ Z`). So
    `A.T` flips the flag without copying and `A.H` also conjugates the cores.

    With two cores, `BTT(L, R)` with `L` of shape `(1, m_2, m_1, n_1 r)` and `R` of
    shape `(n_1, 1, r m_2, n_2)` is the Monarch matrix of Dao et al. (2022) with
    `blkdiag1 = R[:, 0]` (applied first, `n_1` blocks of shape `(r m_2, n_2)`) and
    `blkdiag2 = L[0]` (`m_2` blocks of shape `(m_1, n_1 r)`); `r = 1` with square
    factors is the original Monarch matrix `P L P^T R`.

    `project(W, BTT, ms=..., ns=..., ranks=...)` is optimal for two cores (one
    batch of truncated SVDs) and greedy for more (see the `project` rule).

    Args:
        *cores: `c >= 1` floating-point or complex arrays of one backend and device
            in the layout above, with positive sizes. `m_t`, `n_t` and `r_t` are
            read from the shapes (`m_1` from core 1, `n_t = N_<t+1 / N_<t`, ...)
            and every shape is then checked against them. Cores of different
            dtypes are cast to their common dtype once, here.
        transposed: Represent `W^T` instead of `W`.

    Raises:
        TypeError: a core is not a floating-point array, or the cores mix backends.
        ValueError: no cores, a core is not 4-D or is empty, or the shapes do not
            fit the layout.

    Examples:
        >>> import structlin as sl
        >>> A = sl.BTT.random(ms=(4, 4), ns=(4, 4), ranks=2, rng=0)
        >>> [G.shape for G in A.cores], A.shape, A.T.transposed
        ([(1, 4, 4, 8), (4, 1, 8, 4)], (16, 16), True)
    """

    _children = ("cores",)
    _static = ("transposed",)

    cores: tuple[Array, ...]
    transposed: bool

    def __init__(self, *cores: Array, transposed: bool = False):
        cores, shapes = core_shapes(cores, "BTT", "(N_<t, M_>t, r_(t-1) m_t, n_t r_t)")
        _check_layout(shapes)
        self._set(cores=common_dtype(cores), transposed=bool(transposed))

    @property
    def ms(self) -> tuple[int, ...]:
        """`(m_1, ..., m_c)`, the row factors of `W` (the columns of `W^T` when transposed)."""
        return _sizes([tuple(G.shape) for G in self.cores])[0]

    @property
    def ns(self) -> tuple[int, ...]:
        """`(n_1, ..., n_c)`, the column factors of `W`."""
        return _sizes([tuple(G.shape) for G in self.cores])[1]

    @property
    def ranks(self) -> tuple[int, ...]:
        """`(r_1, ..., r_{c-1})`, the bond ranks (empty for one core)."""
        return _sizes([tuple(G.shape) for G in self.cores])[2]

    @property
    def shape(self) -> tuple[int, int]:
        first, last = self.cores[0].shape, self.cores[-1].shape
        m = int(first[1]) * int(first[2])  # M_>1 m_1 (r_0 = 1)
        n = int(last[0]) * int(last[3])  # N_<c n_c (r_c = 1)
        return (n, m) if self.transposed else (m, n)

    @classmethod
    def random(
        cls,
        ms: Sequence[int],
        ns: Sequence[int],
        ranks: int | Sequence[int],
        *,
        rng: Seed = None,
        dtype: DType = None,
        backend: Backend | str = "numpy",
        device: Device = None,
    ) -> BTT:
        """A BTT with independent Gaussian cores at the structure-aware muP scale.

        Each block of core `t` is the `(r_{t-1} m_t) x (n_t r_t)` dense map of one
        contraction step, so its entries are drawn from `N(0, s^2)` with
        `s = mup_std(n_t r_t, r_{t-1} m_t) = sqrt(min(n_t r_t, r_{t-1} m_t)) / (n_t r_t)`
        ("Compute Better Spent", Section 3.2).

        Args:
            ms: The row factors `(m_1, ..., m_c)`, `c >= 1`.
            ns: The column factors `(n_1, ..., n_c)`, as many as `ms`.
            ranks: The bond ranks `r_1..r_{c-1}`: one int for every bond, or a sequence.
            rng: NumPy generator or seed; a seed gives the same cores on every backend.
            dtype: The cores' dtype (the backend's default float if `None`).
            backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
            device: Where to put the cores.
        """
        ms, ns, rs = spec_sizes(ms, ns, ranks, "BTT.random")
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        cores = []
        for shape, (r0, m, n, r1) in zip(_core_shapes(ms, ns, rs), _steps(ms, ns, rs), strict=True):
            std = mup_std(n * r1, r0 * m)
            cores.append(
                normal(shape, std, rng=generator, dtype=dtype, backend=backend, device=device)
            )
        return _wrap(tuple(cores), False)


def _wrap(cores: tuple[Array, ...], transposed: bool) -> BTT:
    op = object.__new__(BTT)
    op._set(cores=cores, transposed=transposed)
    return op


def _steps(
    ms: Sequence[int], ns: Sequence[int], rs: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """`(r_{t-1}, m_t, n_t, r_t)` for every core."""
    bonds = (1, *rs, 1)
    return [(bonds[t], ms[t], ns[t], bonds[t + 1]) for t in range(len(ms))]


def _core_shapes(
    ms: Sequence[int], ns: Sequence[int], rs: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """The shape `(N_<t, M_>t, r_{t-1} m_t, n_t r_t)` of every core."""
    return [
        (math.prod(ns[:t]), math.prod(ms[t + 1 :]), r0 * m, n * r1)
        for t, (r0, m, n, r1) in enumerate(_steps(ms, ns, rs))
    ]


def _sizes(
    shapes: Sequence[tuple[int, ...]],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """`(ms, ns, ranks)` read from the core shapes (unchecked; see `_check_layout`).

    The batch axes give the block sizes, `n_t = N_<t+1 / N_<t` and
    `m_t = M_>t-1 / M_>t`; the ends, where a batch axis is trivial, come from
    the matrix axes (`m_1` = rows of core 1 as `r_0 = 1`, `n_c` = columns of
    core `c` as `r_c = 1`); and `r_t` = columns of core `t` over `n_t`. A bad
    row count then shows up at the core that has it.
    """
    c = len(shapes)
    # Clamped at 1 so that malformed shapes reach `_check_layout`'s message,
    # not a ZeroDivisionError.
    ms = [shapes[0][2]] + [max(shapes[t - 1][1] // shapes[t][1], 1) for t in range(1, c)]
    ns = [max(shapes[t + 1][0] // shapes[t][0], 1) for t in range(c - 1)] + [shapes[-1][3]]
    rs = [max(shapes[t][3] // ns[t], 1) for t in range(c - 1)]
    return tuple(ms), tuple(ns), tuple(rs)


def _check_layout(shapes: Sequence[tuple[int, ...]]) -> None:
    ms, ns, rs = _sizes(shapes)
    expected = _core_shapes(ms, ns, rs)
    bad = next((t for t in range(len(shapes)) if shapes[t] != expected[t]), None)
    if bad is None:
        return
    raise ValueError(
        f"BTT core {bad + 1} has shape {_checks.shape_str(shapes[bad])}, which does not fit "
        f"the layout (N_<t, M_>t, r_(t-1) m_t, n_t r_t): the cores "
        f"({', '.join(_checks.shape_str(s) for s in shapes)}) give ms={ms}, ns={ns}, "
        f"ranks={rs}, and for those it should be {_checks.shape_str(expected[bad])}; "
        "BTT.random(ms, ns, ranks) builds cores of the right shapes"
    )


def _apply(cores: tuple[Array, ...], X: Array, backend: Backend) -> Array:
    """`W @ X` by the recurrence of eq. 8, last core first."""
    ms, ns, _ = _sizes([tuple(G.shape) for G in cores])
    k = X.shape[1]
    # Z_c[j_<c, i_>c, (j_c, a_c), k] is X itself (M_>c = r_c = 1).
    Z = backend.reshape(X, (math.prod(ns[:-1]), 1, ns[-1], k))
    for t in range(len(cores) - 1, 0, -1):
        Y = backend.block_matmul(cores[t], Z)  # [(j_<t-1, j_{t-1}), i_>t, (a_{t-1}, i_t), k]
        left, n_prev, right, m = math.prod(ns[: t - 1]), ns[t - 1], math.prod(ms[t + 1 :]), ms[t]
        r0 = Y.shape[2] // m
        # -> Z_{t-1}[j_<t-1, (i_t, i_>t), (j_{t-1}, a_{t-1}), k]
        Y = backend.reshape(Y, (left, n_prev, right, r0, m, k))
        Y = backend.permute_dims(Y, (0, 4, 2, 1, 3, 5))
        Z = backend.reshape(Y, (left, m * right, n_prev * r0, k))
    Y = backend.block_matmul(cores[0], Z)  # [1, i_>1, i_1, k]
    return backend.reshape(backend.permute_dims(Y, (0, 2, 1, 3)), (math.prod(ms), k))


def _apply_transposed(cores: tuple[Array, ...], X: Array, backend: Backend) -> Array:
    """`W^T @ X` by the recurrence of eq. 8 read backwards, first core first."""
    ms, ns, _ = _sizes([tuple(G.shape) for G in cores])
    k = X.shape[1]
    # Z_1[j_<1, i_>1, (a_0, i_1), k] is X[(i_1, i_>1), k] with the two row factors swapped.
    Z = backend.permute_dims(backend.reshape(X, (ms[0], math.prod(ms[1:]), k)), (1, 0, 2))
    Z = backend.reshape(Z, (1, math.prod(ms[1:]), ms[0], k))
    for t in range(len(cores) - 1):
        Y = backend.block_matmul(backend.swap_last(cores[t]), Z)  # [j_<t, i_>t, (j_t, a_t), k]
        left, n, m_next, right = math.prod(ns[:t]), ns[t], ms[t + 1], math.prod(ms[t + 2 :])
        r1 = Y.shape[2] // n
        # -> Z_{t+1}[(j_<t, j_t), i_>t+1, (a_t, i_{t+1}), k]
        Y = backend.reshape(Y, (left, m_next, right, n, r1, k))
        Y = backend.permute_dims(Y, (0, 3, 2, 4, 1, 5))
        Z = backend.reshape(Y, (left * n, right, r1 * m_next, k))
    Y = backend.block_matmul(backend.swap_last(cores[-1]), Z)  # [j_<c, 1, j_c, k]
    return backend.reshape(Y, (math.prod(ns), k))


@dispatch
def matmat(A: BTT, X: object):
    if A.transposed:
        return _apply_transposed(A.cores, X, A.backend)
    if len(A.cores) == 2:  # W X for the default-layout Monarch W: a kernel, if one applies
        Y = by_kernel(MONARCH_COLS, A.backend, X, *_monarch_blocks(A))
        if Y is not None:
            return Y
    return _apply(A.cores, X, A.backend)


@dispatch
def rmatmat(X: object, A: BTT):
    if A.transposed and len(A.cores) == 2:  # X W^T: the layers' hot path
        Y = by_kernel(MONARCH_ROWS, A.backend, X, *_monarch_blocks(A))
        if Y is not None:
            return Y
    backend = A.backend
    return backend.swap_last(matmat(_wrap(A.cores, not A.transposed), backend.swap_last(X)))


def _monarch_blocks(A: BTT) -> tuple[Array, Array]:
    """`(blkdiag1, blkdiag2)` of the default-layout Monarch that the two-core `W = BTT(L, R)`
    is (the class docstring's identity): `(R[:, 0], L[0])`, views of the cores."""
    L, R = A.cores
    return R[:, 0], L[0]


@dispatch
def to_dense(A: BTT):
    backend = A.backend
    ms, ns, rs = A.ms, A.ns, A.ranks
    steps = _steps(ms, ns, rs)
    # D[I_<t, i_t, I_>t, J_<t, a_{t-1}]: the product of the first t - 1 cores, with the
    # row indices they do not touch yet kept as axes. Core t, viewed as
    # G[J_<t, I_>t, a_{t-1}, i_t, j_t, a_t], shares J_<t, I_>t, a_{t-1} and i_t with it.
    # After core 1 (J_<1 and a_0 trivial) D is core 1 with its axes reordered.
    G = backend.reshape(A.cores[0], (1, math.prod(ms[1:]), 1, *steps[0][1:]))
    D = backend.permute_dims(G, (2, 3, 1, 0, 4, 5))
    for t in range(1, len(ms)):
        r0, m, n, r1 = steps[t]
        left, right = math.prod(ns[:t]), math.prod(ms[t + 1 :])
        G = backend.reshape(A.cores[t], (left, right, r0, m, n, r1))
        D = backend.reshape(D, (math.prod(ms[:t]), m, right, left, r0))
        # [I_<=t, (i_{t+1}, I_>t+1), J_<=t, a_t] is the next step's layout, row-major.
        D = backend.einsum("PiCJa,JCaijb->PiCJjb", D, G)
    dense = backend.reshape(D, (math.prod(ms), math.prod(ns)))
    return backend.swap_last(dense) if A.transposed else dense


@dispatch
def transpose(A: BTT):
    return _wrap(A.cores, not A.transposed)


@dispatch
def adjoint(A: BTT):
    return _wrap(tuple(A.backend.conj(G) for G in A.cores), not A.transposed)


@dispatch
def project(W: object, structure: type[BTT], *, ms: Sequence[int], ns: Sequence[int], ranks: Any):
    """The BTT with cores for `ms`, `ns`, `ranks` nearest to `W` (Appendix D).

    Two cores: `W[(i_1, i_2), (j_1, j_2)] = sum_a L[i_2, i_1, (j_1, a)] R[j_1, (a, i_2), j_2]`,
    so for each of the `n_1 m_2` pairs `(j_1, i_2)` the `m_1 x n_2` block
    `B^{(j_1, i_2)}[i_1, j_2] = W[(i_1, i_2), (j_1, j_2)]` is approximated by an
    independent rank-`r` product and the problem separates: the optimum is the
    truncated SVD `U S V^H` of every block (Eckart-Young), with `U sqrt(S)` stored
    in `L` and `sqrt(S) V^H` in `R`. The error is
    `||W - A||_F^2 = sum_{blocks} sum_{k > r} s_k(B)^2`, and `r = min(m_1, n_2)`
    reproduces any `W`.

    More cores: the greedy recursion of Appendix D. The last pair `(i_c, j_c)` is
    split off as a two-core problem (rows `(i_1..i_{c-1})`, blocks per
    `(j_<c, i_c)`); the left factor `L~[i_<c, i_c, j_<c, a_{c-1}]` keeps the
    singular values and is split the same way for core `c - 1` (blocks per
    `(j_<c-1, i_{c-1}, i_c)`, columns `(j_{c-1}, a_{c-1})`), and so on down to
    core 1; only the last split shares `sqrt(S)` between both factors. Every
    block of cores `3..c` then has orthonormal rows, so the squared error is
    exactly the sum of the squared singular values discarded at all levels.

    The result is quasi-optimal, as TT-SVD is: let `e_t` be the error of the best
    rank-`r_{t-1}` approximations of the blocks `W[(i_<t), (j_t..j_c)]`, one
    block per `(j_<t, i_t..i_c)`, for `t = 2..c`. Every BTT of these ranks has
    blocks of rank `<= r_{t-1}` there, so its error is at least `max_t e_t`;
    each level discards at most `e_t^2` (its input is `W` times contractions),
    so `||W - A||_F <= sqrt(sum_t e_t^2) <= sqrt(c - 1)` times the best. It is
    exact when every `r_{t-1} >= min(m_1 ... m_{t-1}, n_t r_t)`, the rank bound
    of Appendix D.

    Requested ranks above what a block's SVD returns are zero-padded, so the
    cores always have the requested shapes. Runs on `W`'s backend: one
    batched SVD per core boundary, no loop over blocks.
    """
    what = "project(W, BTT)"
    ms, ns, rs = spec_sizes(ms, ns, ranks, what)
    check_fits(W, ms, ns, what)
    backend = backend_of(W)
    c = len(ms)
    steps = _steps(ms, ns, rs)
    # T[I_<=t, I_>t, J_<=t, a_t], the part still to be split; for t = c it is W (r_c = 1).
    T = W
    cores: list[Array] = [None] * c
    for t in range(c - 1, 0, -1):
        r0, m, n, r1 = steps[t]
        rows, left, right = math.prod(ms[:t]), math.prod(ns[:t]), math.prod(ms[t + 1 :])
        # One block per (J_<t, i_t, I_>t): rows I_<t, columns (j_t, a_t).
        B = backend.reshape(T, (rows, m, right, left, n * r1))
        B = backend.permute_dims(B, (3, 1, 2, 0, 4))
        U, S, Vh = backend.svd(B)
        # Truncate before scaling: the discarded triplets (often nearly all) are never touched.
        U, S, Vh = U[..., :r0], S[..., :r0], Vh[..., :r0, :]
        if t == 1:
            root = S**0.5
            U = U * root[..., None, :]
            Vh = root[..., :, None] * Vh
        else:
            U = U * S[..., None, :]
        U = backend.pad_to(U, -1, r0)  # [J_<t, i_t, I_>t, I_<t, a_{t-1}]
        Vh = backend.pad_to(Vh, -2, r0)  # [J_<t, i_t, I_>t, a_{t-1}, (j_t, a_t)]
        G = backend.permute_dims(Vh, (0, 2, 3, 1, 4))
        cores[t] = backend.reshape(G, (left, right, r0 * m, n * r1))
        # The left factor, [I_<t, (i_t, I_>t), J_<t, a_{t-1}]: T for core t - 1.
        T = backend.permute_dims(U, (3, 1, 2, 0, 4))
    # Core 1: T[i_1, I_>1, j_1, a_1] -> [1, I_>1, i_1, (j_1, a_1)].
    m, n, r1 = ms[0], ns[0], steps[0][3]
    right = math.prod(ms[1:])
    G = backend.permute_dims(backend.reshape(T, (m, right, n * r1)), (1, 0, 2))
    cores[0] = backend.reshape(G, (1, right, m, n * r1))
    return _wrap(tuple(cores), False)


@dispatch
def components(A: BTT):
    # Core t holds N_<t M_>t blocks of shape (r_{t-1} m_t, n_t r_t); the recurrence
    # runs from core c (input) to core 1 (output). The transpose applies each block transposed.
    c = len(A.cores)
    found = tuple(
        Component(
            G.shape[0] * G.shape[1],
            G.shape[2],
            G.shape[3],
            first=t == c - 1,
            last=t == 0,
            block_axes=(0, 1),  # the N_<t and M_>t block axes
        )
        for t, G in enumerate(A.cores)
    )
    return tuple(f.transposed() for f in found) if A.transposed else found


# -- the layer structure "btt" (see structlin.structure) --------------------------------------


def _layer_template(zeros: Any, d_in: int, d_out: int, *, rank: int, ncores: int) -> BTT:
    ms, ns = balanced_factors(d_out, ncores), balanced_factors(d_in, ncores)
    ranks = (rank,) * (ncores - 1)
    return BTT(*(zeros(*shape) for shape in _core_shapes(ms, ns, ranks)))


register_structure(
    Structure(
        "btt",
        BTT,
        _layer_template,
        options={"rank": 1, "ncores": 2},
        sizes=("rank", "ncores"),
        project_options=balanced_project_options,
        doc_options="`rank` (1), `ncores` (2)",
        doc_operator="[`BTT`][structlin.BTT]",
        doc_parameters="about `c r d^{1+1/c}`",
    )
)
