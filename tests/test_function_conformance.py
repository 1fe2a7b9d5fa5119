"""The functions of Hermitian operators through the conformance kit (issue 21): `eigh` up to
ordering and sign, `solve`, `inv`, `slogdet`, `diag`, `trace` and the matrix functions of
random symmetric positive definite operators against dense NumPy, on NumPy, PyTorch and
JAX in float32 and float64 (`structlin.testing.check_functions`); and the structured paths
of the symmetric permutation, the Monarch matrices similar to a block-diagonal one and the
sums in one eigenbasis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import structlin as sl
from conformance import BACKENDS
from structlin.expressions.spectral import abs_squared
from structlin.operators.monarch import similar_block_diagonal
from structlin.testing import check_functions

DTYPES = ("float32", "float64")


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, n)) / np.sqrt(n)
    return m @ m.T + 0.5 * np.eye(n)


def _spd_blocks(rng: np.random.Generator, nb: int, p: int) -> np.ndarray:
    return np.stack([_spd(rng, p) for _ in range(nb)])


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((n, n)))[0]


def _symmetric_monarch(rng: np.random.Generator) -> Callable[[Any], sl.LinearOperator]:
    """A default-layout Monarch `P^T B_2 P D` (diagonal first factor) whose permuted
    block-diagonal `C = B_2 D'` has SPD blocks: `B_2` is `C` divided by `D'`."""
    d = rng.uniform(0.5, 2.0, (12, 1, 1))
    pattern, _ = similar_block_diagonal(sl.Monarch(d, np.ones((3, 4, 4))))
    second = _spd_blocks(rng, 3, 4) / pattern
    return lambda arr: sl.Monarch(arr(d), arr(second))


def _cases() -> dict[str, tuple[Callable[[Any], sl.LinearOperator], bool]]:
    """Factories `arr -> operator` of SPD operators, and whether `eigh` must be structured."""
    rng = np.random.default_rng(0)
    a, b, c = _spd(rng, 3), _spd(rng, 4), _spd(rng, 2)
    blocks = _spd_blocks(rng, 3, 3)
    d = rng.uniform(0.5, 2.0, 6)
    dense = _spd(rng, 5)
    perm = np.array([3, 1, 4, 0, 2, 5])  # swaps (0 3), (2 4); fixed points 1, 5
    Q = _orthogonal(rng, 3)
    u, v = rng.uniform(0.5, 2.0, 9), rng.uniform(0.5, 2.0, 9)
    monarch_blocks = _spd_blocks(rng, 3, 4)

    def kron(arr: Any) -> sl.LinearOperator:
        return sl.Kron(sl.PSD(arr(a)), sl.PSD(arr(b)))

    def spectral_sum(arr: Any) -> sl.LinearOperator:
        vectors = sl.Kron(arr(Q), arr(Q))
        return sl.Spectral(vectors, arr(u)) + sl.Spectral(vectors, arr(v))

    def function_sum(arr: Any) -> sl.LinearOperator:
        K = kron(arr)
        return K + 0.5 * sl.apply(lambda w: 1 / w, K)

    def permutation(arr: Any) -> sl.LinearOperator:
        # A value-free permutation's eigenvectors take the backend's default dtype: give one.
        P = sl.Permutation(arr(perm), dtype=arr(np.zeros(1)).dtype)
        return sl.Symmetric(P) + 2.0 * sl.Identity(6)

    return {
        "dense": (lambda arr: sl.PSD(sl.Dense(arr(dense))), False),
        "diagonal": (lambda arr: sl.PSD(sl.Diagonal(arr(d))), True),
        "kron": (kron, True),
        "kron3": (lambda arr: sl.Kron(*(sl.PSD(arr(m)) for m in (c, a, c))), True),
        "psd(kron)": (lambda arr: sl.PSD(sl.Kron(arr(a), arr(b))), True),
        "blockdiag": (lambda arr: sl.PSD(sl.BlockDiag(arr(blocks))), True),
        "kron + cI": (lambda arr: kron(arr) + 0.3 * sl.Identity(12), True),
        "blockdiag + cI": (
            lambda arr: sl.PSD(sl.BlockDiag(arr(blocks))) + 0.3 * sl.Identity(9),
            True,
        ),
        "permutation + 2I": (permutation, True),
        "P^T B P": (
            lambda arr: sl.GeneralizedMonarch([arr(monarch_blocks)], [(3, 4), (4, 3)]),
            True,
        ),
        "monarch, diagonal first factor": (_symmetric_monarch(rng), True),
        "spectral + spectral": (spectral_sum, True),
        "K + f(K)": (function_sum, True),
        "kron(diag) + diag": (
            lambda arr: (
                sl.Kron(sl.Diagonal(arr(d[:2])), sl.Diagonal(arr(d[2:5]))) + sl.Diagonal(arr(d))
            ),
            True,
        ),
    }


CASES = _cases()

# JAX compiles the checks of each case anew (seconds on a CI core): the structures new to
# its rules run there, in float32 and float64 between them; every case on NumPy and PyTorch.
ON_JAX = {"kron + cI": ("float32",), "permutation + 2I": DTYPES, "P^T B P": ("float64",)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_functions_match_dense(name: str) -> None:
    make, structured = CASES[name]
    others = [b for b in BACKENDS if b != "jax"]
    check_functions(make, backends=others, dtypes=DTYPES, structured=structured)
    if "jax" in BACKENDS and name in ON_JAX:
        check_functions(make, backends=["jax"], dtypes=ON_JAX[name], structured=structured)


# -- what the kit itself catches -----------------------------------------------------------------


def test_check_functions_fails_on_a_wrong_reference_and_refuses_an_indefinite_one() -> None:
    a = np.array([[2.0, 1.0], [1.0, 2.0]])
    with pytest.raises(AssertionError, match="to_dense"):
        check_functions(sl.PSD(a), 2 * a, backends=["numpy"])
    with pytest.raises(ValueError, match="positive definite"):
        check_functions(sl.Symmetric(np.diag([1.0, -1.0])), backends=["numpy"])
    with pytest.raises(ValueError, match="Hermitian"):
        check_functions(sl.Dense(np.array([[1.0, 2.0], [0.0, 1.0]])), backends=["numpy"])
    with pytest.raises(AssertionError, match="not structured"):
        check_functions(sl.PSD(a), backends=["numpy"], structured=True)


# -- the symmetric permutation -------------------------------------------------------------------


def test_permutation_eigh_is_structured_and_refuses_a_non_symmetric_one() -> None:
    perm = np.array([3, 1, 4, 0, 2, 5])
    P = sl.Permutation(perm)
    w, Q = sl.eigh(P)
    assert isinstance(Q, sl.Sum)  # diag(a) + P diag(b): O(n)
    assert sorted(w.tolist()) == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    Qd = Q.to_dense()
    np.testing.assert_allclose(Qd.T @ Qd, np.eye(6), atol=1e-12)
    np.testing.assert_allclose((Qd * w) @ Qd.T, P.to_dense(), atol=1e-12)
    assert isinstance(abs_squared(Q), sl.Sum)  # |Q|^2 structured, not Dense
    assert sl.explain(sl.eigh, P).path == "structured"
    # f(P) = f(1) (I + P)/2 + f(-1) (I - P)/2, and its diagonal without an n x n matrix.
    E = sl.exp(P)
    assert isinstance(E, sl.Sum)
    expected = np.cosh(1.0) * np.eye(6) + np.sinh(1.0) * P.to_dense()
    np.testing.assert_allclose(E.to_dense(), expected, atol=1e-12)
    np.testing.assert_allclose(sl.diag(E), np.diag(expected), atol=1e-12)
    for f in (sl.eigh, sl.exp):
        with pytest.raises(ValueError, match=r"perm\[perm\[i\]\] == i"):
            f(sl.Permutation(np.array([1, 2, 0])))


def test_symmetric_permutation_shifted_solve_is_exact() -> None:
    P = sl.Permutation(np.array([1, 0, 2, 4, 3]))
    S = sl.Symmetric(P) + 3.0 * sl.Identity(5)
    Sd = P.to_dense() + 3.0 * np.eye(5)
    x = np.arange(5.0)
    assert sl.explain(sl.solve, S, x).path == "shifted"
    np.testing.assert_allclose(sl.solve(S, x), np.linalg.solve(Sd, x), rtol=1e-12)
    np.testing.assert_allclose(sl.diag(sl.inv(S)), np.diag(np.linalg.inv(Sd)), rtol=1e-12)
    np.testing.assert_allclose(sl.logdet(S), np.linalg.slogdet(Sd)[1], rtol=1e-12)


# -- Monarch matrices ----------------------------------------------------------------------------


def test_monarch_eigh_paths() -> None:
    rng = np.random.default_rng(1)
    blocks = _spd_blocks(rng, 3, 4)
    M = sl.GeneralizedMonarch([blocks], [(3, 4), (4, 3)])  # P^T B P
    assert sl.explain(sl.eigh, M).path == "structured"
    w, Q = sl.eigh(M)
    assert isinstance(Q, sl.Product)
    assert [type(op).__name__ for op in Q.ops] == ["Permutation", "BlockDiag"]
    np.testing.assert_allclose(np.sort(w), np.linalg.eigvalsh(M.to_dense()), rtol=1e-12)
    # Permutations that do not cancel, two dense factors, padding: the dense eigh.
    dense_paths = (
        sl.GeneralizedMonarch([blocks], [(3, 4), None]),
        sl.Monarch.random(16, 16, nblocks=4, rng=0),
        sl.Monarch.random(12, 10, nblocks=4, rng=0),
    )
    for N in dense_paths:
        plan = sl.explain(sl.eigh, N) if N.shape[0] == N.shape[1] else None
        assert plan is None or plan.path == "dense", str(plan)
    # The second factor diagonal in the default layout: block-diagonal itself, no permutation.
    C = sl.Monarch(blocks, np.ones((12, 1, 1)))
    w, Q = sl.eigh(C)
    assert isinstance(Q, sl.BlockDiag)


@pytest.mark.skipif("jax" not in BACKENDS, reason="needs JAX")
def test_structured_eigh_under_jit() -> None:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    M = sl.GeneralizedMonarch([jnp.asarray(_spd_blocks(rng, 2, 3))], [(2, 3), (3, 2)])
    w = jax.jit(lambda op: sl.eigh(op)[0])(M)
    np.testing.assert_allclose(np.sort(w), np.linalg.eigvalsh(np.asarray(M.to_dense())), rtol=1e-5)
    P = sl.Permutation(jnp.asarray([2, 1, 0]))
    w = jax.jit(lambda op: sl.eigh(op)[0])(P)
    assert sorted(np.asarray(w).tolist()) == [-1.0, 1.0, 1.0]


# -- sums in one eigenbasis ----------------------------------------------------------------------


def test_eigenbasis_paths() -> None:
    rng = np.random.default_rng(3)
    a, b = _spd(rng, 2) / 4, _spd(rng, 3) / 4  # exp(K) stays well conditioned
    K = sl.Kron(sl.PSD(a), sl.PSD(b))
    x = np.ones(6)
    paths = {
        "shifted": K + 0.1 * sl.Identity(6),
        "eigenbasis": K + sl.exp(K),
        "cholesky": K + sl.exp(sl.Kron(sl.PSD(a), sl.PSD(b))),  # another K: no shared basis
    }
    for path, S in paths.items():
        assert sl.explain(sl.solve, S, x).path == path
        assert sl.explain(sl.logdet, S).path == path
        np.testing.assert_allclose(sl.solve(S, x), np.linalg.solve(S.to_dense(), x), rtol=1e-10)
    assert sl.explain(sl.solve, sl.exp(K) + sl.log(K), x).path == "eigenbasis"
    # A + D: exact for monomial eigenvectors, not for a Kron of dense factors.
    diagonal = sl.Diagonal(np.arange(1.0, 7.0))
    assert sl.explain(sl.solve, K + diagonal, x).path == "lu"
    D2 = sl.Kron(sl.Diagonal(np.array([1.0, 2.0])), sl.Diagonal(np.array([1.0, 3.0, 5.0])))
    assert sl.explain(sl.solve, D2 + diagonal, x).path == "eigenbasis"
    assert isinstance(sl.inv(K + sl.exp(K)).op, sl.Spectral)  # PSD(Spectral)
