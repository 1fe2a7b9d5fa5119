"""`TT`: a matrix in Tensor-Train (matrix product operator) format."""

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
from structlin.structure import Structure, balanced_factors, register_structure


class TT(LinearOperator):
    """A Tensor-Train matrix: `W[i, j] = G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] ... G_c[:, i_c, j_c, :]`.

    `W` has shape `(m, n)` with `m = m_1 ... m_c` and `n = n_1 ... n_c`. The row
    index is `i = (i_1, ..., i_c)` and the column index `j = (j_1, ..., j_c)`, both
    row-major (`i_1` slowest). Core `t` is an array of shape `(r_{t-1}, m_t, n_t, r_t)`
    with `r_0 = r_c = 1`, so the product of the `c` slices is `1 x 1`
    (Oseledets 2011; "Compute Better Spent", Appendix C, eq. 4). The bond ranks
    `r_1, ..., r_{c-1}` are free.

    `A @ X` never forms `W`: it contracts the cores from `t = c` down to `1`
    (eq. 5). The state before core `t` is `X` re-indexed as
    `Z_t[(j_1..j_{t-1}), (j_t, a_t), (i_{t+1}..i_c, k)]`; core `t`, reshaped to the
    `(r_{t-1} m_t) x (n_t r_t)` matrix `C_t[(a_{t-1}, i_t), (j_t, a_t)]`, is applied
    to every one of the `n_1 ... n_{t-1}` slabs by one broadcast matmul, and the
    result `[(j_1..j_{t-1}), (a_{t-1}, i_t), (i_{t+1}..i_c, k)]` is, read row-major,
    already `Z_{t-1}`: a reshape, no transposition between cores. The cost is
    `sum_t (n_1..n_{t-1}) (m_{t+1}..m_c) r_{t-1} m_t n_t r_t k` flops, against
    `m n k` for a dense matrix, while the parameter count is only
    `sum_t r_{t-1} m_t n_t r_t`: each parameter is reused across the other
    index blocks, which is what makes TT cheap to store but, per flop, less
    expressive than [`BTT`][structlin.BTT].

    `W^T` is the TT of the cores with their `m` and `n` axes swapped, `W^H` also
    conjugates them. `project(W, TT, ms=..., ns=..., ranks=...)` is TT-SVD.

    Args:
        *cores: `c >= 1` floating-point or complex arrays of one backend and device,
            core `t` of shape `(r_{t-1}, m_t, n_t, r_t)`, with `r_0 = r_c = 1` and
            positive sizes. Cores of different dtypes are cast to their common
            dtype once, here.

    Raises:
        TypeError: a core is not a floating-point array, or the cores mix backends.
        ValueError: no cores, a core is not 4-D or is empty, or adjacent ranks differ.

    Examples:
        >>> import structlin as sl
        >>> A = sl.TT.random(ms=(2, 3), ns=(4, 2), ranks=3, rng=0)
        >>> A.shape, A.ranks, A.cores[1].shape
        ((6, 8), (3,), (3, 3, 2, 1))
    """

    _children = ("cores",)

    cores: tuple[Array, ...]

    def __init__(self, *cores: Array):
        cores, shapes = core_shapes(cores, "TT", "(r_{t-1}, m_t, n_t, r_t)")
        if shapes[0][0] != 1 or shapes[-1][3] != 1:
            raise ValueError(
                f"TT needs r_0 = r_c = 1: the first core must have shape (1, m_1, n_1, r_1) and "
                f"the last (r_(c-1), m_c, n_c, 1), got {_shapes_str(shapes)}"
            )
        for t in range(1, len(shapes)):
            if shapes[t - 1][3] != shapes[t][0]:
                raise ValueError(
                    f"TT cores {t} and {t + 1} do not chain: core {t} has shape "
                    f"{_checks.shape_str(shapes[t - 1])} (rank r_{t} = {shapes[t - 1][3]} last) "
                    f"but core {t + 1} has shape {_checks.shape_str(shapes[t])} (r_{t} = "
                    f"{shapes[t][0]} first); core t has shape (r_(t-1), m_t, n_t, r_t)"
                )
        self._set(cores=common_dtype(cores))

    @property
    def ms(self) -> tuple[int, ...]:
        """`(m_1, ..., m_c)`, the row factors."""
        return tuple(int(G.shape[1]) for G in self.cores)

    @property
    def ns(self) -> tuple[int, ...]:
        """`(n_1, ..., n_c)`, the column factors."""
        return tuple(int(G.shape[2]) for G in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """`(r_1, ..., r_{c-1})`, the bond ranks (empty for one core)."""
        return tuple(int(G.shape[3]) for G in self.cores[:-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (math.prod(self.ms), math.prod(self.ns))

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
    ) -> TT:
        """A TT with independent Gaussian cores at the structure-aware muP scale.

        Core `t` is the `(r_{t-1} m_t) x (n_t r_t)` dense map of one contraction
        step, so its entries are drawn from `N(0, s^2)` with
        `s = mup_std(n_t r_t, r_{t-1} m_t) = sqrt(min(n_t r_t, r_{t-1} m_t)) / (n_t r_t)`.

        Args:
            ms: The row factors `(m_1, ..., m_c)`, `c >= 1`.
            ns: The column factors `(n_1, ..., n_c)`, as many as `ms`.
            ranks: The bond ranks `r_1..r_{c-1}`: one int for every bond, or a sequence.
            rng: NumPy generator or seed; a seed gives the same cores on every backend.
            dtype: The cores' dtype (the backend's default float if `None`).
            backend: `"numpy"`, `"torch"`, `"jax"` or a [`Backend`][structlin.backends.Backend].
            device: Where to put the cores.
        """
        ms, ns, rs = spec_sizes(ms, ns, ranks, "TT.random")
        bonds = (1, *rs, 1)
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        cores = []
        for t, (m, n) in enumerate(zip(ms, ns, strict=True)):
            r0, r1 = bonds[t], bonds[t + 1]
            std = mup_std(n * r1, r0 * m)
            cores.append(
                normal(
                    (r0, m, n, r1), std, rng=generator, dtype=dtype, backend=backend, device=device
                )
            )
        return _wrap(tuple(cores))


def _wrap(cores: tuple[Array, ...]) -> TT:
    op = object.__new__(TT)
    op._set(cores=cores)
    return op


def _shapes_str(shapes: Sequence[Sequence[int]]) -> str:
    return "cores of shapes " + ", ".join(_checks.shape_str(s) for s in shapes)


@dispatch
def matmat(A: TT, X: object):
    backend = A.backend
    ms, ns = A.ms, A.ns
    k = X.shape[1]
    # Z[(j_1..j_{t-1}), (j_t, a_t), (i_{t+1}..i_c, k)]; for t = c it is X itself (r_c = 1).
    Z = X
    for t in range(len(ms) - 1, -1, -1):
        r0, m, n, r1 = A.cores[t].shape
        left, right = math.prod(ns[:t]), math.prod(ms[t + 1 :]) * k
        C = backend.reshape(A.cores[t], (r0 * m, n * r1))
        # Row-major, [(j_<t), (a_{t-1}, i_t), (i_>t, k)] is [(j_<t-1), (j_{t-1}, a_{t-1}), (i_>=t, k)].
        Z = backend.matmul(C, backend.reshape(Z, (left, n * r1, right)))
    return backend.reshape(Z, (math.prod(ms), k))


@dispatch
def to_dense(A: TT):
    backend = A.backend
    # D[(i_1..i_t), (j_1..j_t), a_t], grown one core at a time.
    _, m, n, r = A.cores[0].shape
    D = backend.reshape(A.cores[0], (m, n, r))
    for G in A.cores[1:]:
        _, m, n, r = G.shape
        D = backend.einsum("pqa,aijb->piqjb", D, G)
        D = backend.reshape(D, (D.shape[0] * m, D.shape[2] * n, r))
    return backend.reshape(D, D.shape[:2])


@dispatch
def transpose(A: TT):
    return _wrap(tuple(A.backend.permute_dims(G, (0, 2, 1, 3)) for G in A.cores))


@dispatch
def adjoint(A: TT):
    backend = A.backend
    return _wrap(tuple(backend.conj(backend.permute_dims(G, (0, 2, 1, 3))) for G in A.cores))


@dispatch
def project(W: object, structure: type[TT], *, ms: Sequence[int], ns: Sequence[int], ranks: Any):
    """TT-SVD (Oseledets 2011): a TT with cores of shapes `(r_{t-1}, m_t, n_t, r_t)` close to `W`.

    `W` is viewed as the order-`c` tensor `T[(i_1, j_1), ..., (i_c, j_c)]` (reshape to
    `(m_1..m_c, n_1..n_c)`, then interleave the axes). Left to right, the remainder
    `R[(a_{t-1}, i_t, j_t), (i_{t+1}, j_{t+1}, ..., i_c, j_c)]` gets a thin SVD
    `U S V^H`; the first `r_t` left singular vectors become core `t`
    (left-orthonormal) and `S V^H`, truncated, the next remainder.

    Quality: with `e_t` the discarded singular values at step `t`,
    `||W - A||_F^2 = sum_t ||e_t||^2 <= (c - 1) min_{TT B of these ranks} ||W - B||_F^2`,
    so the error is within `sqrt(c - 1)` of the best (optimal for `c = 2`, where
    TT is a sum of `r_1` Kronecker products). It is exact when every `r_t` is at
    least the rank of the unfolding `T[(i_1, j_1, ..., i_t, j_t), (rest)]`, e.g. at
    `r_t = min(prod_{s <= t} m_s n_s, prod_{s > t} m_s n_s)`. A rank above what the
    SVD returns is zero-padded: the extra rank components are zero, so the
    result has the requested core shapes.

    Runs on `W`'s backend: one permutation of `W` and `c - 1` SVDs.
    """
    what = "project(W, TT)"
    ms, ns, rs = spec_sizes(ms, ns, ranks, what)
    check_fits(W, ms, ns, what)
    backend = backend_of(W)
    c = len(ms)
    T = backend.reshape(W, ms + ns)
    T = backend.permute_dims(T, tuple(a for t in range(c) for a in (t, c + t)))
    bonds = (1, *rs, 1)
    cores = []
    rest = math.prod(ms) * math.prod(ns)
    R = T
    for t in range(c - 1):
        r0, r1 = bonds[t], bonds[t + 1]
        rest //= ms[t] * ns[t]
        U, S, Vh = backend.svd(backend.reshape(R, (r0 * ms[t] * ns[t], rest)))
        U = backend.pad_to(U[:, :r1], 1, r1)
        # Singular values go right, into the remainder: the cores stay orthonormal
        # and each step's error adds in quadrature.
        SVh = backend.pad_to(backend.reshape(S[:r1], (-1, 1)) * Vh[:r1], 0, r1)
        cores.append(backend.reshape(U, (r0, ms[t], ns[t], r1)))
        R = SVh
    cores.append(backend.reshape(R, (bonds[c - 1], ms[c - 1], ns[c - 1], 1)))
    return _wrap(tuple(cores))


@dispatch
def components(A: TT):
    # Core t is the (r_{t-1} m_t) x (n_t r_t) matrix of one contraction step, applied to
    # N_<t M_>t slabs; the contraction runs from core c (input) to core 1 (output).
    ms = [G.shape[1] for G in A.cores]
    ns = [G.shape[2] for G in A.cores]
    c = len(A.cores)
    return tuple(
        Component(
            math.prod(ns[:t]) * math.prod(ms[t + 1 :]),
            G.shape[0] * G.shape[1],
            G.shape[2] * G.shape[3],
            first=t == c - 1,
            last=t == 0,
        )
        for t, G in enumerate(A.cores)
    )


# -- the layer structure "tt" (see structlin.structure) ---------------------------------------


def _layer_template(zeros: Any, d_in: int, d_out: int, *, rank: int, ncores: int) -> TT:
    ms, ns = balanced_factors(d_out, ncores), balanced_factors(d_in, ncores)
    bonds = (1, *(rank,) * (ncores - 1), 1)
    return TT(
        *(zeros(bonds[t], m, n, bonds[t + 1]) for t, (m, n) in enumerate(zip(ms, ns, strict=True)))
    )


register_structure(
    Structure(
        "tt",
        TT,
        _layer_template,
        options={"rank": 16, "ncores": 2},
        sizes=("rank", "ncores"),
        project_options=balanced_project_options,
        doc_options="`rank` (16), `ncores` (2)",
        doc_operator="[`TT`][structlin.TT]",
        doc_parameters="about `c r^2 d^{2/c}`",
    )
)
