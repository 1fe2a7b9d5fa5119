"""`BTT`: conformance against an einsum reference, the Monarch special case, layout and
errors, and the projection of Appendix D (optimal for two cores, greedy beyond)."""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structlin.functions as F
from conformance import BACKENDS, DTYPES, Built, Gen, check_operator, examples, to_backend
from structlin.operators._random import mup_std
from structlin.operators.btt import BTT


# -- an independent dense reference ---------------------------------------------------------
def btt_shapes(ms: list[int], ns: list[int], rs: list[int]) -> list[tuple[int, int, int, int]]:
    """Core `t`: `(n_1..n_{t-1}, m_{t+1}..m_c, r_{t-1} m_t, n_t r_t)`."""
    bonds = [1, *rs, 1]
    return [
        (
            math.prod(ns[:t]),
            math.prod(ms[t + 1 :]),
            bonds[t] * ms[t],
            ns[t] * bonds[t + 1],
        )
        for t in range(len(ms))
    ]


def btt_dense(cores: list[np.ndarray], ms: list[int], ns: list[int], rs: list[int]) -> np.ndarray:
    """`W[i, j] = sum_a prod_t G_t[j_<t, i_>t, (a_{t-1}, i_t), (j_t, a_t)]` with einsum."""
    m, n = math.prod(ms), math.prod(ns)
    if len(cores) == 1:
        return cores[0][0, 0]
    if len(cores) == 2:
        (m1, m2), (n1, n2), (r,) = ms, ns, rs
        L = cores[0].reshape(m2, m1, n1, r)  # [i2, i1, j1, a]
        R = cores[1].reshape(n1, r, m2, n2)  # [j1, a, i2, j2]
        return np.einsum("kija,jakl->ikjl", L, R).reshape(m, n)
    if len(cores) == 3:
        (m1, m2, m3), (n1, n2, n3), (r1, r2) = ms, ns, rs
        G1 = cores[0].reshape(m2, m3, m1, n1, r1)  # [i2, i3, i1, j1, a]
        G2 = cores[1].reshape(n1, m3, r1, m2, n2, r2)  # [j1, i3, a, i2, j2, b]
        G3 = cores[2].reshape(n1, n2, r2, m3, n3)  # [j1, j2, b, i3, j3]
        return np.einsum("pqija,jqapkb,jkbql->ipqjkl", G1, G2, G3).reshape(m, n)
    raise ValueError(f"this reference is written out for 1 to 3 cores, got {len(cores)}")


def btt_by_entries(
    cores: list[np.ndarray], ms: list[int], ns: list[int], rs: list[int]
) -> np.ndarray:
    """The same matrix entry by entry: a product of `(r_{t-1} x r_t)` slices, one per core."""
    c, bonds = len(ms), [1, *rs, 1]
    W = np.zeros((math.prod(ms), math.prod(ns)))
    for row, i in enumerate(np.ndindex(*ms)):
        for col, j in enumerate(np.ndindex(*ns)):
            product = np.eye(1)
            for t in range(c):
                batch = np.ravel_multi_index(j[:t], ns[:t]) if t else 0
                rest = np.ravel_multi_index(i[t + 1 :], ms[t + 1 :]) if t < c - 1 else 0
                G = cores[t][batch, rest].reshape(bonds[t], ms[t], ns[t], bonds[t + 1])
                product = product @ G[:, i[t], j[t], :]
            W[row, col] = product[0, 0]
    return W


@pytest.mark.parametrize(
    ("ms", "ns", "rs"), [([2, 3], [3, 2], [2]), ([2, 3, 2], [3, 1, 2], [2, 3]), ([3], [2], [])]
)
def test_reference_matches_the_definition(ms: list[int], ns: list[int], rs: list[int]) -> None:
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(s) for s in btt_shapes(ms, ns, rs)]
    np.testing.assert_allclose(
        btt_dense(cores, ms, ns, rs), btt_by_entries(cores, ms, ns, rs), atol=1e-12
    )


# -- conformance ------------------------------------------------------------------------------
def btt_case(g: Gen) -> Built:
    c = g.choice([1, 2, 2, 3])
    hi = 4 if c < 3 else 3
    ms = [g.size(1, hi) for _ in range(c)]
    ns = list(ms) if g.choice([True, False]) else [g.size(1, hi) for _ in range(c)]
    rs = [g.size(1, 3) for _ in range(c - 1)]
    cores = [g.normal(*s) for s in btt_shapes(ms, ns, rs)]
    W = btt_dense(cores, ms, ns, rs)
    if g.choice([True, False]):
        return Built(lambda arr: BTT(*(arr(G) for G in cores), transposed=True), W.T)
    return Built(lambda arr: BTT(*(arr(G) for G in cores)), W)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_conformance(backend: str, dtype: str) -> None:
    @settings(max_examples=examples(backend, dtype))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        gen = Gen(data.draw, dtype)
        check_operator(btt_case(gen), backend, dtype, gen)

    run()


# -- structure --------------------------------------------------------------------------------
def monarch_reference(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """`blockdiag_butterfly_multiply_reference` of the Monarch code (Dao et al. 2022), in NumPy.

    `x` is `(batch, n)`; `w1` is `(k, q, p)` (applied first), `w2` is `(l, s, r)`.
    """
    batch = x.shape[0]
    k, _, p = w1.shape
    nl, s, r = w2.shape  # `l` in the original
    out1 = np.einsum("kqp,bkp->bkq", w1, x.reshape(batch, k, p))
    out1 = out1.reshape(batch, r, nl).transpose(0, 2, 1)  # 'b (r l) -> b l r'
    out2 = np.einsum("lsr,blr->bsl", w2, out1)
    return out2.reshape(batch, s * nl)


@pytest.mark.parametrize(("ms", "ns", "r"), [((4, 4), (4, 4), 1), ((3, 5), (2, 4), 2)])
def test_two_cores_are_monarch(ms: tuple[int, int], ns: tuple[int, int], r: int) -> None:
    A = BTT.random(ms, ns, r, rng=0)
    L, R = A.cores
    x = np.random.default_rng(1).standard_normal((3, A.shape[1]))
    expected = monarch_reference(x, R[:, 0], L[0])
    np.testing.assert_allclose((A @ x.T).T, expected, atol=1e-12)


def test_sizes_transpose_and_adjoint() -> None:
    A = BTT.random((2, 3, 4), (5, 1, 2), (3, 2), rng=0)
    assert (A.ms, A.ns, A.ranks) == ((2, 3, 4), (5, 1, 2), (3, 2))
    assert A.shape == (24, 10)
    assert [G.shape for G in A.cores] == [(1, 12, 2, 15), (5, 4, 9, 2), (5, 1, 8, 2)]
    At = A.T
    assert isinstance(At, BTT)
    assert At.transposed
    assert At.shape == (10, 24)
    assert all(a is b for a, b in zip(At.cores, A.cores, strict=True))  # no copy
    assert not At.T.transposed
    B = BTT.random((2, 2), (2, 2), 2, rng=1, dtype="complex128")
    np.testing.assert_allclose(B.H.to_dense(), B.to_dense().conj().T, atol=1e-14)
    np.testing.assert_allclose(B.H.H.to_dense(), B.to_dense(), atol=1e-14)


def test_random_scale_and_seed() -> None:
    ms, ns, r = (8, 8), (16, 16), 4
    A = BTT.random(ms, ns, r, rng=1)
    for G, (fan_in, fan_out) in zip(A.cores, [(16 * r, 8), (16, r * 8)], strict=True):
        assert np.std(G) == pytest.approx(mup_std(fan_in, fan_out), rel=0.05)
    B = BTT.random(ms, ns, r, rng=1)
    assert all(np.array_equal(a, b) for a, b in zip(A.cores, B.cores, strict=True))
    torch = pytest.importorskip("torch")
    C = BTT.random(ms, ns, r, rng=1, backend="torch", dtype=torch.float32)
    assert C.backend.name == "torch"
    assert C.dtype == torch.float32
    np.testing.assert_allclose(C.cores[1].numpy(), A.cores[1], rtol=1e-6)


def test_matmat_costs_parameters_times_columns() -> None:
    """A 4096 x 4096 BTT (128 MiB dense) applied to a vector without a dense intermediate."""
    A = BTT.random((64, 64), (64, 64), 2, rng=0)
    assert sum(G.size for G in A.cores) == 2 * 2 * 64**3
    x = np.random.default_rng(1).standard_normal(4096)
    tracemalloc.start()
    y = A @ x
    yt = A.T @ x
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 4096 * 8, f"peak {peak} bytes suggests a dense intermediate"
    # Row i = (i_1, i_2) of W: sum_a L[i_2, i_1, (j_1, a)] R[j_1, (a, i_2), j_2].
    L, R = A.cores[0][0].reshape(64, 64, 64, 2), A.cores[1][:, 0].reshape(64, 2, 64, 64)
    i1, i2 = 5, 17
    row = np.einsum("ja,jal->jl", L[i2, i1], R[:, :, i2])
    assert y[i1 * 64 + i2] == pytest.approx(np.sum(row * x.reshape(64, 64)))
    j1, j2 = 9, 33  # column j of W is row j of W^T
    column = np.einsum("kia,ak->ik", L[:, :, j1], R[j1, :, :, j2])
    assert yt[j1 * 64 + j2] == pytest.approx(np.sum(column * x.reshape(64, 64)))


def test_empty_right_hand_side() -> None:
    A = BTT.random((2, 3, 2), (3, 2, 2), 2, rng=0)
    assert (A @ np.ones((12, 0))).shape == (12, 0)
    assert (A.T @ np.ones((12, 0))).shape == (12, 0)


def test_mixed_dtypes_are_cast_once() -> None:
    A = BTT(np.ones((1, 2, 2, 4), dtype=np.float32), np.ones((2, 1, 4, 3)))
    assert A.dtype == np.float64
    assert all(G.dtype == np.float64 for G in A.cores)


@pytest.mark.parametrize(
    ("shapes", "pattern"),
    [
        # A (2, 2) x (2, 2) rank-2 BTT has cores (1, 2, 2, 4) and (2, 1, 4, 2).
        ([(1, 2, 2, 4), (2, 1, 3, 2)], r"core 2 has shape \(2, 1, 3, 2\).*be \(2, 1, 4, 2\)"),
        ([(1, 3, 2, 4), (2, 1, 4, 2)], r"core 2 has shape \(2, 1, 4, 2\).*be \(2, 1, 6, 2\)"),
        ([(2, 2, 2, 4), (2, 1, 4, 2)], r"core 1 has shape \(2, 2, 2, 4\).*be \(1, 2, 2, 4\)"),
        ([(1, 2, 2, 3), (2, 1, 4, 2)], r"core 1 has shape \(1, 2, 2, 3\).*be \(1, 2, 2, 2\)"),
        (
            [(1, 2, 2, 4), (3, 1, 4, 2)],
            r"\(1, 2, 2, 4\), \(3, 1, 4, 2\)\) give ms=\(2, 2\), ns=\(3, 2\)",
        ),
        ([(1, 2, 2, 4), (4, 1, 4, 2)], r"core 2 has shape \(4, 1, 4, 2\).*be \(4, 1, 2, 2\)"),
        ([(1, 2, 2, 4), (2, 1, 4, 2), (2, 1, 3, 2)], r"core 3 has shape .*be \(2, 1, 2, 2\)"),
        ([(1, 2, 2, 4), (2, 1, 0, 2)], r"core 2 has shape \(2, 1, 0, 2\).*positive"),
    ],
)
def test_inconsistent_cores(shapes: list[tuple[int, ...]], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        BTT(*(np.ones(s) for s in shapes))


def test_bad_cores() -> None:
    with pytest.raises(ValueError, match="at least one core"):
        BTT()
    with pytest.raises(ValueError, match=r"BTT core 1 must be 4-D, got shape \(2, 2\)"):
        BTT(np.ones((2, 2)))
    with pytest.raises(TypeError, match="BTT core 1 has dtype int64"):
        BTT(np.ones((1, 1, 2, 2), dtype=np.int64))


# -- projection ----------------------------------------------------------------------------------
def rel_error(A: BTT, W: np.ndarray) -> float:
    return float(np.linalg.norm(F.to_dense(A) - W) / np.linalg.norm(W))


def block_tails(
    W: np.ndarray, ms: tuple[int, ...], ns: tuple[int, ...], ranks: tuple[int, ...]
) -> list[float]:
    """`e_t`, `t = 2..c`: the error of the best rank-`r_{t-1}` approximations of the blocks
    `W[(i_<t), (j_t..j_c)]`, one per `(j_<t, i_t..i_c)`, by NumPy's SVD."""
    c = len(ms)
    T = W.reshape(ms + ns)
    tails = []
    for t in range(1, c):
        axes = [*range(c, c + t), *range(t, c), *range(t), *range(c + t, 2 * c)]
        blocks = T.transpose(axes).reshape(
            math.prod(ns[:t]) * math.prod(ms[t:]), math.prod(ms[:t]), math.prod(ns[t:])
        )
        s = np.linalg.svd(blocks, compute_uv=False)
        tails.append(float(np.sqrt(np.sum(s[:, ranks[t - 1] :] ** 2))))
    return tails


@pytest.mark.parametrize(
    ("ms", "ns", "r"), [((4, 4), (4, 4), 2), ((3, 5), (4, 2), 1), ((2, 3), (5, 4), 3)]
)
def test_project_recovers_a_two_core_btt(ms: tuple[int, int], ns: tuple[int, int], r: int) -> None:
    B = BTT.random(ms, ns, r, rng=2)
    A = F.project(B.to_dense(), BTT, ms=ms, ns=ns, ranks=r)
    assert isinstance(A, BTT)
    assert [G.shape for G in A.cores] == [G.shape for G in B.cores]
    assert rel_error(A, B.to_dense()) < 1e-10


def test_project_recovers_a_three_core_btt() -> None:
    ms, ns, ranks = (2, 3, 2), (3, 2, 2), (2, 3)
    B = BTT.random(ms, ns, ranks, rng=3)
    A = F.project(B.to_dense(), BTT, ms=ms, ns=ns, ranks=ranks)
    assert rel_error(A, B.to_dense()) < 1e-10


@pytest.mark.parametrize(("ms", "ns"), [((4, 4), (4, 4)), ((3, 5), (4, 2))])
def test_project_two_cores_is_optimal(ms: tuple[int, int], ns: tuple[int, int]) -> None:
    """The error is that of the independent best rank-r block approximations, and no
    nearby BTT does better."""
    rng = np.random.default_rng(4)
    W = rng.standard_normal((math.prod(ms), math.prod(ns)))
    (m1, m2), (n1, n2) = ms, ns
    W4 = W.reshape(m1, m2, n1, n2)
    for r in range(1, min(m1, n2) + 1):
        A = F.project(W, BTT, ms=ms, ns=ns, ranks=r)
        err = np.linalg.norm(A.to_dense() - W)
        discarded = sum(
            np.sum(np.linalg.svd(W4[:, i2, j1, :], compute_uv=False)[r:] ** 2)
            for j1 in range(n1)
            for i2 in range(m2)
        )
        assert err == pytest.approx(np.sqrt(discarded), rel=1e-10, abs=1e-12)
        for _ in range(20):
            scale = 1e-3 * rng.choice([1.0, 10.0])
            nearby = BTT(*(G + scale * rng.standard_normal(G.shape) for G in A.cores))
            assert np.linalg.norm(nearby.to_dense() - W) >= err * (1 - 1e-12)


def test_project_normalisation() -> None:
    """Two cores share `sqrt(S)`: the a-th column of every block of `L` has the norm of
    the a-th row of the matching block of `R`. With three cores, the blocks of core 3
    have orthonormal rows (the singular values went left)."""
    rng = np.random.default_rng(8)
    (m1, m2), (n1, n2), r = (4, 3), (3, 5), 3
    L, R = F.project(rng.standard_normal((12, 15)), BTT, ms=(m1, m2), ns=(n1, n2), ranks=r).cores
    L_norms = np.linalg.norm(L[0].reshape(m2, m1, n1, r), axis=1)  # [i2, j1, a]
    R_norms = np.linalg.norm(R[:, 0].reshape(n1, r, m2, n2), axis=3)  # [j1, a, i2]
    np.testing.assert_allclose(L_norms, R_norms.transpose(2, 0, 1), rtol=1e-10)
    assert np.ptp(L_norms) > 0.1  # not trivially equal

    A = F.project(rng.standard_normal((12, 24)), BTT, ms=(2, 3, 2), ns=(3, 2, 4), ranks=(2, 3))
    G3 = A.cores[2][:, 0].reshape(6, 3, 2, 4)  # [j_<3, a_2, i_3, j_3]
    gram = np.einsum("jaik,jbik->jiab", G3, G3)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-12)


@pytest.mark.parametrize(
    ("ms", "ns", "path"),
    [
        ((4, 4), (4, 4), [(1,), (2,), (3,), (4,)]),
        ((3, 5), (4, 2), [(1,), (2,)]),
        ((2, 3, 2), (3, 2, 4), [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4)]),
        ((3, 2, 2), (2, 2, 3), [(1, 1), (2, 1), (2, 2), (3, 2), (3, 3)]),
    ],
)
def test_project_error_bounds_and_monotone(
    ms: tuple[int, ...], ns: tuple[int, ...], path: list[tuple[int, ...]]
) -> None:
    """Along increasing ranks: `max_t e_t <= error <= sqrt(sum_t e_t^2)`, the error never
    grows, and it vanishes at the rank bound `r_{t-1} = min(m_1..m_{t-1}, n_t r_t)`."""
    W = np.random.default_rng(5).standard_normal((math.prod(ms), math.prod(ns)))
    bound = [1]
    for t in range(len(ms) - 1, 0, -1):
        bound.insert(0, min(math.prod(ms[:t]), ns[t] * bound[0]))
    assert path[-1] == tuple(bound[:-1])
    previous = np.inf
    for ranks in path:
        err = float(np.linalg.norm(F.project(W, BTT, ms=ms, ns=ns, ranks=ranks).to_dense() - W))
        tails = block_tails(W, ms, ns, ranks)
        assert max(tails) <= err * (1 + 1e-10) + 1e-12
        assert err <= np.sqrt(np.sum(np.square(tails))) * (1 + 1e-10) + 1e-12
        assert err <= previous * (1 + 1e-12) + 1e-12
        previous = err
    assert previous < 1e-12 * np.linalg.norm(W)
    # Ranks beyond the bound are zero-padded: requested shapes, same (exact) result.
    big = tuple(r + 2 for r in path[-1])
    A = F.project(W, BTT, ms=ms, ns=ns, ranks=big)
    assert A.ranks == big
    assert rel_error(A, W) < 1e-12


def test_project_one_core_and_complex() -> None:
    rng = np.random.default_rng(6)
    W = rng.standard_normal((6, 4)) + 1j * rng.standard_normal((6, 4))
    A = F.project(W, BTT, ms=(6,), ns=(4,), ranks=())
    assert A.cores[0].shape == (1, 1, 6, 4)
    np.testing.assert_array_equal(A.to_dense(), W)
    B = F.project(W, BTT, ms=(2, 3), ns=(2, 2), ranks=2)
    assert np.iscomplexobj(B.cores[0])
    assert rel_error(B, W) < 1e-12


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_project_on_other_backends(backend: str) -> None:
    rng = np.random.default_rng(7)
    W = rng.standard_normal((12, 8))
    spec = {"ms": (2, 3, 2), "ns": (2, 2, 2), "ranks": (2, 2)}
    expected = F.project(W, BTT, **spec).to_dense()
    A = F.project(to_backend(W, backend), BTT, **spec)
    assert isinstance(A, BTT)
    assert A.backend.name == backend
    np.testing.assert_allclose(np.asarray(A.backend.to_numpy(A.to_dense())), expected, atol=1e-10)
    if backend == "jax":
        import jax

        dense = jax.jit(lambda w: F.project(w, BTT, **spec).to_dense())(to_backend(W, backend))
        np.testing.assert_allclose(np.asarray(dense), expected, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"ms": (2, 3), "ns": (2, 2), "ranks": 1}, ValueError, r"\(4, 4\).*ms=\(2, 3\).*\(6, 4\)"),
        ({"ms": (2, 2), "ns": (4,), "ranks": 1}, ValueError, "same positive length"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": -1}, ValueError, r"ranks must be positive.*\(-1,\)"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": (1, 2)}, ValueError, "2 cores have 1 bond ranks"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": "2"}, TypeError, "ranks must be an int"),
        ({"ms": (2, 2), "ns": [2.0, 2], "ranks": 1}, TypeError, "entry of ns must be an int"),
    ],
)
def test_project_bad_spec(kwargs: dict[str, Any], error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        F.project(np.ones((4, 4)), BTT, **kwargs)


def test_project_bad_matrix() -> None:
    with pytest.raises(ValueError, match=r"W must be 2-D, got shape \(4,\)"):
        F.project(np.ones(4), BTT, ms=(2, 2), ns=(1, 1), ranks=1)
    with pytest.raises(TypeError, match="int64"):
        F.project(np.ones((4, 4), dtype=np.int64), BTT, ms=(2, 2), ns=(2, 2), ranks=1)
