"""Issue 21: least squares and the pseudo-inverse. `lstsq` and `pinv` against NumPy's
`lstsq` and `pinv` on every backend in float32 and float64 (tall, wide and rank-deficient
operators), each structure's pseudo-inverse rule, LSQR (with `damp` against the ridge
closed form, under `jax.jit`), its implicit gradients against dense ones on PyTorch and
JAX, what `Auto` picks, and the errors."""

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


def _with_singular_values(rng: np.random.Generator, m: int, n: int, s: list[float]) -> np.ndarray:
    """An `m x n` matrix with singular values `s` (zeros for a rank-deficient one)."""
    q1 = np.linalg.qr(rng.standard_normal((m, len(s))))[0]
    q2 = np.linalg.qr(rng.standard_normal((n, len(s))))[0]
    return (q1 * s) @ q2.T


def _matrices(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "tall": _with_singular_values(rng, 9, 5, [3.0, 2.0, 1.5, 1.0, 0.5]),
        "wide": _with_singular_values(rng, 4, 7, [2.0, 1.5, 1.0, 0.5]),
        "rank-deficient": _with_singular_values(rng, 8, 6, [3.0, 2.0, 1.0, 0.0, 0.0, 0.0]),
    }


def _rcond(a: np.ndarray, dtype: str) -> float:
    """The cutoff structlin applies in `dtype`: `max(m, n) eps` (a float32 rounding of a
    rank-deficient matrix leaves singular values near `eps`, which this drops)."""
    return max(a.shape) * float(np.finfo(dtype).eps)


def _in_jit(backend: str, f: Any, *args: Any) -> Any:
    if backend == "jax":
        import jax

        return jax.jit(f)(*args)
    return f(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_lstsq_and_pinv_match_numpy(backend: str, dtype: str) -> None:
    """The default path (the dense SVD, for a Dense and for a lazy pseudo-inverse of a Sum)
    and LSQR, against `numpy.linalg.lstsq` and `numpy.linalg.pinv`."""
    rng = np.random.default_rng(0)
    arr = _arr(backend, dtype)
    rtol = RTOL[dtype] * 10
    tol = 1e-6 if dtype == "float32" else 1e-12
    matrices = _matrices(rng)
    if backend == "jax":  # each new shape compiles: the hardest case stands for the others
        matrices = {"rank-deficient": matrices["rank-deficient"]}
    for name, a in matrices.items():
        a = a.astype(dtype).astype(np.float64)  # the matrix the backend holds
        B = rng.standard_normal((a.shape[0], 3))
        B[:, 1] = 0.0
        rcond = _rcond(a, dtype)
        expected = np.linalg.lstsq(a, B.astype(dtype).astype(np.float64), rcond=rcond)[0]
        pinv = np.linalg.pinv(a, rcond=rcond)
        half = a / 2
        for op in (sl.Dense(arr(a)), sl.Dense(arr(half)) + sl.Dense(arr(half))):
            assert_close(sl.lstsq(op, arr(B)), expected, rtol, f"{name} {type(op).__name__}")
            assert_close(sl.pinv(op).to_dense(), pinv, rtol, f"{name} pinv")
            assert_close(sl.pinv(op) @ arr(B[:, 0]), expected[:, 0], rtol, f"{name} pinv @ b")
        X = _in_jit(
            backend, lambda a, b: sl.lstsq(sl.Dense(a), b, alg=sl.LSQR(tol=tol)), arr(a), arr(B)
        )
        assert_close(X, expected, rtol * 10, f"{name} LSQR")
        assert to_numpy(X)[:, 1].tolist() == [0.0] * a.shape[1]  # a zero column stays zero
        if backend == "jax":
            continue  # each LSQR compiles its loop: once is enough
        x = sl.lstsq(sl.Dense(arr(a)), arr(B[:, 2]), alg=sl.LSQR(tol=tol))
        assert x.shape == (a.shape[1],)
        assert_close(x, expected[:, 2], rtol * 10, f"{name} LSQR vector")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_lsqr_damp_is_ridge_regression(backend: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    arr = _arr(backend, dtype)
    tol = 1e-6 if dtype == "float32" else 1e-12
    matrices = list(_matrices(rng).values())
    if backend == "jax" and dtype == "float32":
        pytest.skip("each LSQR compiles its loop on JAX: float64 checks the damped one")
    for a in matrices[1:2] if backend == "jax" else matrices:
        a = a.astype(dtype).astype(np.float64)
        B = rng.standard_normal((a.shape[0], 2)).astype(dtype).astype(np.float64)
        for damp in (1.0,) if backend == "jax" else (0.1, 1.0):
            ridge = np.linalg.solve(a.T @ a + damp**2 * np.eye(a.shape[1]), a.T @ B)
            X, info = sl.lsqr(sl.Dense(arr(a)), arr(B), tol=tol, damp=damp)
            assert_close(X, ridge, RTOL[dtype] * 100, f"damp {damp}")
            assert bool(to_numpy(info.converged).all())
            assert to_numpy(info.residual).shape == (2,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_structured_pseudo_inverses(backend: str, dtype: str) -> None:
    """Each structure's rule keeps the structure and matches `numpy.linalg.pinv` of its
    dense matrix; `lstsq` takes it (`explain` says "structured")."""
    if backend == "jax" and dtype == "float32":
        pytest.skip("each eager JAX operation compiles: float64 checks the rules on JAX")
    rng = np.random.default_rng(2)
    arr = _arr(backend, dtype)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    U, V = rng.standard_normal((7, 2)), rng.standard_normal((2, 5))
    wide_U, wide_V = rng.standard_normal((3, 5)), rng.standard_normal((5, 4))  # r > min(m, n)
    blocks = rng.standard_normal((3, 4, 2))
    d = np.array([2.0, 0.0, -4.0, 0.5])
    perm = np.array([2, 0, 3, 1])
    low = sl.LowRank(arr(U), arr(V))
    cases: dict[str, tuple[sl.LinearOperator, type]] = {
        "Diagonal": (sl.Diagonal(arr(d)), sl.Diagonal),
        "Kron": (sl.Kron(arr(a), arr(b)), sl.Kron),
        "BlockDiag": (sl.BlockDiag(arr(blocks)), sl.BlockDiag),
        "LowRank": (low, sl.LowRank),
        "LowRank r > min(m, n)": (sl.LowRank(arr(wide_U), arr(wide_V)), sl.LowRank),
        "Identity": (sl.Identity(4), sl.Identity),
        "Permutation": (sl.Permutation(to_backend(perm, backend)), sl.Permutation),
        "ScalarMul": (-2.0 * low, sl.ScalarMul),
        "ScalarMul by zero": (0.0 * low, sl.ScalarMul),
        "Transpose": (low.T, sl.LowRank),
        "Transpose of a Dense": (sl.Transpose(sl.Dense(arr(a))), sl.Dense),
        "PSD": (sl.PSD(sl.Diagonal(arr(np.abs(d)))), sl.PSD),
        "Inverse": (sl.Inverse(sl.Dense(arr(a[:2])) + sl.Identity(2)), sl.Sum),
    }
    for name, (op, kind) in cases.items():
        P = sl.pinv(op)
        assert isinstance(P, kind), (name, type(P))
        assert P.shape == op.shape[::-1], name
        plan = sl.explain(sl.lstsq, op, arr(np.ones(op.shape[0])))
        assert plan.path == ("svd" if kind is sl.Dense else "structured"), name
        b_ = rng.standard_normal(op.shape[0])
        dense = to_numpy(op.to_dense()).astype(np.float64)
        rcond = _rcond(dense, dtype)
        assert_close(P.to_dense(), np.linalg.pinv(dense, rcond=rcond), RTOL[dtype] * 10, name)
        if backend == "jax":
            continue  # lstsq is pinv(A) @ b: each product would compile once more
        expected = np.linalg.lstsq(dense, b_.astype(dtype).astype(np.float64), rcond=rcond)[0]
        assert_close(sl.lstsq(op, arr(b_)), expected, RTOL[dtype] * 10, f"{name} lstsq")
    # A Dense's pseudo-inverse is dense, and its path the SVD; a PseudoInverse's is its operator.
    assert sl.explain(sl.pinv, sl.Dense(arr(a))).path == "svd"
    S = sl.Dense(arr(a)) + sl.Dense(arr(a))
    assert isinstance(sl.pinv(S), sl.PseudoInverse)
    assert sl.pinv(sl.pinv(S)) is S
    assert isinstance(sl.pinv(S.T), sl.PseudoInverse)
    assert sl.explain(sl.lstsq, sl.Transpose(S), arr(np.ones(2))).path == "svd"
    # Zero stays zero, and the cutoff is relative to the largest entry.
    tiny = np.array([1.0, 1e-30 if dtype == "float64" else 1e-20, 0.0])
    assert to_numpy(sl.pinv(sl.Diagonal(arr(tiny))).diag).tolist() == [1.0, 0.0, 0.0]


def test_pinv_is_not_inv_of_a_singular_operator() -> None:
    """A singular square Kron (a singular factor) has a structured inverse rule that raises;
    its pseudo-inverse is still the Kron of the factors' pseudo-inverses."""
    f = np.array([[1.0, 2.0], [2.0, 4.0]])  # rank 1
    K = sl.Kron(f, np.eye(2))
    with pytest.raises(sl.SingularOperatorError):
        sl.solve(K, np.ones(4))
    assert_close(sl.pinv(K).to_dense(), np.linalg.pinv(K.to_dense()), 1e-12, "Kron")
    assert_close(
        sl.lstsq(K, np.arange(4.0)),
        np.linalg.lstsq(K.to_dense(), np.arange(4.0), rcond=None)[0],
        1e-12,
        "lstsq",
    )


def _gradients(backend: str, f: Any, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> list[Any]:
    """The gradients of `sum(f(A, B) * c)` with respect to `A` and `B` at `(a, b)`."""
    if backend == "torch":
        import torch

        A, B = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        (f(A, B) * torch.tensor(c)).sum().backward()
        return [A.grad, B.grad]
    import jax
    import jax.numpy as jnp

    def loss(A: Any, B: Any) -> Any:
        return jnp.sum(f(A, B) * c)

    return list(jax.jit(jax.grad(loss, (0, 1)))(jnp.asarray(a), jnp.asarray(b)))


def _dense_least_squares(backend: str, damp: float) -> Any:
    """`A^+ B`, or `(A^T A + damp^2 I)^{-1} A^T B`, in the library itself."""
    if backend == "torch":
        import torch as lib
    else:
        import jax.numpy as lib

    def ridge(A: Any, B: Any) -> Any:
        eye = lib.eye(A.shape[1], dtype=A.dtype)
        return lib.linalg.solve(A.T @ A + damp**2 * eye, A.T @ B)

    return ridge if damp else lambda A, B: lib.linalg.pinv(A) @ B


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_lsqr_gradients_match_dense(backend: str) -> None:
    """Implicit gradients of LSQR with respect to the operator's array and `b` against those
    of the dense closed forms, for tall, wide and rank-deficient operators, damped or not
    (and through the structured and dense-SVD paths of Auto)."""
    pytest.importorskip(backend)
    rng = np.random.default_rng(3)
    mats = _matrices(rng)
    cases = [(mats["tall"], 0.0), (mats["wide"], 0.5)]
    if backend == "torch":  # JAX compiles each case: these two stand for the others there
        cases += [(mats["wide"], 0.0), (mats["tall"], 0.5), (mats["rank-deficient"], 0.0)]
    for a, damp in cases:
        b = rng.standard_normal((a.shape[0], 2))
        c = rng.standard_normal((a.shape[1], 2))
        expected = _gradients(backend, _dense_least_squares(backend, damp), a, b, c)
        alg = sl.LSQR(tol=1e-13, damp=damp)
        got = _gradients(backend, lambda A, B, alg=alg: sl.lstsq(sl.Dense(A), B, alg=alg), a, b, c)
        for g, e in zip(got, expected, strict=True):
            assert_close(g, to_numpy(e), 1e-8, f"{a.shape} damp {damp}")
        if damp == 0 and a.shape[0] > a.shape[1]:  # the dense SVD and a structured rule too
            got = _gradients(backend, lambda A, B: sl.lstsq(sl.Dense(A), B), a, b, c)
            assert_close(got[0], to_numpy(expected[0]), 1e-8, "svd")
            kron = lambda A, B: sl.lstsq(sl.Kron(sl.Dense(A), sl.Identity(1)), B)  # noqa: E731
            got = _gradients(backend, kron, a, b, c)
            assert_close(got[0], to_numpy(expected[0]), 1e-8, "Kron")


def test_auto_picks_lsqr_for_large_operators_without_a_rule() -> None:
    rng = np.random.default_rng(4)
    a = _matrices(rng)["tall"]
    b = rng.standard_normal(9)
    S = sl.Dense(a / 2) + sl.Dense(a / 2)
    small = sl.Auto(dense_limit=4, tol=1e-12)
    assert sl.explain(sl.lstsq, S, b).path == "svd"
    plan = sl.explain(sl.lstsq, S, b, alg=small)
    assert plan.path == "lsqr"
    assert "dense_limit = 4" in plan.reason
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    assert_close(sl.lstsq(S, b, alg=small), expected, 1e-9, "Auto lsqr")
    # A Dense keeps its SVD at any size; a structured rule stays first.
    assert sl.explain(sl.lstsq, sl.Dense(a), b, alg=small).path == "svd"
    K = sl.Kron(np.ones((3, 1)), sl.Dense(a) + sl.Dense(a))
    assert sl.explain(sl.lstsq, K, np.ones(27), alg=small).path == "structured"
    # pinv with LSQR: a lazy pseudo-inverse that runs it, also as planned by Auto.
    for P in (sl.pinv(S, alg=sl.LSQR(tol=1e-12)), small.plan("pinv", S).run(S)):
        assert isinstance(P, sl.PseudoInverse)
        assert P.alg is not None
        assert_close(P @ b, expected, 1e-9, "pinv LSQR")
        assert_close(P.to_dense(), np.linalg.pinv(a), 1e-9, "pinv LSQR dense")
    assert "each application runs LSQR" in sl.explain(sl.pinv, S, alg=small).cost


def test_errors_and_convergence_warnings() -> None:
    a = np.arange(12.0).reshape(4, 3)
    A = sl.Dense(a)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\).*expected \(4,\) or \(4, k\)"):
        sl.lstsq(A, np.ones(3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\)"):
        sl.lsqr(A, np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(m,\) or \(m, k\)"):
        sl.lstsq(A, np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match="damp must be a finite number >= 0"):
        sl.LSQR(damp=-1.0)
    with pytest.raises(ValueError, match="damp"):
        sl.lsqr(A, np.ones(4), damp=float("nan"))
    with pytest.raises(ValueError, match="on_failure"):
        sl.LSQR(on_failure="never")
    with pytest.raises(TypeError, match=r"does not compute lstsq; use alg=sl\.LSQR"):
        sl.lstsq(A, np.ones(4), alg=sl.CG())
    with pytest.raises(TypeError, match="does not compute pinv"):
        sl.pinv(A, alg=sl.LU())
    with pytest.raises(TypeError, match="explain: function must be"):
        sl.explain(sl.lsqr, A, np.ones(4))
    rng = np.random.default_rng(5)
    ill = _with_singular_values(rng, 30, 20, list(np.logspace(0, -6, 20)))
    b = rng.standard_normal(30)
    with pytest.warns(sl.ConvergenceWarning, match="LSQR did not converge"):
        sl.lstsq(sl.Dense(ill), b, alg=sl.LSQR(max_iters=3))
    with pytest.raises(sl.ConvergenceError, match="raise max_iters"):
        sl.lstsq(sl.Dense(ill), b, alg=sl.LSQR(max_iters=3, on_failure="raise"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = sl.lsqr(sl.Dense(ill), b, max_iters=3)
    assert not bool(info.converged.all())
    assert int(info.iterations) == 3


def test_complex_lsqr_and_its_gradients() -> None:
    """A complex operator: LSQR against NumPy, and (PyTorch's convention for complex
    gradients) its implicit gradients against those of `torch.linalg.pinv`."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    a = rng.standard_normal((7, 4)) + 1j * rng.standard_normal((7, 4))
    b = rng.standard_normal(7) + 1j * rng.standard_normal(7)
    c = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4))
    x = sl.lstsq(sl.Dense(a), b, alg=sl.LSQR(tol=1e-13))
    assert_close(x, np.linalg.lstsq(a, b, rcond=None)[0], 1e-10, "complex LSQR")

    def gradients(f: Any) -> list[Any]:
        A, B = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        (f(A, B) * c).real.sum().backward()
        return [A.grad, B.grad]

    expected = gradients(lambda A, B: torch.linalg.pinv(A) @ B)
    got = gradients(lambda A, B: sl.lstsq(sl.Dense(A), B, alg=sl.LSQR(tol=1e-13)))
    for g, e in zip(got, expected, strict=True):
        assert_close(g, to_numpy(e), 1e-9, "complex gradient")
