"""Algorithms as arguments (issue 21, phase 1): annotations, `alg=`, `explain`, CG, the
structured eigendecomposition, shifted sums and matrix functions, against dense NumPy on
every backend in float32 and float64."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structlin as sl
from conformance import BACKENDS, RTOL, Gen, assert_close, examples, to_backend, to_numpy

DTYPES = ("float32", "float64")


def _spd(g: Gen, n: int) -> np.ndarray:
    m = g.normal(n, n) / np.sqrt(n)
    return g.round(m @ m.T + np.eye(n))


def _kron(mats: list[np.ndarray]) -> np.ndarray:
    out = mats[0]
    for m in mats[1:]:
        out = np.kron(out, m)
    return out


def _symmetric_case(g: Gen, arr: Any) -> tuple[sl.LinearOperator, np.ndarray]:
    """A symmetric positive definite operator with a structured eigh, and its dense matrix."""
    kind = g.choice(["kron", "block_diag", "diagonal", "dense"])
    if kind == "kron":
        fs = [_spd(g, g.size(1, 3)) for _ in range(g.size(1, 3))]
        return sl.Kron(*(sl.PSD(arr(f)) for f in fs)), _kron(fs)
    if kind == "block_diag":
        blocks = np.stack([_spd(g, 3) for _ in range(g.size(1, 3))])
        D = np.zeros((blocks.shape[0] * 3,) * 2)
        for i, b in enumerate(blocks):
            D[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] = b
        return sl.PSD(sl.BlockDiag(arr(blocks))), D
    if kind == "diagonal":
        d = g.round(g.rng.uniform(0.5, 2.0, g.size()))
        return sl.PSD(sl.Diagonal(arr(d))), np.diag(d)
    a = _spd(g, g.size())
    return sl.PSD(arr(a)), a


def _dense_function(D: np.ndarray, f: Any) -> np.ndarray:
    w, V = np.linalg.eigh(D)
    return (V * f(w)) @ V.T


def _arr(backend: str, dtype: str) -> Any:
    return lambda x: to_backend(np.asarray(x).astype(dtype), backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_functions_against_dense(backend: str, dtype: str) -> None:
    """eigh (up to order and sign), the shifted solve/inv/slogdet/diag/trace, the matrix
    functions and every solve algorithm, against NumPy's dense results."""
    rtol = RTOL[dtype] * (20 if dtype == "float32" else 10)

    # JAX compiles every operation anew for each shape: one drawn case there.
    @settings(max_examples=1 if backend == "jax" else examples(backend, dtype))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        g = Gen(data.draw, dtype)
        arr = _arr(backend, dtype)
        A, D = _symmetric_case(g, arr)
        n = D.shape[0]

        w, Q = sl.eigh(A)
        assert isinstance(Q, sl.LinearOperator)
        assert_close(np.sort(to_numpy(w)), np.linalg.eigvalsh(D), rtol, "eigh values")
        Qd = to_numpy(Q.to_dense())
        assert_close(Qd @ np.diag(to_numpy(w)) @ Qd.T, D, rtol, "Q diag(w) Q^T")

        c = 0.3
        S, Sd = A + c * sl.Identity(n), D + c * np.eye(n)
        x = g.normal(n, 2)
        expected = np.linalg.solve(Sd, x)
        assert_close(sl.solve(S, arr(x)), expected, rtol, "solve(A + cI)")
        assert_close(sl.inv(S).to_dense(), np.linalg.inv(Sd), rtol, "inv(A + cI)")
        assert_close(sl.diag(sl.inv(S)), np.diag(np.linalg.inv(Sd)), rtol, "diag(inv(A + cI))")
        assert_close(sl.logdet(S), np.linalg.slogdet(Sd)[1], rtol, "logdet(A + cI)")
        assert_close(sl.diag(S), np.diag(Sd), rtol, "diag(A + cI)")
        assert_close(sl.trace(S), np.trace(Sd), rtol, "trace(A + cI)")
        for alg in (sl.LU(), sl.Cholesky(), sl.CG(tol=1e-10 if dtype == "float64" else 1e-6)):
            assert_close(sl.solve(S, arr(x), alg=alg), expected, rtol, f"solve {alg}")
        for alg in (sl.LU(), sl.Cholesky()):
            assert_close(sl.logdet(S, alg=alg), np.linalg.slogdet(Sd)[1], rtol, f"logdet {alg}")

        R = sl.sqrt(A)
        assert_close((R @ R).to_dense(), D, rtol, "sqrt(A) @ sqrt(A)")
        assert_close(sl.exp(A).to_dense(), _dense_function(D, np.exp), rtol, "exp")
        assert_close(sl.log(A).to_dense(), _dense_function(D, np.log), rtol, "log")
        assert_close(sl.pow(A, -1).to_dense(), np.linalg.inv(D), rtol, "pow(A, -1)")
        F = sl.apply(lambda v: 1 / (1 + v), A)
        assert_close(F.to_dense(), _dense_function(D, lambda v: 1 / (1 + v)), rtol, "apply")
        assert sl.is_psd(R)
        assert sl.is_psd(sl.exp(A))
        assert sl.is_symmetric(sl.log(A))

    run()


def test_annotations_propagate() -> None:
    a = np.array([[2.0, 1.0], [1.0, 2.0]])
    P, S, D = sl.PSD(a), sl.Symmetric(a), sl.Dense(a)
    assert sl.is_psd(P)
    assert sl.is_symmetric(P)
    assert not sl.is_psd(S)
    assert sl.is_symmetric(S)
    assert not sl.is_symmetric(D)
    assert not sl.is_psd(D)
    assert sl.is_psd(sl.Kron(P, P))
    assert not sl.is_psd(sl.Kron(P, S))
    assert sl.is_symmetric(sl.Kron(P, S))
    assert sl.is_psd(P + P)
    assert sl.is_psd(2.0 * P)
    assert not sl.is_psd(-2.0 * P)
    assert sl.is_psd(P + 0.1 * sl.Identity(2))
    assert not sl.is_psd(P - 0.1 * sl.Identity(2))
    assert sl.is_symmetric(P - 0.1 * sl.Identity(2))
    assert sl.is_psd(sl.inv(P))
    assert sl.is_psd(P.T)
    assert P.T is P
    assert P.H is P
    assert sl.is_symmetric(sl.Diagonal(np.ones(3)))
    assert not sl.is_psd(sl.Diagonal(np.ones(3)))
    assert sl.is_psd(sl.Identity(3))
    C = sl.Dense(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert sl.is_psd(C.T @ C)
    assert sl.is_psd(C @ C.T)
    assert sl.is_psd(C.H @ C)
    assert not sl.is_psd(C @ C)
    assert not sl.is_psd(C.T @ sl.Dense(a))
    K = sl.Kron(C, C)
    assert sl.is_psd(K.T @ K)
    assert isinstance(K.T @ K, sl.Kron)
    Z = sl.Dense(np.array([[1.0, 1j], [0.0, 1.0]]))
    assert sl.is_psd(Z.H @ Z)
    assert not sl.is_psd(Z.T @ Z)
    # PSD(Symmetric(A)) is PSD(A); the annotation is part of the pytree
    assert type(sl.PSD(S).op) is sl.Dense
    leaves, treedef = sl.pytree.tree_flatten(sl.Kron(P, P))
    assert sl.is_psd(sl.pytree.tree_unflatten(treedef, leaves))
    with pytest.raises(ValueError, match="square"):
        sl.PSD(np.ones((2, 3)))


def test_auto_paths_and_explain() -> None:
    rng = np.random.default_rng(0)
    a = np.array([[2.0, 1.0], [1.0, 2.0]])
    x = np.ones(4)
    K = sl.Kron(sl.PSD(a), sl.PSD(a))
    cases = {
        "structured": sl.Kron(a, a),
        "shifted": K + 0.1 * sl.Identity(4),
        "cholesky": sl.PSD(sl.Dense(np.kron(a, a))),
        "lu": sl.Kron(a, a) + 0.1 * sl.Identity(4),  # not known symmetric: dense, as before
    }
    for path, A in cases.items():
        plan = sl.explain(sl.solve, A, x)
        assert plan.path == path, (path, str(plan))
        assert plan.cost
        assert plan.reason
        assert path in str(plan)
        np.testing.assert_allclose(sl.solve(A, x), np.linalg.solve(A.to_dense(), x), rtol=1e-12)
    big = sl.PSD(sl.Dense(np.eye(3)) + sl.Diagonal(np.ones(3)))
    assert sl.explain(sl.solve, big, np.ones(3), alg=sl.Auto(dense_limit=2)).path == "cg"
    np.testing.assert_allclose(sl.solve(big, np.ones(3), alg=sl.Auto(dense_limit=2)), 0.5)
    # A dense matrix keeps its exact factorisation at any size, PSD or not.
    dense = sl.PSD(sl.Dense(np.eye(3) * 2))
    assert sl.explain(sl.solve, dense, np.ones(3), alg=sl.Auto(dense_limit=2)).path == "cholesky"
    assert sl.explain(sl.logdet, dense, alg=sl.Auto(dense_limit=2)).path == "cholesky"
    assert sl.explain(sl.logdet, big, alg=sl.Auto(dense_limit=2)).path == "slq"
    assert sl.explain(sl.slogdet, cases["shifted"]).path == "shifted"
    assert sl.explain(sl.logdet, cases["cholesky"]).path == "cholesky"
    assert sl.explain(sl.inv, cases["shifted"]).path == "shifted"
    assert sl.explain(sl.eigh, sl.Kron(a, a)).path == "structured"
    assert sl.explain(sl.eigh, sl.Dense(a)).path == "dense"
    assert sl.explain(sl.trace, sl.Kron(a, a)).path == "structured"
    assert sl.explain(sl.diag, sl.Dense(a)).path == "structured"  # Dense's own O(n) diagonal
    assert sl.explain(sl.trace, sl.Dense(a), alg=sl.Hutchinson()).path == "hutchinson"
    with pytest.raises(TypeError, match="does not compute"):
        sl.slogdet(cases["cholesky"], alg=sl.CG())
    with pytest.raises(TypeError, match="does not compute"):
        sl.eigh(cases["cholesky"], alg=sl.LU())
    with pytest.raises(TypeError, match="algorithm object"):
        sl.solve(cases["cholesky"], x, alg="cg")
    with pytest.raises(TypeError, match="explain"):
        sl.explain(sl.matmat, cases["cholesky"], x)
    # The shifted inverse is Q diag(1 / (w + c)) Q^T with a Kron Q, annotated PSD.
    inverse = sl.inv(cases["shifted"])
    assert isinstance(inverse, sl.PSD)
    assert isinstance(inverse.op, sl.Spectral)
    assert isinstance(inverse.op.vectors, sl.Kron)
    _ = rng


def test_cholesky_refuses_indefinite_and_psd_falls_back() -> None:
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(sl.NotPositiveDefiniteError):
        sl.solve(sl.Dense(indefinite), np.ones(2), alg=sl.Cholesky())
    # A wrong PSD annotation costs a failed Cholesky, then LU gives the right answer.
    np.testing.assert_allclose(
        sl.solve(sl.PSD(indefinite), np.ones(2)), np.linalg.solve(indefinite, np.ones(2))
    )
    sign, logabsdet = sl.slogdet(sl.PSD(indefinite))
    assert sign == -1
    assert np.isclose(logabsdet, np.log(3.0))


def test_cg_record_warning_and_error() -> None:
    A = sl.PSD(sl.Diagonal(np.linspace(1.0, 100.0, 50)))
    b = np.ones((50, 3))
    X, info = sl.cg(A, b, tol=1e-10)
    assert bool(info.converged.all())
    assert float(info.residual.max()) <= 1e-10
    assert int(info.iterations) <= 50
    np.testing.assert_allclose(X, b / np.linspace(1.0, 100.0, 50)[:, None], rtol=1e-8)
    with pytest.warns(sl.ConvergenceWarning, match="did not converge: 3 iterations"):
        sl.solve(A, b, alg=sl.CG(tol=1e-12, max_iters=3))
    with pytest.raises(sl.ConvergenceError):
        sl.solve(A, b, alg=sl.CG(tol=1e-12, max_iters=3, on_failure="raise"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sl.solve(A, b, alg=sl.CG(tol=1e-12, max_iters=3, on_failure="ignore"))
    # A preconditioner: Jacobi makes a diagonal operator converge in one step.
    _, info = sl.cg(A, b, tol=1e-12, preconditioner="jacobi")
    assert int(info.iterations) == 1
    _, info = sl.cg(A, b, tol=1e-12, preconditioner=sl.Diagonal(1 / np.linspace(1, 100, 50)))
    assert int(info.iterations) == 1
    # A zero right-hand side column converges at once, without dividing by zero.
    b[:, 1] = 0
    X, info = sl.cg(A, b, tol=1e-10)
    assert np.all(X[:, 1] == 0)
    assert bool(info.converged.all())
    # inv with CG: a lazy inverse running CG on each application.
    Ainv = sl.inv(A, alg=sl.CG(tol=1e-12))
    assert isinstance(Ainv, sl.Inverse)
    assert isinstance(Ainv.alg, sl.CG)
    np.testing.assert_allclose(Ainv @ np.ones(50), 1 / np.linspace(1, 100, 50), rtol=1e-9)


def _kron_plus_diagonal(g: np.random.Generator) -> tuple[np.ndarray, ...]:
    def spd(n: int) -> np.ndarray:
        m = g.standard_normal((n, n))
        return m @ m.T / n + np.eye(n)

    a, b, d = spd(4), spd(5), g.uniform(0.5, 2.0, 20)
    x = g.standard_normal((20, 2))
    return a, b, d, x


@pytest.mark.parametrize("backend", BACKENDS)
def test_cg_on_kron_plus_diagonal_converges_and_differentiates(backend: str) -> None:
    """Acceptance: CG on Kron + Diagonal converges to 1e-8 on every backend, and its
    gradient (implicit differentiation) matches central finite differences."""
    a, b, d, x = _kron_plus_diagonal(np.random.default_rng(0))
    dense = np.kron(a, b) + np.diag(d)
    expected = np.linalg.solve(dense, x)

    def loss_np(a: np.ndarray, d: np.ndarray, x: np.ndarray) -> float:
        return float(np.sum(np.linalg.solve(np.kron(a, b) + np.diag(d), x) ** 2))

    def fd(f: Any, v: np.ndarray, index: tuple[int, ...], h: float = 1e-6) -> float:
        e = np.zeros_like(v)
        e[index] = h
        return (f(v + e) - f(v - e)) / (2 * h)

    fd_a = fd(lambda v: loss_np(v, d, x), a, (1, 2))
    fd_d = fd(lambda v: loss_np(a, v, x), d, (3,))
    fd_x = fd(lambda v: loss_np(a, d, v), x, (4, 1))
    alg = sl.CG(tol=1e-12)

    def operator(a: Any, d: Any) -> sl.LinearOperator:
        return sl.Kron(sl.PSD(a), sl.PSD(to_backend(b, backend))) + sl.PSD(sl.Diagonal(d))

    if backend == "numpy":
        X, info = sl.cg(operator(a, d), x, tol=1e-8)
        assert bool(info.converged.all())
        assert np.linalg.norm(dense @ X - x) <= 1e-8 * np.linalg.norm(x)
        return
    if backend == "torch":
        import torch

        ta, td, tx = (torch.tensor(v, requires_grad=True) for v in (a, d, x))
        X, info = sl.cg(operator(ta, td), tx, tol=1e-8)
        assert bool(info.converged.all())
        assert np.linalg.norm(dense @ to_numpy(X) - x) <= 1e-8 * np.linalg.norm(x)
        (sl.solve(operator(ta, td), tx, alg=alg) ** 2).sum().backward()
        grads = (ta.grad[1, 2].item(), td.grad[3].item(), tx.grad[4, 1].item())
    else:
        import jax
        import jax.numpy as jnp

        ja, jd, jx = map(jnp.asarray, (a, d, x))
        X, info = jax.jit(lambda a, d, x: sl.cg(operator(a, d), x, tol=1e-8))(ja, jd, jx)
        assert bool(info.converged.all())
        assert np.linalg.norm(dense @ np.asarray(X) - x) <= 1e-8 * np.linalg.norm(x)

        def loss(a: Any, d: Any, x: Any) -> Any:
            return jnp.sum(sl.solve(operator(a, d), x, alg=alg) ** 2)

        ga, gd, gx = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(ja, jd, jx)
        grads = (float(ga[1, 2]), float(gd[3]), float(gx[4, 1]))
    np.testing.assert_allclose(grads, (fd_a, fd_d, fd_x), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(X), expected, rtol=1e-6)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_shifted_kron_gradients(backend: str) -> None:
    """The exact shifted path differentiates through the factors' eigendecompositions."""
    a, b, _, x = _kron_plus_diagonal(np.random.default_rng(1))
    x = x[:, 0]

    def loss_np(a: np.ndarray) -> float:
        S = np.kron(a, b) + 0.1 * np.eye(20)
        return float(np.linalg.slogdet(S)[1] + x @ np.linalg.solve(S, x))

    e = np.zeros_like(a)
    e[0, 3] = e[3, 0] = 1e-6  # a symmetric perturbation: the annotation says a is symmetric
    expected = (loss_np(a + e) - loss_np(a - e)) / 2e-6

    def loss(a: Any, bb: Any, xx: Any) -> Any:
        S = sl.Kron(sl.PSD(a), sl.PSD(bb)) + 0.1 * sl.Identity(20)
        return sl.logdet(S) + sl.solve(S, xx) @ xx

    if backend == "torch":
        import torch

        ta = torch.tensor(a, requires_grad=True)
        loss(ta, torch.tensor(b), torch.tensor(x)).backward()
        grad = ta.grad[0, 3].item() + ta.grad[3, 0].item()
    else:
        import jax
        import jax.numpy as jnp

        g = jax.grad(loss)(jnp.asarray(a), jnp.asarray(b), jnp.asarray(x))
        grad = float(g[0, 3] + g[3, 0])
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_lanczos_and_hutchinson() -> None:
    values = np.r_[np.linspace(1.0, 2.0, 99), 10.0]
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((100, 100)))[0]
    A = sl.PSD(sl.Dense(Q @ np.diag(values) @ Q.T))
    w, V = sl.eigh(A, alg=sl.Lanczos(steps=20))
    assert V.shape == (100, 20)
    np.testing.assert_allclose(w[-1], 10.0, rtol=1e-10)
    np.testing.assert_allclose(w[0], 1.0, atol=2e-2)
    v = V.to_dense()[:, -1]
    np.testing.assert_allclose(np.abs(v @ Q[:, -1]), 1.0, rtol=1e-8)  # the top eigenvector
    # Hutchinson: exact on a diagonal, within a few standard errors otherwise.
    D = sl.Diagonal(np.arange(1.0, 51.0))
    np.testing.assert_allclose(sl.diag(D, alg=sl.Hutchinson(samples=3)), np.arange(1.0, 51.0))
    estimate = float(sl.trace(A, alg=sl.Hutchinson(samples=400)))
    error = np.sqrt(2 * np.sum(values**2) / 400)
    assert abs(estimate - values.sum()) <= 4 * error


def test_eigh_is_structured() -> None:
    """Acceptance: `eigh` of a Kron returns a Kron of eigenvectors; `sqrt(PSD(K))^2 = K`."""
    rng = np.random.default_rng(2)
    fs = [(lambda m: m @ m.T + np.eye(3))(rng.standard_normal((3, 3))) for _ in range(3)]
    K = sl.Kron(*fs)
    w, Q = sl.eigh(K)
    assert isinstance(Q, sl.Kron)
    assert all(isinstance(f, sl.Dense) for f in Q.factors)
    np.testing.assert_allclose(np.sort(w), np.linalg.eigvalsh(_kron(fs)), rtol=1e-10)
    R = sl.sqrt(sl.PSD(K))
    np.testing.assert_allclose((R @ R).to_dense(), _kron(fs), rtol=1e-10, atol=1e-10)
    R2 = sl.sqrt(sl.Kron(*(sl.PSD(f) for f in fs)))  # PSD factors: the Kron of the roots
    assert isinstance(R2, sl.Kron)
    np.testing.assert_allclose((R2 @ R2).to_dense(), _kron(fs), rtol=1e-10, atol=1e-10)
    w, Q = sl.eigh(sl.PSD(sl.BlockDiag(np.stack(fs))))
    assert isinstance(Q, sl.BlockDiag)
    w, Q = sl.eigh(sl.Diagonal(np.array([3.0, 1.0])))
    assert isinstance(Q, sl.Identity)
    assert w.tolist() == [3.0, 1.0]


def test_shifted_three_factor_kron_at_4096_matches_dense() -> None:
    """Acceptance: `solve` and `logdet` of `K + 0.1 I` for a 3-factor SPD Kron (n = 4096)
    match the dense result to 1e-8 without an n x n matrix, and far faster."""
    import tracemalloc

    import scipy.linalg

    rng = np.random.default_rng(0)
    fs = [
        (lambda m: m @ m.T / 16 + 0.5 * np.eye(16))(rng.standard_normal((16, 16))) for _ in range(3)
    ]
    S = sl.Kron(*(sl.PSD(f) for f in fs)) + 0.1 * sl.Identity(4096)
    x = rng.standard_normal(4096)
    sl.solve(S, x), sl.logdet(S)  # resolve the rules once
    tracemalloc.start()
    start = time.perf_counter()
    y, logdet = sl.solve(S, x), sl.logdet(S)
    structured = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 4096 * 8 * 16, f"peak memory {peak} bytes suggests a dense matrix"
    assert sl.explain(sl.solve, S, x).path == "shifted"

    dense = _kron(fs) + 0.1 * np.eye(4096)
    start = time.perf_counter()
    lu, piv = scipy.linalg.lu_factor(dense)
    y_ref = scipy.linalg.lu_solve((lu, piv), x)
    logdet_ref = np.sum(np.log(np.abs(np.diag(lu))))
    reference = time.perf_counter() - start
    assert np.linalg.norm(y - y_ref) <= 1e-8 * np.linalg.norm(y_ref)
    assert abs(logdet - logdet_ref) <= 1e-8 * abs(logdet_ref)
    assert structured * 20 < reference, (structured, reference)
