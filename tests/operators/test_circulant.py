"""Circulant, Toeplitz and convolution operators through Monarch DFTs, against SciPy and NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.signal

import structlin as sl
from structlin.operators.circulant import good_length
from structlin.testing import check_operator, dot_test

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def _conv_reference(k: np.ndarray, n: int, mode: str) -> np.ndarray:
    """The matrix of `x -> scipy.signal.convolve(x, k, mode)` (`"causal"`: full, cut to n)."""
    cols = []
    for e in np.eye(n):
        if mode == "causal":
            cols.append(scipy.signal.convolve(e, k, mode="full")[:n])
        else:
            cols.append(scipy.signal.convolve(e, k, mode=mode))
    return np.stack(cols, axis=1)


# -- circulant ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [16, 12, 13, 1])  # balanced, unbalanced (3 x 4), prime (dense cost)
def test_circulant_matches_scipy(n):
    c = RNG.standard_normal(n) + n * (np.arange(n) == 0)  # diagonally dominant: invertible
    C = sl.circulant(c)
    D = scipy.linalg.circulant(c)
    X = RNG.standard_normal((n, 3))
    np.testing.assert_allclose(C @ X, D @ X, atol=1e-10 * np.abs(D).max())
    np.testing.assert_allclose(C.T @ X, D.T @ X, atol=1e-10 * np.abs(D).max())
    np.testing.assert_allclose(sl.solve(C, X), np.linalg.solve(D, X), atol=1e-10)
    assert isinstance(C.inv(), sl.Circulant)
    assert isinstance(C.T, sl.Circulant)
    np.testing.assert_allclose(C.inv().to_dense(), np.linalg.inv(D), atol=1e-10)
    sign, logabsdet = sl.slogdet(C)
    ref = np.linalg.slogdet(D)
    np.testing.assert_allclose([sign, logabsdet], [ref[0], ref[1]], atol=1e-10)
    np.testing.assert_allclose(sl.diag(C), np.diag(D))
    np.testing.assert_allclose(sl.trace(C), np.trace(D))


def test_circulant_conformance():
    c = np.array([3.0, -1.0, 0.5, 0.25, 0.0, 1.0])
    check_operator(sl.circulant(c), scipy.linalg.circulant(c), structured_inverse=True)
    z = np.array([2.0 + 1j, 0.5, -0.3j, 0.1 + 0.2j, 0.0])
    check_operator(sl.circulant(z), scipy.linalg.circulant(z), structured_inverse=True)


def test_circulant_algebra_stays_circulant():
    a, b = RNG.standard_normal(8), RNG.standard_normal(8)
    A, B = sl.circulant(a), sl.circulant(b)
    for op, want in [
        (A @ B, scipy.linalg.circulant(a) @ scipy.linalg.circulant(b)),
        (A + B, scipy.linalg.circulant(a + b)),
        (2.5 * A, 2.5 * scipy.linalg.circulant(a)),
    ]:
        assert isinstance(op, sl.Circulant)
        np.testing.assert_allclose(op.to_dense(), want, atol=1e-12)


def test_circulant_zero_frequency_is_singular():
    C = sl.circulant(np.array([1.0, -1.0, 0.0, 0.0]))  # the kernel sums to 0: F c vanishes at f = 0
    with pytest.raises(sl.SingularOperatorError, match=r"vanishes at frequency \[0\]"):
        C.inv()
    with pytest.raises(sl.SingularOperatorError, match="no DFT coefficient"):
        sl.solve(C, np.ones(4))


# -- Toeplitz ----------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(8, 8), (5, 9), (13, 7), (1, 4)])
def test_toeplitz_matches_scipy(m, n):
    c, r = RNG.standard_normal(m), RNG.standard_normal(n)
    T = sl.toeplitz(c, r)
    D = scipy.linalg.toeplitz(c, r)
    X = RNG.standard_normal((n, 2))
    np.testing.assert_allclose(T @ X, D @ X, atol=1e-10 * np.abs(D).max())
    np.testing.assert_allclose(T.T.to_dense(), D.T, atol=1e-12)
    assert isinstance(T.T, sl.Toeplitz)
    np.testing.assert_allclose(sl.diag(T), np.diag(D))
    np.testing.assert_allclose(sl.toeplitz(c).to_dense(), scipy.linalg.toeplitz(c), atol=1e-12)


def test_toeplitz_conformance():
    c, r = np.array([4.0, 1.0, -0.5, 0.2]), np.array([4.0, 0.3, 0.7, -1.0])
    check_operator(sl.toeplitz(c, r), scipy.linalg.toeplitz(c, r))
    zc, zr = c + 0.5j, r - 0.25j
    check_operator(sl.toeplitz(zc, zr), scipy.linalg.toeplitz(zc, zr), backends=["numpy", "torch"])


def test_good_length_is_never_prime_and_close():
    for need in range(1, 400):
        L = good_length(need)
        a = int(np.sqrt(L))
        while L % a:
            a -= 1
        assert need <= L <= need + max(4, need // 8)
        assert a + L // a <= 3 * np.sqrt(L)


# -- convolution -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "same", "valid", "causal"])
@pytest.mark.parametrize(("K", "n"), [(3, 8), (4, 13), (1, 5), (6, 6), (5, 16)])
def test_convolution_matches_scipy_signal(mode, K, n):
    k = RNG.standard_normal(K)
    A = sl.convolution(k, n, mode)
    D = _conv_reference(k, n, mode)
    x = RNG.standard_normal(n)
    np.testing.assert_allclose(A.to_dense(), D, atol=1e-10)
    np.testing.assert_allclose(A @ x, D @ x, atol=1e-10)
    if mode != "causal" and (mode != "same" or n >= K):
        np.testing.assert_allclose(A @ x, np.convolve(x, k, mode=mode), atol=1e-10)
    At = A.T  # the correlation: a Convolution again
    assert isinstance(At, sl.Convolution)
    np.testing.assert_allclose(At.to_dense(), D.T, atol=1e-10)
    np.testing.assert_allclose(sl.diag(A), np.diag(D), atol=1e-12)
    if A.shape[0] == A.shape[1]:
        np.testing.assert_allclose(sl.trace(A), np.trace(D), atol=1e-12)


def test_convolution_conformance():
    k = np.array([1.0, -0.5, 0.25, 2.0])
    check_operator(sl.convolution(k, 5, "full"), _conv_reference(k, 5, "full"))  # 8 x 5
    A = sl.convolution(k, 5, "same")  # offset 1: its transpose has offset 2
    assert dot_test(A) < 1e-12


def test_convolution_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        sl.convolution(np.ones(3), 5, "circular")
    with pytest.raises(ValueError, match="needs n >= the kernel's 3 taps"):
        sl.convolution(np.ones(3), 2, "valid")


# -- gradients and layers ----------------------------------------------------------------


def test_gradients_in_the_kernel_torch_and_jax():
    k = RNG.standard_normal(4)
    x = RNG.standard_normal(9)
    w = RNG.standard_normal(9)
    D = _conv_reference(k, 9, "same")
    # d/dk of w . (k * x): the correlation of w and x at the taps.
    want = np.array([w @ (_conv_reference(e, 9, "same") @ x) for e in np.eye(4)])
    kt = torch.tensor(k, requires_grad=True)
    y = sl.convolution(kt, 9, "same") @ torch.tensor(x)
    (y @ torch.tensor(w)).backward()
    np.testing.assert_allclose(kt.grad.numpy(), want, atol=1e-10)
    np.testing.assert_allclose(y.detach().numpy(), D @ x, atol=1e-10)

    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def loss(kernel, vec):
        return jnp.vdot(jnp.asarray(w), sl.toeplitz(kernel, kernel) @ vec)

    c = jnp.asarray(RNG.standard_normal(9))
    grad_c, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(c, jnp.asarray(x))
    Tc = scipy.linalg.toeplitz(np.asarray(c), np.asarray(c))
    np.testing.assert_allclose(grad_x, Tc.T @ w, atol=1e-10)
    eps = 1e-6
    numeric = [
        (loss(c + eps * e, jnp.asarray(x)) - loss(c - eps * e, jnp.asarray(x))) / (2 * eps)
        for e in jnp.eye(9)
    ]
    np.testing.assert_allclose(grad_c, numeric, atol=1e-6)


def test_circulant_is_a_trainable_layer():
    import structlin.nn as snn

    torch.manual_seed(0)
    layer = snn.Linear.from_operator(sl.circulant(RNG.standard_normal(8)), bias=True)
    assert [name for name, _ in layer.named_parameters()] == ["kernel", "bias"]
    x = torch.randn(4, 8, dtype=layer.kernel.dtype)
    dense = scipy.linalg.circulant(layer.kernel.detach().numpy())
    want = x.numpy() @ dense.T + layer.bias.detach().numpy()
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)
    layer(x).square().sum().backward()
    assert layer.kernel.grad is not None
    assert layer.kernel.grad.abs().sum() > 0
    conv = snn.Linear.from_operator(sl.convolution(np.ones(3), 8, "causal"))
    assert [name for name, _ in conv.named_parameters()] == ["kernel"]


# -- projections -------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "shape"), [(sl.Circulant, (7, 7)), (sl.Toeplitz, (5, 8))])
def test_projection_is_the_orthogonal_one(cls, shape):
    W = RNG.standard_normal(shape)
    P = sl.project(W, cls)
    assert isinstance(P, cls)
    R = W - P.to_dense()
    # Optimal: the residual is orthogonal to every basis matrix (the diagonals' indicators).
    m, n = shape
    for d in range(-(n - 1), m):
        if cls is sl.Circulant:
            mask = ((np.arange(m)[:, None] - np.arange(n)[None, :]) % n) == d % n
        else:
            mask = (np.arange(m)[:, None] - np.arange(n)[None, :]) == d
        assert abs(R[mask].sum()) < 1e-12
    # ... and a structured matrix is its own projection.
    again = sl.project(P.to_dense(), cls)
    np.testing.assert_allclose(again.to_dense(), P.to_dense(), atol=1e-12)
    Wt = torch.tensor(W)
    np.testing.assert_allclose(sl.project(Wt, cls).to_dense().numpy(), P.to_dense(), atol=1e-12)
