"""Every operator through the conformance kit, on every backend, in float32, float64 and complex128."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import structlin as sl
from conformance import BACKENDS, DTYPES, Built, Gen, check_operator, examples
from structlin.backends import backend_of
from structlin.rules import dispatch


def _like(arr: Any) -> tuple[Any, Any, Any]:
    """`(dtype, backend, device)` of the arrays `arr` builds."""
    z = arr(np.zeros(1))
    backend = backend_of(z)
    return z.dtype, backend, backend.device(z)


def dense(g: Gen) -> Built:
    if g.choice([True, False]):
        n = g.size()
        a = g.well_conditioned(n, n)
        return Built(lambda arr: sl.Dense(arr(a)), a, invertible=True)
    a = g.normal(g.size(), g.size())
    return Built(lambda arr: sl.Dense(arr(a)), a)


def identity(g: Gen) -> Built:
    n = g.size(0)
    return Built(lambda arr: sl.Identity(n, *_like(arr)), np.eye(n), invertible=True)


def diagonal(g: Gen) -> Built:
    n = g.size()
    d = g.round(
        g.rng.choice([-1, 1], n) * g.rng.uniform(0.5, 2, n)
        + (0.3j * g.normal(n) if g.complex else 0)
    )
    return Built(lambda arr: sl.Diagonal(arr(d)), np.diag(d), invertible=True)


def permutation(g: Gen) -> Built:
    perm = g.rng.permutation(g.size(1, 7))
    return Built(
        lambda arr: sl.Permutation(arr(perm), _like(arr)[0]),
        np.eye(len(perm))[perm],
        invertible=True,
    )


def stride_permutation(g: Gen) -> Built:
    rows, cols = g.size(), g.size()
    ref = np.eye(rows * cols)[np.arange(rows * cols).reshape(rows, cols).T.reshape(-1)]

    def make(arr: Any) -> sl.LinearOperator:
        dtype, backend, device = _like(arr)
        return sl.Permutation.stride(rows, cols).to(dtype, device, backend)

    return Built(make, ref, invertible=True)


def block_diag(g: Gen) -> Built:
    b = g.size(1, 4)
    if g.choice([True, False]):
        p = g.size()
        blocks = g.well_conditioned(b, p, p)
        return Built(lambda arr: sl.BlockDiag(arr(blocks)), scipy.linalg.block_diag(*blocks), True)
    blocks = g.normal(b, g.size(), g.size())
    return Built(lambda arr: sl.BlockDiag(arr(blocks)), scipy.linalg.block_diag(*blocks))


def kron(g: Gen) -> Built:
    nfactors = g.size(1, 3)
    if g.choice([True, False]):
        fs = [g.well_conditioned(n, n) for n in (g.size(1, 4) for _ in range(nfactors))]
        invertible = True
    else:
        fs = [g.normal(g.size(1, 4), g.size(1, 4)) for _ in range(nfactors)]
        invertible = False
    ref = fs[0]
    for f in fs[1:]:
        ref = np.kron(ref, f)
    return Built(lambda arr: sl.Kron(*(arr(f) for f in fs)), ref, invertible)


def kron_structured(g: Gen) -> Built:
    """Kron of a Diagonal, a value-free Identity and a BlockDiag: rules recurse into the factors."""
    d = g.round(1.5 + 0.5 * g.rng.uniform(size=g.size()))
    n = g.size(1, 3)
    p = g.size(1, 3)
    blocks = g.well_conditioned(2, p, p)
    ref = np.kron(np.kron(np.diag(d), np.eye(n)), scipy.linalg.block_diag(*blocks))
    return Built(
        lambda arr: sl.Kron(sl.Diagonal(arr(d)), sl.Identity(n), sl.BlockDiag(arr(blocks))),
        ref,
        invertible=True,
    )


def low_rank(g: Gen) -> Built:
    m, n, r = g.size(), g.size(), g.size(1, 3)
    U, V = g.normal(m, r), g.normal(r, n)
    return Built(lambda arr: sl.LowRank(arr(U), arr(V)), U @ V)


def low_rank_full(g: Gen) -> Built:
    n = g.size()
    U, V = g.well_conditioned(n, n), g.well_conditioned(n, n)
    return Built(lambda arr: sl.LowRank(arr(U), arr(V)), U @ V, True, structured_inverse=False)


def product(g: Gen) -> Built:
    if g.choice([True, False]):
        n1, n2 = g.size(1, 3), g.size(1, 3)
        a, f1, f2 = (
            g.well_conditioned(n1 * n2, n1 * n2),
            g.well_conditioned(n1, n1),
            g.well_conditioned(n2, n2),
        )
        d = g.round(g.rng.uniform(0.5, 2, n1 * n2))
        ref = a @ np.kron(f1, f2) @ np.diag(d)
        return Built(
            lambda arr: sl.Dense(arr(a)) @ sl.Kron(arr(f1), arr(f2)) @ sl.Diagonal(arr(d)),
            ref,
            True,
        )
    m, k, n = g.size(), g.size(), g.size()
    a, b = g.normal(m, k), g.normal(k, n)
    perm = g.rng.permutation(n)
    ref = a @ b @ np.eye(n)[perm]
    return Built(
        lambda arr: sl.Product(arr(a), sl.Dense(arr(b)), sl.Permutation(arr(perm))),
        ref,
        invertible=(m == k == n),
        structured_inverse=False,
    )


def sum_(g: Gen) -> Built:
    n, r = g.size(), g.size(1, 2)
    a, d = g.well_conditioned(n, n), g.round(g.rng.uniform(0.5, 1, n))
    U, V = 0.1 * g.normal(n, r), 0.1 * g.normal(r, n)
    ref = a + np.diag(d) + U @ V
    return Built(
        lambda arr: sl.Dense(arr(a)) + sl.Diagonal(arr(d)) + sl.LowRank(arr(U), arr(V)),
        ref,
        invertible=True,
        structured_inverse=False,
    )


def difference(g: Gen) -> Built:
    """`A - 0.5 I` with a value-free identity, and the negation."""
    n = g.size()
    a = g.normal(n, n)
    return Built(lambda arr: -(sl.Dense(arr(a)) - 0.5 * sl.Identity(n)), 0.5 * np.eye(n) - a)


def scalar_mul(g: Gen) -> Built:
    n = g.size()
    a = g.well_conditioned(n, n)
    c = g.choice([2.5, -0.5]) * (1j if g.complex and g.choice([True, False]) else 1)
    array_scalar = g.choice([True, False])
    return Built(
        lambda arr: (arr(np.asarray(c)) if array_scalar else c) * sl.Dense(arr(a)) / 2,
        c * a / 2,
        invertible=True,
    )


def inverse(g: Gen) -> Built:
    """A lazy `Inverse` (of a Sum, which has no structured inverse)."""
    n = g.size()
    a, d = g.well_conditioned(n, n), g.round(g.rng.uniform(0.5, 1, n))
    s = a + np.diag(d)
    return Built(
        lambda arr: sl.Inverse(sl.Dense(arr(a)) + sl.Diagonal(arr(d))), np.linalg.inv(s), True
    )


def pseudo_inverse(g: Gen) -> Built:
    """A lazy `PseudoInverse` of a tall or wide Sum (which has no structured one)."""
    n, p = g.size(), g.size(1, 3)
    t = np.concatenate([g.well_conditioned(n, n), 0.3 * g.normal(p, n)])
    t = t if g.choice([True, False]) else t.T
    return Built(
        lambda arr: sl.PseudoInverse(sl.Dense(arr(t / 2)) + sl.Dense(arr(t / 2))),
        np.linalg.pinv(t),
    )


class Toeplitz(sl.LinearOperator):
    """A user-defined operator with only a `matmat` rule: exercises every generic fallback.

    `A[i, j] = c[i - j + n - 1]` for `c` of length `2n - 1`.
    """

    _children = ("c",)

    def __init__(self, c: Any):
        self._set(c=c)

    @property
    def shape(self) -> tuple[int, int]:
        n = (self.c.shape[0] + 1) // 2
        return (n, n)


@dispatch
def matmat(A: Toeplitz, X: object) -> Any:
    n = A.shape[0]
    index = np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1
    b = A.backend
    matrix = b.reshape(b.take(A.c, b.asarray(index.reshape(-1), device=A.device), 0), (n, n))
    return b.matmul(matrix, X)


def user_operator(g: Gen) -> Built:
    n = g.size()
    c = g.normal(2 * n - 1)
    c[n - 1] += 2 * n
    ref = c[np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1]
    return Built(lambda arr: Toeplitz(arr(c)), ref, True, structured_inverse=False)


def user_operator_expression(g: Gen) -> Built:
    """Transpose and adjoint nodes of a user operator, inside a Product with a Kron."""
    n = g.size()
    c = g.normal(2 * n - 1)
    c[n - 1] += 2 * n
    t = c[np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1]
    f = g.well_conditioned(2, 2)
    ref = np.kron(t.conj().T, f) @ np.kron(t.T, f.T)
    return Built(
        lambda arr: (
            sl.Kron(Toeplitz(arr(c)).H, arr(f)) @ sl.Kron(Toeplitz(arr(c)).T, sl.Dense(arr(f)).T)
        ),
        ref,
        True,
        structured_inverse=False,
    )


def _hpd(g: Gen, n: int) -> np.ndarray:
    """A Hermitian positive definite `n x n` matrix, rounded to the dtype."""
    m = g.normal(n, n) / np.sqrt(n)
    return g.round(m @ m.conj().T + np.eye(n))


def psd(g: Gen) -> Built:
    """A PSD annotation: of a dense matrix, or of a Kron of PSD factors (Cholesky, eigh)."""
    if g.choice([True, False]):
        a = _hpd(g, g.size())
        return Built(lambda arr: sl.PSD(sl.Dense(arr(a))), a, invertible=True)
    fs = [_hpd(g, g.size(1, 3)) for _ in range(g.size(1, 3))]
    ref = fs[0]
    for f in fs[1:]:
        ref = np.kron(ref, f)
    return Built(lambda arr: sl.Kron(*(sl.PSD(arr(f)) for f in fs)), ref, invertible=True)


def symmetric(g: Gen) -> Built:
    n = g.size()
    m = g.normal(n, n)
    a = g.round(m + m.conj().T + 4 * n * np.eye(n))
    return Built(lambda arr: sl.Symmetric(arr(a)), a, invertible=True)


def spectral(g: Gen) -> Built:
    """`Q diag(w) Q^H` with a Kron of unitary factors."""
    qs = [np.linalg.qr(g.normal(k, k) + 3 * np.eye(k))[0] for k in (g.size(1, 3), g.size(1, 3))]
    qs = [g.round(q) for q in qs]
    n = qs[0].shape[0] * qs[1].shape[0]
    w = g.round(g.rng.uniform(0.5, 2.0, n) * g.rng.choice([-1, 1], n))
    Q = np.kron(qs[0], qs[1])
    return Built(
        lambda arr: sl.Spectral(sl.Kron(arr(qs[0]), arr(qs[1])), arr(w).real),
        Q @ np.diag(w) @ Q.conj().T,
        invertible=True,
    )


def shifted_kron(g: Gen) -> Built:
    """`Kron(PSD factors) + c I`: solved through the factors' eigendecompositions."""
    fs = [_hpd(g, g.size(1, 3)) for _ in range(g.size(1, 3))]
    ref = fs[0]
    for f in fs[1:]:
        ref = np.kron(ref, f)
    c = 0.25
    n = ref.shape[0]
    return Built(
        lambda arr: sl.Kron(*(sl.PSD(arr(f)) for f in fs)) + c * sl.Identity(n),
        ref + c * np.eye(n),
        invertible=True,
    )


def sparse(g: Gen) -> Built:
    """COO triples with repeated positions (which add up); invertible with its diagonal."""
    m = g.size()
    n = m if g.choice([True, False]) else g.size()
    a = g.well_conditioned(m, m) if m == n else g.normal(m, n)
    mask = g.rng.uniform(size=(m, n)) < 0.5
    if m == n:
        mask |= np.eye(n, dtype=bool)
    rows, cols = np.nonzero(mask)
    values = a[rows, cols]
    # Split each entry of the first row in two halves at the same position.
    first = rows == 0
    rows, cols = np.concatenate([rows, rows[first]]), np.concatenate([cols, cols[first]])
    values = np.concatenate([values, values[first] / 2])
    values[np.flatnonzero(first)] /= 2
    ref = np.where(mask, a, 0)
    return Built(
        lambda arr: sl.Sparse.from_coo(arr(values), arr(rows), arr(cols), (m, n)),
        ref,
        invertible=m == n,
        structured_inverse=False,
    )


def triangular(g: Gen) -> Built:
    """Either triangle of a matrix whose other half is not zero (and is ignored)."""
    n = g.size()
    lower = g.choice([True, False])
    a = g.well_conditioned(n, n)
    ref = np.tril(a) if lower else np.triu(a)
    return Built(lambda arr: sl.Triangular(arr(a), lower), ref, invertible=True)


def block_diagonal(g: Gen) -> Built:
    """Blocks of unequal shapes and structures: a Dense, a Kron of a Diagonal, an Identity."""
    if g.choice([True, False]):
        p, q = g.size(1, 3), g.size(1, 2)
        a, f = g.well_conditioned(p, p), g.well_conditioned(q, q)
        d = g.round(g.rng.uniform(0.5, 2, 2))
        ref = scipy.linalg.block_diag(a, np.kron(f, np.diag(d)), np.eye(2))
        return Built(
            lambda arr: sl.BlockDiag(
                [arr(a), sl.Kron(arr(f), sl.Diagonal(arr(d))), sl.Identity(2)]
            ),
            ref,
            invertible=True,
        )
    blocks = [g.normal(g.size(1, 3), g.size(1, 3)) for _ in range(g.size(1, 3))]
    return Built(
        lambda arr: sl.BlockDiag([arr(b) for b in blocks]), scipy.linalg.block_diag(*blocks)
    )


CASES = [
    dense,
    identity,
    diagonal,
    permutation,
    stride_permutation,
    block_diag,
    block_diagonal,
    sparse,
    triangular,
    kron,
    kron_structured,
    low_rank,
    low_rank_full,
    product,
    sum_,
    difference,
    scalar_mul,
    inverse,
    pseudo_inverse,
    user_operator,
    user_operator_expression,
    psd,
    symmetric,
    spectral,
    shifted_kron,
]
STRUCTURED_TRANSPOSE = {c: c not in (user_operator, user_operator_expression) for c in CASES}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.rstrip("_"))
def test_conformance(case: Any, backend: str, dtype: str) -> None:
    @settings(max_examples=examples(backend, dtype))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        gen = Gen(data.draw, dtype)
        check_operator(
            case(gen), backend, dtype, gen, structured_transpose=STRUCTURED_TRANSPOSE[case]
        )

    run()
