"""Monarch and generalised Monarch: conformance, projection, structured inverse, fast transforms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import structlin as sl
from conformance import BACKENDS, DTYPES, Built, Gen, check_operator, examples, to_backend, to_numpy


# -- an independent dense reference ---------------------------------------------------------
def stride_matrix(rows: int, cols: int) -> np.ndarray:
    """`P` with `P @ x == x.reshape(rows, cols).T.reshape(-1)`."""
    return np.eye(rows * cols)[np.arange(rows * cols).reshape(rows, cols).T.reshape(-1)]


def reference(blocks: list[np.ndarray], perms: list[Any], shape: tuple[int, int] | None = None):
    """`S_out P_c B_c ... P_1 B_1 P_0 S_in^T` from explicit matrices."""
    n_in = blocks[0].shape[0] * blocks[0].shape[2]
    dense = np.eye(n_in)
    for perm, b in zip(perms, blocks, strict=False):
        if perm is not None:
            dense = stride_matrix(*perm) @ dense
        dense = scipy.linalg.block_diag(*b) @ dense
    if perms[-1] is not None:
        dense = stride_matrix(*perms[-1]) @ dense
    if shape is not None:
        dense = dense[: shape[0], : shape[1]]
    return dense


def original_monarch(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The reference multiply of the original Monarch code, for a batch of rows `x`."""
    k, _, p = w1.shape
    l, s, r = w2.shape
    batch = x.shape[0]
    out1 = np.einsum("kqp,bkp->bkq", w1, x.reshape(batch, k, p)).reshape(batch, r, l)
    out2 = np.einsum("lsr,blr->bsl", w2, out1.transpose(0, 2, 1))
    return out2.reshape(batch, s * l)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# -- conformance cases ------------------------------------------------------------------------
def monarch_square(g: Gen) -> Built:
    """`nblocks` blocks on both sides of an `n x n` Monarch, invertible."""
    nb, blk = g.size(1, 3), g.size(1, 3)
    b1, b2 = g.well_conditioned(nb, blk, blk), g.well_conditioned(nb, blk, blk)
    ref = reference([b1, b2], [None, (blk, nb), (nb, blk)])
    return Built(lambda arr: sl.Monarch(arr(b1), arr(b2)), ref, invertible=True)


def monarch_rectangular(g: Gen) -> Built:
    """Any block counts and shapes with `l r == k q`."""
    k, q, p, s = g.size(1, 3), g.size(1, 3), g.size(1, 3), g.size(1, 3)
    l = g.choice(divisors(k * q))
    r = k * q // l
    b1, b2 = g.normal(k, q, p), g.normal(l, s, r)
    ref = reference([b1, b2], [None, (r, l), (l, s)])
    return Built(lambda arr: sl.Monarch(arr(b1), arr(b2)), ref)


def monarch_padded(g: Gen) -> Built:
    """Sizes that do not divide: zero-padded input, truncated output."""
    d_in, d_out, nb = g.size(2, 7), g.size(2, 7), g.size(1, 2)
    (k, q, p), (l, s, r) = sl.Monarch.layout(d_in, d_out, nb)
    b1, b2 = g.normal(k, q, p), g.normal(l, s, r)
    ref = reference([b1, b2], [None, (r, l), (l, s)], (d_out, d_in))
    return Built(lambda arr: sl.Monarch(arr(b1), arr(b2), shape=(d_out, d_in)), ref)


def generalized(g: Gen) -> Built:
    """Three square-block factors with arbitrary stride permutations: invertible."""
    n = g.choice([4, 6, 8])
    nbs = [g.choice(divisors(n)) for _ in range(3)]
    blocks = [g.well_conditioned(nb, n // nb, n // nb) for nb in nbs]
    perms = [g.choice([None, *((d, n // d) for d in divisors(n))]) for _ in range(4)]
    ref = reference(blocks, perms)
    return Built(
        lambda arr: sl.GeneralizedMonarch([arr(b) for b in blocks], perms), ref, invertible=True
    )


def monarch_power(g: Gen) -> Built:
    """`Monarch^2` built with `@`."""
    nb, blk = g.size(1, 3), g.size(1, 3)
    bs = [g.well_conditioned(nb, blk, blk) for _ in range(4)]
    std = [None, (blk, nb), (nb, blk)]
    ref = reference(bs[:2], std) @ reference(bs[2:], std)
    return Built(
        lambda arr: sl.Monarch(arr(bs[0]), arr(bs[1])) @ sl.Monarch(arr(bs[2]), arr(bs[3])),
        ref,
        invertible=True,
    )


CASES = [monarch_square, monarch_rectangular, monarch_padded, generalized, monarch_power]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_conformance(case: Any, backend: str, dtype: str) -> None:
    @settings(max_examples=examples(backend, dtype))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        gen = Gen(data.draw, dtype)
        check_operator(case(gen), backend, dtype, gen)

    run()


# -- layout and the original code ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("d_in", "d_out", "nblocks", "expected"),
    [
        (16, 16, 4, ((4, 4, 4), (4, 4, 4))),
        (10, 13, 4, ((4, 3, 3), (4, 4, 3))),  # in_ext 12 < out_ext 16: blkdiag1 square
        (20, 6, 2, ((2, 3, 10), (2, 3, 3))),  # in_ext >= out_ext: blkdiag2 square
    ],
)
def test_layout_matches_original_monarch_linear(d_in, d_out, nblocks, expected) -> None:
    assert sl.Monarch.layout(d_in, d_out, nblocks) == expected
    M = sl.Monarch.random(d_in, d_out, nblocks, rng=0)
    assert M.shape == (d_out, d_in)
    assert (M.blkdiag1.shape, M.blkdiag2.shape) == expected


def test_matches_original_multiply_with_padding() -> None:
    rng = np.random.default_rng(0)
    M = sl.Monarch.random(10, 13, 4, rng=1)
    x = rng.standard_normal((5, 10))
    padded = np.concatenate([x, np.zeros((5, 2))], axis=1)
    expected = original_monarch(padded, M.blkdiag1, M.blkdiag2)[:, :13]
    np.testing.assert_allclose(x @ M.T, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((M @ x.T).T, expected, rtol=1e-12, atol=1e-12)


# More blocks than min(d_in, d_out), which the original MonarchLinear takes: blocks of
# width 1, the input (or output) padded up to nblocks entries.
MANY_BLOCKS = [
    (3, 16, 4, ((4, 1, 1), (4, 4, 1))),
    (16, 3, 8, ((8, 1, 2), (8, 1, 1))),
    (5, 7, 9, ((9, 1, 1), (9, 1, 1))),
    (16, 8, 32, ((32, 1, 1), (32, 1, 1))),
    (1, 1, 3, ((3, 1, 1), (3, 1, 1))),
]


@pytest.mark.parametrize(("d_in", "d_out", "nblocks", "expected"), MANY_BLOCKS)
def test_more_blocks_than_rows_or_columns(d_in, d_out, nblocks, expected) -> None:
    assert sl.Monarch.layout(d_in, d_out, nblocks) == expected
    M = sl.Monarch.random(d_in, d_out, nblocks, rng=1)
    assert M.shape == (d_out, d_in)
    (k, _, p), _ = expected
    x = np.random.default_rng(0).standard_normal((5, d_in))
    padded = np.concatenate([x, np.zeros((5, k * p - d_in))], axis=1)
    want = original_monarch(padded, M.blkdiag1, M.blkdiag2)[:, :d_out]
    np.testing.assert_allclose(x @ M.T, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((M @ x.T).T, want, rtol=1e-12, atol=1e-12)
    D = M.to_dense()
    np.testing.assert_allclose(
        D, original_monarch(np.eye(k * p)[:d_in], M.blkdiag1, M.blkdiag2)[:, :d_out].T, atol=1e-12
    )
    # The projection: exact on a Monarch of that layout, and optimal on any matrix.
    P = sl.project(D, sl.Monarch, nblocks=nblocks)
    assert (P.blkdiag1.shape, P.blkdiag2.shape) == expected
    np.testing.assert_allclose(P.to_dense(), D, atol=1e-10)
    W = np.random.default_rng(2).standard_normal((d_out, d_in))
    err = np.linalg.norm(W - sl.project(W, sl.Monarch, nblocks=nblocks).to_dense())
    np.testing.assert_allclose(err, optimal_error(W, expected), rtol=1e-9, atol=1e-12)


def test_random_is_reproducible_and_scaled() -> None:
    a = sl.Monarch.random(256, 256, 16, rng=3)
    b = sl.Monarch.random(256, 256, 16, rng=3, backend="torch")
    np.testing.assert_allclose(a.blkdiag1, to_numpy(b.blkdiag1).astype(np.float64), rtol=1e-6)
    # muP scale: the spectral norm of a square Monarch is of order one.
    norm = np.linalg.norm(a.to_dense(), 2)
    assert 0.5 < norm < 8, norm


# -- structure of the results ---------------------------------------------------------------------
def well_conditioned_monarch(nblocks: int, block: int, seed: int = 0) -> sl.Monarch:
    rng = np.random.default_rng(seed)
    b1, b2 = np.eye(block) + 0.3 * rng.standard_normal((2, nblocks, block, block)) / block**0.5
    return sl.Monarch(b1, b2)


def test_transpose_inverse_and_power_stay_monarch() -> None:
    M = well_conditioned_monarch(3, 4)
    assert type(M.T) is sl.Monarch
    assert type(M.H) is sl.Monarch
    assert M.T.perms == ((4, 3), (3, 4), None)
    assert type(M.inv()) is sl.Monarch
    assert M.inv().blkdiag1.shape == M.blkdiag2.shape
    P = M @ M @ M
    assert type(P) is sl.GeneralizedMonarch
    assert P.nfactors == 6
    np.testing.assert_allclose(P.to_dense(), np.linalg.matrix_power(M.to_dense(), 3), atol=1e-12)
    np.testing.assert_allclose(P.inv().to_dense(), np.linalg.inv(P.to_dense()), atol=1e-10)


def test_inverse_is_structured_and_cheap() -> None:
    M = well_conditioned_monarch(32, 32)
    Minv = M.inv()
    # The inverse stores 2 * 32 blocks of 32 x 32, not a 1024 x 1024 matrix.
    assert sum(b.size for b in Minv.blocks) == 2 * 32**3
    x = np.random.default_rng(1).standard_normal(1024)
    np.testing.assert_allclose(M @ (Minv @ x), x, atol=1e-9)
    sign, logabsdet = sl.slogdet(M)
    ref_sign, ref_logabsdet = np.linalg.slogdet(M.to_dense())
    assert sign == ref_sign
    np.testing.assert_allclose(logabsdet, ref_logabsdet, rtol=1e-10)


def test_padded_monarch_falls_back_to_dense_inverse() -> None:
    M = sl.Monarch.random(10, 10, 4, rng=0)  # padded to 12
    assert M.padded
    assert isinstance(M.inv(), sl.Inverse)
    x = np.ones(10)
    np.testing.assert_allclose(M.inv() @ x, np.linalg.solve(M.to_dense(), x), rtol=1e-8)


def test_stride_permutation_signs_in_logdet() -> None:
    # Odd permutations: (rows, cols) = (2, 3) has sign -1; identity blocks isolate it.
    eye = np.broadcast_to(np.eye(1), (6, 1, 1)).copy()
    for perms in ([(2, 3), None], [(2, 3), (3, 2)], [None, (3, 2)]):
        M = sl.GeneralizedMonarch([eye], perms)
        assert sl.slogdet(M)[0] == np.linalg.slogdet(M.to_dense())[0]


def test_singular_block_is_named() -> None:
    b1 = np.stack([np.eye(2), np.zeros((2, 2))])
    M = sl.Monarch(b1, np.stack([np.eye(2)] * 2))
    with pytest.raises(
        sl.SingularOperatorError, match=r"blocks\[0\] has singular block\(s\) \[1\]"
    ):
        M.inv()
    with pytest.raises(sl.SingularOperatorError, match="singular"):
        sl.solve(M, np.ones(4))
    assert sl.slogdet(M)[1] == -np.inf


# -- projection ---------------------------------------------------------------------------------
SHAPES = [
    ((4, 4, 4), (4, 4, 4)),  # square, sqrt(n) blocks: rank 1 per block pair
    ((2, 8, 8), (2, 8, 8)),  # square, 2 blocks: rank 4 per block pair
    ((3, 4, 5), (6, 2, 2)),  # rectangular, q not a multiple of l
    ((2, 6, 3), (3, 5, 4)),  # rectangular, uneven ranks per pair
    ((1, 4, 2), (1, 2, 4)),  # rank bound 4 above the 2 x 2 block's 2 triplets: zero ones
]


@pytest.mark.parametrize("blocks", SHAPES)
def test_projection_recovers_monarch(blocks) -> None:
    rng = np.random.default_rng(0)
    (k, q, p), (l, s, r) = blocks
    M = sl.Monarch(rng.standard_normal((k, q, p)), rng.standard_normal((l, s, r)))
    D = M.to_dense()
    P = sl.project(D, sl.Monarch, blocks=blocks)
    assert type(P) is sl.Monarch
    assert P.blkdiag1.shape == (k, q, p)
    assert np.linalg.norm(P.to_dense() - D) <= 1e-10 * np.linalg.norm(D)


@pytest.mark.parametrize(("d_in", "d_out", "nblocks"), [(16, 16, 4), (12, 20, 4), (10, 13, 4)])
def test_projection_recovers_monarch_from_sizes(d_in, d_out, nblocks) -> None:
    M = sl.Monarch.random(d_in, d_out, nblocks, rng=1)
    D = M.to_dense()
    P = sl.project(D, sl.Monarch, nblocks=nblocks)
    assert P.shape == (d_out, d_in)
    assert np.linalg.norm(P.to_dense() - D) <= 1e-10 * np.linalg.norm(D)


def optimal_error(W: np.ndarray, blocks) -> float:
    """The optimum from first principles: the best rank-#t approximation of each block pair."""
    (k, q, p), (l, s, _) = blocks
    Wp = np.zeros((l * s, k * p))
    Wp[: W.shape[0], : W.shape[1]] = W
    total = 0.0
    for kk in range(k):
        for ll in range(l):
            rank = sum(1 for t in range(k * q) if t // q == kk and t % l == ll)
            block = Wp[ll::l, kk * p : (kk + 1) * p]  # rows ss * l + ll, columns of input block kk
            sv = np.linalg.svd(block, compute_uv=False)
            total += np.sum(sv[rank:] ** 2)
    return float(np.sqrt(total))


@pytest.mark.parametrize("blocks", SHAPES)
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31), sparse=st.booleans())
def test_projection_is_the_minimiser(blocks, seed, sparse) -> None:
    rng = np.random.default_rng(seed)
    (k, _, p), (l, s, _) = blocks
    W = rng.standard_normal((l * s, k * p))
    if sparse:
        W *= rng.uniform(size=W.shape) < 0.2
    P = sl.project(W, sl.Monarch, blocks=blocks)
    err = np.linalg.norm(W - P.to_dense())
    np.testing.assert_allclose(err, optimal_error(W, blocks), rtol=1e-9, atol=1e-12)
    # No small perturbation of the factors does better.
    for _ in range(20):
        eps = 10.0 ** rng.uniform(-6, -2)
        b1 = P.blkdiag1 + eps * rng.standard_normal(P.blkdiag1.shape)
        b2 = P.blkdiag2 + eps * rng.standard_normal(P.blkdiag2.shape)
        assert np.linalg.norm(W - sl.Monarch(b1, b2).to_dense()) >= err - 1e-12


def test_projection_with_padding_is_optimal() -> None:
    W = np.random.default_rng(2).standard_normal((13, 10))
    blocks = sl.Monarch.layout(10, 13, 4)
    P = sl.project(W, sl.Monarch, nblocks=4)
    err = np.linalg.norm(W - P.to_dense())
    np.testing.assert_allclose(err, optimal_error(W, blocks), rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_projection_on_every_backend(backend: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    M = sl.Monarch.random(16, 16, 4, rng=rng, dtype="complex128" if dtype == "complex128" else None)
    W = to_backend(M.to_dense().astype(dtype), backend)
    P = sl.project(W, sl.Monarch, nblocks=4)
    assert P.backend.name == backend
    assert str(P.dtype).replace("torch.", "") == dtype
    D = M.to_dense()
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert np.linalg.norm(to_numpy(P.to_dense()) - D) <= tol * np.linalg.norm(D)


def test_projection_under_jit() -> None:
    jax = pytest.importorskip("jax")
    W = jax.numpy.asarray(np.random.default_rng(0).standard_normal((16, 16)))
    dense = jax.jit(lambda w: sl.project(w, sl.Monarch, nblocks=4).to_dense())(W)
    expected = sl.project(np.asarray(W), sl.Monarch, nblocks=4).to_dense()
    np.testing.assert_allclose(np.asarray(dense), expected, atol=1e-10)


# -- exact fast transforms -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 12, 30, 64, 1024])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_dft_matches_numpy_fft(n: int, norm: str) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3)) + 1j * rng.standard_normal((n, 3))
    F = sl.dft(n, norm=norm)
    expected = np.fft.fft(x, axis=0, norm=norm)
    assert np.linalg.norm(F @ x - expected) <= 1e-10 * np.linalg.norm(expected)
    assert np.linalg.norm(F.inv() @ expected - x) <= 1e-10 * np.linalg.norm(x)


def test_dft_is_a_small_monarch() -> None:
    F = sl.dft(1024)
    assert F.blkdiag1.shape == (32, 32, 32)
    assert F.blkdiag2.shape == (32, 32, 32)
    G = sl.dft(12, factors=(3, 4))
    np.testing.assert_allclose(G.to_dense(), scipy.linalg.dft(12), atol=1e-12)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_dft_on_other_backends(backend: str) -> None:
    x = np.random.default_rng(0).standard_normal(64).astype(np.complex64)
    y = sl.dft(64, dtype="complex64", backend=backend) @ to_backend(x, backend)
    np.testing.assert_allclose(to_numpy(y), np.fft.fft(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 256, 1024])
def test_hadamard_matches_scipy(n: int) -> None:
    H = sl.hadamard(n)
    np.testing.assert_array_equal(H.to_dense(), scipy.linalg.hadamard(n))
    Hn = sl.hadamard(n, normalized=True)
    np.testing.assert_allclose((Hn @ Hn).to_dense(), np.eye(n), atol=1e-12)


def test_transform_errors() -> None:
    with pytest.raises(ValueError, match="power of two"):
        sl.hadamard(12)
    with pytest.raises(ValueError, match="positive integer"):
        sl.dft(0)
    with pytest.raises(ValueError, match="with a product of 12, got 10"):
        sl.dft(12, factors=(5, 2))
    with pytest.raises(ValueError, match="norm"):
        sl.dft(8, norm="unitary")
    with pytest.raises(TypeError, match="complex"):
        sl.dft(8, dtype="float64")


# -- bad input ----------------------------------------------------------------------------------
def test_constructor_errors() -> None:
    b = np.ones((2, 3, 3))
    with pytest.raises(ValueError, match=r"l \* r == k \* q"):
        sl.Monarch(b, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="nblocks, out_block, in_block"):
        sl.Monarch(np.ones((6, 6)), b)
    with pytest.raises(TypeError, match="floating-point"):
        sl.Monarch(np.ones((2, 3, 3), dtype=int), b)
    with pytest.raises(ValueError, match="at most the unpadded size"):
        sl.Monarch(b, b, shape=(7, 6))
    with pytest.raises(ValueError, match=r"rows \* cols == 6"):
        sl.Monarch(b, b, perms=[(4, 2), (3, 2), None])
    with pytest.raises(ValueError, match=r"\(rows, cols\) pairs"):
        sl.Monarch(b, b, perms=[None, (3, 2, 1), None])
    with pytest.raises(ValueError, match="needs len\\(blocks\\) \\+ 1 = 3 permutations"):
        sl.Monarch(b, b, perms=[None, None])
    with pytest.raises(ValueError, match="consecutive factors"):
        sl.GeneralizedMonarch([b, np.ones((4, 2, 2))], [None, None, None])
    with pytest.raises(TypeError, match="different dtypes"):
        sl.Monarch(b, b.astype(np.float32))
    with pytest.raises(ValueError, match="nblocks must be a positive integer"):
        sl.Monarch.layout(3, 16, 0)


def test_mixed_backends_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="mixes backends"):
        sl.Monarch(np.ones((2, 3, 3)), torch.ones(2, 3, 3, dtype=torch.float64))


def test_projection_errors() -> None:
    W = np.ones((16, 16))
    with pytest.raises(TypeError, match="exactly one of nblocks"):
        sl.project(W, sl.Monarch)
    with pytest.raises(ValueError, match="do not fit W"):
        sl.project(W, sl.Monarch, blocks=((2, 4, 4), (2, 4, 4)))
    with pytest.raises(TypeError, match="takes no option rank; its options: nblocks, blocks"):
        sl.project(W, sl.Monarch, nblocks=4, rank=2)
    with pytest.raises(TypeError, match="no projection onto Sum"):
        sl.project(W, sl.Sum)
    with pytest.raises(TypeError, match="operator class"):
        sl.project(W, "monarch")
    with pytest.raises(ValueError, match="2-D"):
        sl.project(np.ones(16), sl.Monarch, nblocks=4)
