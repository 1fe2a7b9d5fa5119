"""`TT`: conformance against an einsum reference, layout and errors, and TT-SVD projection."""

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
from structlin.operators.tt import TT


# -- an independent dense reference ---------------------------------------------------------
def tt_dense(cores: list[np.ndarray]) -> np.ndarray:
    """`W[i, j] = G_1[:, i_1, j_1, :] ... G_c[:, i_c, j_c, :]`, written out with einsum."""
    m = math.prod(G.shape[1] for G in cores)
    n = math.prod(G.shape[2] for G in cores)
    if len(cores) == 1:
        return cores[0][0, :, :, 0]
    if len(cores) == 2:
        return np.einsum("aijb,bklc->ikjl", *cores).reshape(m, n)
    if len(cores) == 3:
        return np.einsum("aijb,bklc,cpqd->ikpjlq", *cores).reshape(m, n)
    raise ValueError(f"this reference is written out for 1 to 3 cores, got {len(cores)}")


def tt_by_entries(cores: list[np.ndarray]) -> np.ndarray:
    """The same matrix entry by entry, as the product of the `c` core slices."""
    ms = [G.shape[1] for G in cores]
    ns = [G.shape[2] for G in cores]
    W = np.zeros((math.prod(ms), math.prod(ns)), dtype=cores[0].dtype)
    for row, i in enumerate(np.ndindex(*ms)):
        for col, j in enumerate(np.ndindex(*ns)):
            product = np.eye(1)
            for G, it, jt in zip(cores, i, j, strict=True):
                product = product @ G[:, it, jt, :]
            W[row, col] = product[0, 0]
    return W


def test_reference_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 3, 1, 3), (3, 2, 2, 1)]]
    np.testing.assert_allclose(tt_dense(cores), tt_by_entries(cores), atol=1e-12)


# -- conformance ------------------------------------------------------------------------------
def tt_case(g: Gen) -> Built:
    c = g.choice([1, 2, 2, 3])
    hi = 4 if c < 3 else 3
    ms = [g.size(1, hi) for _ in range(c)]
    ns = list(ms) if g.choice([True, False]) else [g.size(1, hi) for _ in range(c)]
    bonds = [1, *(g.size(1, 3) for _ in range(c - 1)), 1]
    cores = [g.normal(bonds[t], ms[t], ns[t], bonds[t + 1]) for t in range(c)]
    return Built(lambda arr: TT(*(arr(G) for G in cores)), tt_dense(cores))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_conformance(backend: str, dtype: str) -> None:
    @settings(max_examples=examples(backend, dtype))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        gen = Gen(data.draw, dtype)
        check_operator(tt_case(gen), backend, dtype, gen)

    run()


# -- construction -----------------------------------------------------------------------------
def test_sizes_and_transpose_layout() -> None:
    A = TT.random((2, 3, 4), (5, 1, 2), (3, 2), rng=0)
    assert A.ms == (2, 3, 4)
    assert A.ns == (5, 1, 2)
    assert A.ranks == (3, 2)
    assert A.shape == (24, 10)
    assert [G.shape for G in A.cores] == [(1, 2, 5, 3), (3, 3, 1, 2), (2, 4, 2, 1)]
    At = A.T
    assert isinstance(At, TT)
    assert (At.ms, At.ns, At.ranks) == ((5, 1, 2), (2, 3, 4), (3, 2))


def test_random_scale_and_seed() -> None:
    A = TT.random((8, 8), (16, 16), 4, rng=1)
    for G, (fan_in, fan_out) in zip(A.cores, [(16 * 4, 8), (16, 4 * 8)], strict=True):
        assert np.std(G) == pytest.approx(mup_std(fan_in, fan_out), rel=0.1)
    B = TT.random((8, 8), (16, 16), 4, rng=1)
    assert all(np.array_equal(a, b) for a, b in zip(A.cores, B.cores, strict=True))
    C = TT.random((8, 8), (16, 16), 4, rng=2)
    assert not np.array_equal(A.cores[0], C.cores[0])
    # One generator threads through the cores: equal shapes, different values.
    D = TT.random((2, 2), (2, 2), 1, rng=3)
    assert not np.allclose(D.cores[0].ravel(), D.cores[1].ravel())


def test_mixed_dtypes_are_cast_once() -> None:
    G1 = np.ones((1, 2, 2, 2), dtype=np.float32)
    G2 = np.ones((2, 2, 2, 1), dtype=np.float64)
    A = TT(G1, G2)
    assert A.dtype == np.float64
    assert all(G.dtype == np.float64 for G in A.cores)


def test_matmat_never_forms_the_matrix() -> None:
    """A 4096 x 4096 TT (128 MiB dense) applied to a vector with a few vectors of memory."""
    A = TT.random((16, 16, 16), (16, 16, 16), 4, rng=0)
    x = np.random.default_rng(1).standard_normal(4096)
    tracemalloc.start()
    y = A @ x
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 4096 * 8, f"peak {peak} bytes suggests a dense intermediate"
    # One entry against the definition: row i of W from the core slices at i.
    i = (3, 7, 11)
    G1, G2, G3 = A.cores
    row = np.einsum("ja,akb,bl->jkl", G1[0, i[0]], G2[:, i[1]], G3[:, i[2], :, 0])
    assert y[(i[0] * 16 + i[1]) * 16 + i[2]] == pytest.approx(np.sum(row * x.reshape(16, 16, 16)))


def test_empty_right_hand_side() -> None:
    A = TT.random((2, 3), (3, 2), 2, rng=0)
    assert (A @ np.ones((6, 0))).shape == (6, 0)


@pytest.mark.parametrize(
    ("shapes", "pattern"),
    [
        ([(2, 2, 2, 1)], r"r_0 = r_c = 1.*\(2, 2, 2, 1\)"),
        ([(1, 2, 2, 2)], r"r_0 = r_c = 1.*\(1, 2, 2, 2\)"),
        (
            [(1, 2, 2, 3), (2, 2, 2, 1)],
            r"cores 1 and 2 do not chain.*\(1, 2, 2, 3\).*\(2, 2, 2, 1\)",
        ),
        ([(1, 2, 2, 2), (2, 0, 2, 1)], r"core 2 has shape \(2, 0, 2, 1\).*positive"),
    ],
)
def test_inconsistent_cores(shapes: list[tuple[int, ...]], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TT(*(np.ones(s) for s in shapes))


def test_bad_cores() -> None:
    with pytest.raises(ValueError, match="at least one core"):
        TT()
    with pytest.raises(ValueError, match=r"TT core 1 must be 4-D, got shape \(2, 2\)"):
        TT(np.ones((2, 2)))
    with pytest.raises(TypeError, match="TT core 2 has dtype int64"):
        TT(np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1), dtype=np.int64))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="mixes backends"):
        TT(np.ones((1, 2, 2, 1)), torch.ones((1, 2, 2, 1), dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"ms": (2, 3), "ns": (2, 2), "ranks": 1}, ValueError, r"\(4, 4\).*ms=\(2, 3\).*\(6, 4\)"),
        ({"ms": (2, 2), "ns": (2,), "ranks": 1}, ValueError, "same positive length"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": 0}, ValueError, r"ranks must be positive.*\(0,\)"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": (1, 1)}, ValueError, "2 cores have 1 bond ranks"),
        ({"ms": (2, 2), "ns": (2, 2), "ranks": 1.5}, TypeError, "ranks must be an int"),
        ({"ms": 4, "ns": (2, 2), "ranks": 1}, TypeError, "ms must be a sequence"),
        ({"ms": (2, 0), "ns": (2, 2), "ranks": 1}, ValueError, "sizes must be positive"),
    ],
)
def test_project_bad_spec(kwargs: dict[str, Any], error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        F.project(np.ones((4, 4)), TT, **kwargs)


def test_random_bad_spec() -> None:
    with pytest.raises(ValueError, match=r"TT.random: 3 cores have 2 bond ranks.*got 1"):
        TT.random((2, 2, 2), (2, 2, 2), (2,))


# -- projection (TT-SVD) ----------------------------------------------------------------------
def rel_error(A: TT, W: np.ndarray) -> float:
    return float(np.linalg.norm(F.to_dense(A) - W) / np.linalg.norm(W))


def unfolding_tails(
    W: np.ndarray, ms: tuple[int, ...], ns: tuple[int, ...], ranks: tuple[int, ...]
) -> list[float]:
    """`e_t`: the error of the best rank-`r_t` approximation of the unfolding
    `T[(i_1, j_1, ..., i_t, j_t), (i_{t+1}, j_{t+1}, ...)]`, by NumPy's SVD."""
    c = len(ms)
    T = W.reshape(ms + ns).transpose([a for t in range(c) for a in (t, c + t)])
    tails = []
    for t in range(1, c):
        rows = math.prod(ms[:t]) * math.prod(ns[:t])
        s = np.linalg.svd(T.reshape(rows, -1), compute_uv=False)
        tails.append(float(np.sqrt(np.sum(s[ranks[t - 1] :] ** 2))))
    return tails


@pytest.mark.parametrize(
    ("ms", "ns"), [((2, 3), (3, 2)), ((2, 2, 3), (3, 2, 2)), ((2, 1, 3), (1, 4, 2))]
)
def test_project_exact_at_full_ranks(ms: tuple[int, ...], ns: tuple[int, ...]) -> None:
    W = np.random.default_rng(0).standard_normal((math.prod(ms), math.prod(ns)))
    c = len(ms)
    full = tuple(
        min(math.prod(ms[:t]) * math.prod(ns[:t]), math.prod(ms[t:]) * math.prod(ns[t:]))
        for t in range(1, c)
    )
    A = F.project(W, TT, ms=ms, ns=ns, ranks=full)
    assert A.ranks == full
    assert rel_error(A, W) < 1e-12
    # Larger ranks are zero-padded to the requested shapes and change nothing.
    B = F.project(W, TT, ms=ms, ns=ns, ranks=tuple(r + 2 for r in full))
    assert B.ranks == tuple(r + 2 for r in full)
    assert rel_error(B, W) < 1e-12


@pytest.mark.parametrize(
    ("ms", "ns", "ranks"),
    [((3, 4), (4, 3), (2,)), ((2, 3, 2), (2, 2, 3), (3, 2)), ((2, 2, 2), (3, 3, 1), (1, 3))],
)
def test_project_recovers_a_tt(
    ms: tuple[int, ...], ns: tuple[int, ...], ranks: tuple[int, ...]
) -> None:
    A = TT.random(ms, ns, ranks, rng=4)
    W = A.to_dense()
    B = F.project(W, TT, ms=ms, ns=ns, ranks=ranks)
    assert [G.shape for G in B.cores] == [G.shape for G in A.cores]
    assert rel_error(B, W) < 1e-10


@pytest.mark.parametrize(("ms", "ns"), [((3, 4), (4, 3)), ((2, 3, 2), (2, 2, 3))])
def test_project_error_bounds_and_monotone(ms: tuple[int, ...], ns: tuple[int, ...]) -> None:
    """`max_t e_t <= ||W - A|| <= sqrt(sum_t e_t^2)` and the error never grows with the ranks."""
    W = np.random.default_rng(5).standard_normal((math.prod(ms), math.prod(ns)))
    c = len(ms)
    previous = np.inf
    for r in range(1, 13):
        ranks = (r,) * (c - 1)
        err = float(np.linalg.norm(F.project(W, TT, ms=ms, ns=ns, ranks=ranks).to_dense() - W))
        tails = unfolding_tails(W, ms, ns, ranks)
        assert max(tails) <= err * (1 + 1e-10) + 1e-12
        assert err <= np.sqrt(np.sum(np.square(tails))) * (1 + 1e-10) + 1e-12
        if c == 2:  # a sum of r Kronecker products: TT-SVD is optimal (Van Loan-Pitsianis)
            assert err == pytest.approx(tails[0], rel=1e-10, abs=1e-12)
        assert err <= previous * (1 + 1e-12) + 1e-12
        previous = err
    assert previous < 1e-10 * np.linalg.norm(W)


def test_project_complex() -> None:
    rng = np.random.default_rng(6)
    W = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    A = F.project(W, TT, ms=(2, 3), ns=(3, 2), ranks=6)
    assert np.iscomplexobj(A.cores[0])
    assert rel_error(A, W) < 1e-12


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_project_on_other_backends(backend: str) -> None:
    rng = np.random.default_rng(7)
    W = rng.standard_normal((12, 8))
    spec = {"ms": (3, 4), "ns": (2, 4), "ranks": 3}
    expected = F.project(W, TT, **spec).to_dense()
    A = F.project(to_backend(W, backend), TT, **spec)
    assert isinstance(A, TT)
    assert A.backend.name == backend
    np.testing.assert_allclose(np.asarray(A.backend.to_numpy(A.to_dense())), expected, atol=1e-10)
    if backend == "jax":
        import jax

        dense = jax.jit(lambda w: F.project(w, TT, **spec).to_dense())(to_backend(W, backend))
        np.testing.assert_allclose(np.asarray(dense), expected, atol=1e-10)
