"""Issue 21, second phase: GMRES, MINRES and stochastic Lanczos quadrature, against dense
NumPy on every backend in float32 and float64; their gradients, `jax.jit`, convergence
records and warnings, and what `Auto` picks for large operators."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import structlin as sl
from conformance import BACKENDS, RTOL, assert_close, to_backend, to_numpy

DTYPES = ("float32", "float64")


def _arr(backend: str, dtype: str) -> Any:
    return lambda x: to_backend(np.asarray(x).astype(dtype), backend)


def _tol(dtype: str) -> float:
    return 1e-6 if dtype == "float32" else 1e-11


def _systems(rng: np.random.Generator, n: int = 12) -> tuple[np.ndarray, ...]:
    """A non-symmetric, a symmetric indefinite and an SPD matrix, and right-hand sides
    (three columns, the middle one zero)."""
    g = rng.standard_normal((n, n)) / np.sqrt(n)
    nonsymmetric = g + 2.0 * np.eye(n)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    w = np.linspace(1.0, 3.0, n) * np.where(np.arange(n) % 3 == 0, -1.0, 1.0)
    indefinite = (q * w) @ q.T
    spd = g @ g.T + np.eye(n)
    B = rng.standard_normal((n, 3))
    B[:, 1] = 0.0
    return nonsymmetric, (indefinite + indefinite.T) / 2, spd, B


def _solve_in_jit(backend: str, f: Any, *args: Any) -> Any:
    if backend == "jax":
        import jax

        return jax.jit(f)(*args)
    return f(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gmres_minres_slq_against_dense(backend: str, dtype: str) -> None:
    """GMRES (restarted and not, preconditioned), MINRES and SLQ on each backend, under
    `jax.jit` on JAX, against NumPy's dense results."""
    rtol = RTOL[dtype] * (50 if dtype == "float32" else 10)
    arr = _arr(backend, dtype)
    N, S, P, B = _systems(np.random.default_rng(0))
    tol = _tol(dtype)
    expected = np.linalg.solve(N, B)
    configs = ((20, None), (4, None), (4, "jacobi"))
    for restart, preconditioner in configs[::2] if backend == "jax" else configs:  # compile less
        alg = sl.GMRES(tol=tol, restart=restart, preconditioner=preconditioner)

        def run(a: Any, b: Any, alg: sl.GMRES = alg) -> Any:
            return sl.solve(sl.Dense(a), b, alg=alg)

        assert_close(_solve_in_jit(backend, run, arr(N), arr(B)), expected, rtol, f"{alg}")
    X, info = sl.gmres(sl.Dense(arr(N)), arr(B), tol=tol, restart=4)
    assert bool(to_numpy(info.converged).all())
    assert to_numpy(X)[:, 1].tolist() == [0.0] * 12  # a zero column stays zero

    expected = np.linalg.solve(S, B)
    for preconditioner in (None, sl.PSD(sl.Diagonal(arr(np.full(12, 0.5))))):
        alg = sl.MINRES(tol=tol, preconditioner=preconditioner)

        def run(a: Any, b: Any, alg: sl.MINRES = alg) -> Any:
            return sl.solve(sl.Symmetric(a), b, alg=alg)

        assert_close(_solve_in_jit(backend, run, arr(S), arr(B)), expected, rtol, "MINRES")
    X, info = sl.minres(sl.Symmetric(arr(S)), arr(B[:, 0]), tol=tol)
    assert bool(to_numpy(info.converged).all())
    assert_close(X, np.linalg.solve(S, B[:, 0]), rtol, "minres vector")

    # The lazy inverses run the method on each application.
    assert_close(
        sl.inv(sl.Dense(arr(N)), alg=sl.GMRES(tol=tol)) @ arr(B),
        np.linalg.solve(N, B),
        rtol,
        "inv GMRES",
    )

    # SLQ: with as many steps as n, each probe's quadrature is exact up to rounding, and
    # the estimate is Hutchinson's on log(P): within a few standard errors.
    log_p = (lambda w, v: (v * np.log(w)) @ v.T)(*np.linalg.eigh(P))
    exact = np.linalg.slogdet(P)[1]
    samples = 64
    se = np.sqrt(2 * (np.sum(log_p**2) - np.sum(np.diag(log_p) ** 2)) / samples)
    alg = sl.SLQ(samples=samples, steps=12)
    estimate = _solve_in_jit(backend, lambda a: sl.logdet(sl.PSD(a), alg=alg), arr(P))
    assert abs(float(to_numpy(estimate)) - exact) <= 4 * se + 1e-3 * abs(exact)
    sign, _ = sl.slogdet(sl.PSD(arr(P)), alg=alg)
    assert float(to_numpy(sign)) == 1.0
    trace = alg.trace_function(lambda w: w, sl.Dense(arr(P)))
    assert abs(float(to_numpy(trace)) - np.trace(P)) <= 4 * np.sqrt(2 * np.sum(P**2) / samples)


def test_complex_gmres_and_minres() -> None:
    rng = np.random.default_rng(3)
    n = 10
    N = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)) + 4 * np.eye(n)
    H = N + N.conj().T - 2 * np.eye(n)  # Hermitian, indefinite
    b = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    x = sl.solve(sl.Dense(N), b, alg=sl.GMRES(tol=1e-12, restart=5))
    np.testing.assert_allclose(x, np.linalg.solve(N, b), rtol=1e-9)
    x = sl.solve(sl.Symmetric(H), b, alg=sl.MINRES(tol=1e-12))
    np.testing.assert_allclose(x, np.linalg.solve(H, b), rtol=1e-8)


def test_records_warnings_and_errors() -> None:
    N, S, _, B = _systems(np.random.default_rng(1), n=30)
    _, info = sl.gmres(sl.Dense(N), B, tol=1e-10, restart=30)
    assert int(info.iterations) <= 30
    assert bool(info.converged.all())
    assert float(info.residual.max()) <= 1e-10
    assert info.residual[1] == 0.0
    with pytest.warns(
        sl.ConvergenceWarning, match=r"GMRES did not converge: 2 iterations.*restart"
    ):
        sl.solve(sl.Dense(N), B, alg=sl.GMRES(tol=1e-12, max_iters=2))
    with pytest.raises(sl.ConvergenceError, match="MINRES did not converge"):
        sl.solve(sl.Dense(S), B, alg=sl.MINRES(tol=1e-12, max_iters=2, on_failure="raise"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sl.solve(sl.Dense(S), B, alg=sl.MINRES(tol=1e-12, max_iters=2, on_failure="ignore"))
    # MINRES solves an indefinite system CG cannot.
    x, info = sl.minres(sl.Dense(S), B, tol=1e-10)
    assert bool(info.converged.all())
    np.testing.assert_allclose(x, np.linalg.solve(S, B), rtol=1e-8, atol=1e-12)
    for bad, match in ((dict(restart=0), "restart"), (dict(on_failure="loud"), "on_failure")):
        with pytest.raises(ValueError, match=match):
            sl.GMRES(**bad)
    with pytest.raises(ValueError, match="GMRES: unknown preconditioner"):
        sl.solve(sl.Dense(N), B, alg=sl.GMRES(preconditioner="ilu"))
    with pytest.raises(TypeError, match="does not compute"):
        sl.slogdet(sl.Dense(N), alg=sl.GMRES())
    with pytest.raises(TypeError, match="does not compute"):
        sl.solve(sl.Dense(N), B, alg=sl.SLQ())


def test_auto_picks_cg_minres_gmres_and_slq_for_large_operators() -> None:
    rng = np.random.default_rng(2)
    a = (lambda m: m @ m.T / 8 + 0.5 * np.eye(8))(rng.standard_normal((8, 8)))
    c = rng.standard_normal((8, 8)) / 4 + 2 * np.eye(8)  # not symmetric
    d = rng.uniform(0.5, 2.0, 8**3)
    x = rng.standard_normal(8**3)
    K = sl.Kron(sl.PSD(a), sl.PSD(a), sl.PSD(a))
    cases = {
        "cg": K + sl.PSD(sl.Diagonal(d)),
        "minres": K - sl.Symmetric(sl.Diagonal(d)),
        "gmres": sl.Kron(c, c, c) + sl.Diagonal(d),
    }
    auto = sl.Auto(dense_limit=100)
    for path, A in cases.items():
        plan = sl.explain(sl.solve, A, x, alg=auto)
        assert plan.path == path, str(plan)
        assert sl.explain(sl.inv, A, alg=auto).path == path
        assert sl.explain(sl.solve, A, x).path == ("cholesky" if path == "cg" else "lu")
    assert sl.explain(sl.slogdet, cases["cg"], alg=auto).path == "slq"
    assert sl.explain(sl.slogdet, cases["cg"]).path == "cholesky"
    assert sl.explain(sl.slogdet, cases["gmres"], alg=auto).path == "lu"  # no estimate: dense
    # A dense matrix keeps its exact factorisation at any size: it is already in memory.
    dense = np.eye(120) + 0.01
    assert sl.explain(sl.solve, sl.Dense(dense), x[:120], alg=auto).path == "lu"
    assert sl.explain(sl.solve, sl.Symmetric(dense), x[:120], alg=auto).path == "lu"
    assert sl.explain(sl.inv, sl.Dense(dense), alg=auto).path == "dense"
    assert sl.explain(sl.solve, sl.PSD(dense), x[:120], alg=auto).path == "cholesky"
    assert sl.explain(sl.logdet, sl.PSD(dense), alg=auto).path == "cholesky"
    # The default reaches them above n = 4096 (explained here, not run densely).
    big = sl.Kron(sl.PSD(a), sl.PSD(a), sl.PSD(a), sl.PSD(a[:2, :2]), sl.PSD(a[:5, :5]))
    big = big + sl.PSD(sl.Diagonal(np.ones(big.shape[0])))  # n = 5120
    assert sl.explain(sl.solve, big, np.ones(big.shape[0])).path == "cg"
    assert sl.explain(sl.slogdet, big).path == "slq"
    # Run: the iterative solves match the dense ones.
    A = cases["gmres"]
    y = sl.solve(A, x, alg=sl.Auto(dense_limit=100, tol=1e-10))
    assert_close(y, np.linalg.solve(A.to_dense(), x), 1e-7, "Auto: GMRES")
    A = cases["minres"]
    y = sl.inv(A, alg=sl.Auto(dense_limit=100, tol=1e-10)) @ x
    assert_close(y, np.linalg.solve(A.to_dense(), x), 1e-7, "Auto: MINRES")


def _kron_plus_diagonal(g: np.random.Generator) -> tuple[np.ndarray, ...]:
    a = g.standard_normal((4, 4)) / 2 + 2 * np.eye(4)  # not symmetric
    b = (lambda m: m @ m.T / 5 + np.eye(5))(g.standard_normal((5, 5)))
    d = g.uniform(0.5, 2.0, 20) * np.where(np.arange(20) % 2 == 0, 1.0, -1.0)
    x = g.standard_normal((20, 2))
    return a, b, d, x


@pytest.mark.parametrize("method", ["gmres", "minres"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_gradients_match_finite_differences(backend: str, method: str) -> None:
    """The implicit gradient of GMRES (`Kron + Diagonal`, not symmetric) and MINRES
    (`Kron + Diagonal`, symmetric indefinite) with respect to a factor, the diagonal and
    the right-hand side, against central finite differences of the dense solve."""
    a, b, d, x = _kron_plus_diagonal(np.random.default_rng(0))
    if method == "minres":
        a = a + a.T - 2 * np.eye(4)  # symmetric, so the Kron with b is; + D is indefinite

    def dense(a: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.kron(a, b) + np.diag(d)

    def loss_np(a: np.ndarray, d: np.ndarray, x: np.ndarray) -> float:
        return float(np.sum(np.linalg.solve(dense(a, d), x) ** 2))

    def fd(f: Any, v: np.ndarray, index: tuple[int, ...], h: float = 1e-6) -> float:
        e = np.zeros_like(v)
        e[index] = h
        if method == "minres" and v.ndim == 2 and v.shape == (4, 4):
            e[index[::-1]] = h  # keep the factor symmetric
        return (f(v + e) - f(v - e)) / (2 * h)

    grads_fd = (
        fd(lambda v: loss_np(v, d, x), a, (1, 2)),
        fd(lambda v: loss_np(a, v, x), d, (3,)),
        fd(lambda v: loss_np(a, d, v), x, (4, 1)),
    )
    alg = sl.GMRES(tol=1e-13, restart=8) if method == "gmres" else sl.MINRES(tol=1e-13)

    def operator(a: Any, d: Any) -> sl.LinearOperator:
        bb = to_backend(b, backend)
        if method == "gmres":
            return sl.Kron(a, bb) + sl.Diagonal(d)
        return sl.Kron(sl.Symmetric(a), sl.PSD(bb)) + sl.Symmetric(sl.Diagonal(d))

    if backend == "torch":
        import torch

        ta, td, tx = (torch.tensor(v, requires_grad=True) for v in (a, d, x))
        X = sl.solve(operator(ta, td), tx, alg=alg)
        (X**2).sum().backward()
        ga, gd, gx = ta.grad.numpy(), td.grad.numpy(), tx.grad.numpy()
    else:
        import jax
        import jax.numpy as jnp

        def loss(a: Any, d: Any, x: Any) -> Any:
            return jnp.sum(sl.solve(operator(a, d), x, alg=alg) ** 2)

        X = jax.jit(lambda a, d, x: sl.solve(operator(a, d), x, alg=alg))(
            *map(jnp.asarray, (a, d, x))
        )
        ga, gd, gx = map(
            np.asarray, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*map(jnp.asarray, (a, d, x)))
        )
    ga12 = ga[1, 2] + (ga[2, 1] if method == "minres" else 0.0)
    np.testing.assert_allclose((ga12, gd[3], gx[4, 1]), grads_fd, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(X), np.linalg.solve(dense(a, d), x), rtol=1e-8)


def test_slq_error_falls_with_samples() -> None:
    """The SLQ estimate of `log det` of a PSD operator against the dense value: within four
    standard errors of Hutchinson's estimator of `trace(log A)` at every sample count, and
    its mean error over independent seeds falls as the samples grow (about `1/sqrt(s)`)."""
    rng = np.random.default_rng(4)
    n = 150
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    w = np.exp(rng.uniform(-2.0, 2.0, n))  # condition number ~ 50
    P = (q * w) @ q.T
    L = (q * np.log(w)) @ q.T
    exact = np.sum(np.log(w))
    spread = np.sqrt(2 * (np.sum(L**2) - np.sum(np.diag(L) ** 2)))
    A = sl.PSD(sl.Dense(P))
    errors = {}
    for samples in (4, 16, 64):
        errs = [
            float(sl.logdet(A, alg=sl.SLQ(samples=samples, steps=25, seed=seed))) - exact
            for seed in range(6)
        ]
        assert max(abs(e) for e in errs) <= 4 * spread / np.sqrt(samples), (samples, errs)
        errors[samples] = np.sqrt(np.mean(np.square(errs)))
    assert errors[64] < errors[4] / 2, errors
    # The same probes, more steps: the quadrature error is below the sampling error.
    one = sl.SLQ(samples=8, steps=25, seed=1)
    more = sl.SLQ(samples=8, steps=60, seed=1)
    assert abs(float(sl.logdet(A, alg=one)) - float(sl.logdet(A, alg=more))) < 1e-6 * abs(exact)
    # Under Auto, above dense_limit, for an operator that is not a dense matrix (a dense one
    # keeps its exact Cholesky).
    auto = sl.Auto(dense_limit=100)
    lazy = sl.PSD(sl.Dense(P / 2) + sl.Dense(P / 2))
    assert sl.explain(sl.logdet, lazy, alg=auto).path == "slq"
    assert abs(float(sl.logdet(lazy, alg=auto)) - exact) <= 4 * spread / np.sqrt(30)
    assert sl.explain(sl.logdet, A, alg=auto).path == "cholesky"
