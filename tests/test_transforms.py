"""The fast transforms as Monarch operators: the order-p DFT, and the DCT and DST of every SciPy type."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import scipy.linalg

import structlin as sl
from structlin.operators.monarch import normalize_perm
from structlin.testing import check_operator, dot_test

# Sizes: balanced and unbalanced splits, order 2 to 4, and a prime (the split (1, 13): dense cost).
DFT_CASES = [
    (16, (4, 4)),
    (12, (2, 6)),
    (24, (2, 3, 4)),
    (60, (5, 3, 4)),
    (48, (2, 2, 3, 4)),
    (13, None),
    (13, (13, 1, 1)),
]


@pytest.mark.parametrize(("n", "factors"), DFT_CASES)
def test_order_p_dft_is_the_dft(n, factors):
    F = sl.dft(n, factors=factors)
    assert F.nfactors == (2 if factors is None else len(factors))
    assert isinstance(F, sl.Monarch) == (F.nfactors == 2)
    D = scipy.linalg.dft(n)
    np.testing.assert_allclose(F.to_dense(), D, atol=1e-10 * n)
    np.testing.assert_allclose(F.T.to_dense(), D.T, atol=1e-10 * n)
    np.testing.assert_allclose(F.inv().to_dense(), np.linalg.inv(D), atol=1e-12 * n)
    sign, logabsdet = sl.slogdet(F)
    ref_sign, ref_logabsdet = np.linalg.slogdet(D)
    np.testing.assert_allclose([sign, logabsdet], [ref_sign, ref_logabsdet], atol=1e-9)


def test_order_3_dft_conformance():
    F = sl.dft(12, factors=(2, 3, 2), norm="ortho")
    check_operator(F, scipy.linalg.dft(12) / math.sqrt(12), structured_inverse=True)
    assert dot_test(F) < 1e-12


def test_axis_permutations_in_generalized_monarch():
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((6, 4, 4)) + 2 * np.eye(4) for _ in range(2)]
    first, middle, last = ((2, 3, 4), (1, 0, 2)), ((4, 3, 2), (2, 0, 1)), ((2, 2, 6), (2, 1, 0))
    M = sl.GeneralizedMonarch(blocks, [first, middle, last])

    def matrix(perm):
        dims, axes = perm
        return np.eye(24)[np.arange(24).reshape(dims).transpose(axes).reshape(-1)]

    B1, B2 = (scipy.linalg.block_diag(*b) for b in blocks)
    dense = matrix(last) @ B2 @ matrix(middle) @ B1 @ matrix(first)
    check_operator(
        M, dense, dtypes=("float64",), backends=["numpy", "torch"], structured_inverse=True
    )
    # Canonical forms: size-1 axes dropped, neighbours merged, two axes are a stride.
    assert normalize_perm(((2, 1, 3), (2, 1, 0))) == (2, 3)
    assert normalize_perm(((2, 3, 4), (0, 1, 2))) is None
    assert normalize_perm(((2, 3, 4), (2, 0, 1))) == (6, 4)
    with pytest.raises(ValueError, match="permutation of range"):
        sl.GeneralizedMonarch(blocks, [((2, 3, 4), (0, 0, 1)), None, None])
    with pytest.raises(ValueError, match=r"prod\(dims\) == 24"):
        sl.GeneralizedMonarch(blocks, [((2, 3, 5), (2, 1, 0)), None, None])


# The DCT and DST: SciPy's four types each, three normalisations, and the inverses, at n = 8
# (DFT length 16 = 4 x 4), 12 (24 = 4 x 6), 9 (18 = 3 x 6, and 16 / 20 for type 1) and the
# prime 13 (26 = 2 x 13: the dense-cost split), plus orders 3 and 4.
SIZES = [8, 9, 12, 13]


@pytest.mark.parametrize("kind", ["dct", "dst"])
@pytest.mark.parametrize("type_", [1, 2, 3, 4])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_dct_dst_match_scipy(kind, type_, norm):
    rng = np.random.default_rng(type_)
    for n in SIZES:
        X = rng.standard_normal((n, 3))
        A = getattr(sl, kind)(n, type_, norm=norm)
        want = getattr(scipy.fft, kind)(X, type=type_, norm=norm, axis=0)
        np.testing.assert_allclose(A @ X, want, rtol=0, atol=1e-10 * np.abs(want).max())
        inverse = getattr(sl, "i" + kind)(n, type_, norm=norm)
        want = getattr(scipy.fft, "i" + kind)(X, type=type_, norm=norm, axis=0)
        np.testing.assert_allclose(inverse @ X, want, rtol=0, atol=1e-10 * np.abs(want).max())
        np.testing.assert_allclose(inverse @ (A @ X), X, atol=1e-10)


@pytest.mark.parametrize("factors", [(4, 6), (6, 4), (2, 12), (2, 3, 4), (2, 2, 2, 3)])
def test_dct_any_factorisation(factors):
    x = np.random.default_rng(0).standard_normal(12)
    A = sl.dct(12, 2, norm="ortho", factors=factors)
    assert A.nfactors == len(factors)
    np.testing.assert_allclose(A @ x, scipy.fft.dct(x, norm="ortho"), atol=1e-12)
    B = sl.dst(12, 4, factors=factors)
    np.testing.assert_allclose(B @ x, scipy.fft.dst(x, type=4), atol=1e-11)


def test_dct_conformance_and_orthogonality():
    C = sl.dct(6, 2, norm="ortho", factors=(2, 3, 2))
    D = scipy.fft.dct(np.eye(6), norm="ortho", axis=0)
    check_operator(C, D)
    np.testing.assert_allclose(C.T.to_dense() @ D, np.eye(6), atol=1e-12)  # orthonormal
    check_operator(sl.idst(5, 1), scipy.fft.idst(np.eye(5), type=1, axis=0), backends=["numpy"])


def test_trig_errors():
    with pytest.raises(ValueError, match="type must be 1, 2, 3 or 4"):
        sl.dct(8, 5)
    with pytest.raises(ValueError, match="n >= 2"):
        sl.dct(1, 1)
    with pytest.raises(ValueError, match="norm must be"):
        sl.dst(8, norm="unitary")
    with pytest.raises(ValueError, match="product of 16"):
        sl.dct(8, factors=(3, 5))
    with pytest.raises(TypeError, match="real"):
        sl.dct(8, dtype="complex128")
    with pytest.raises(ValueError, match="p >= 2"):
        sl.dft(8, factors=(8,))
