"""Algorithms as arguments: how `solve`, `inv`, `slogdet`, `trace`, `diag` and `eigh` compute.

Each of those functions takes `alg=`, an algorithm object. The default,
[`Auto`][structlin.Auto], takes the exact structured rule where one exists (a Kron's
factor by factor inverse, `B + c I` through `B`'s eigendecomposition), then a dense
factorisation (Cholesky for an operator known to be PSD, LU otherwise) while `n` is
small, then conjugate gradients for a large PSD operator. The others force one method:
[`LU`][structlin.LU], [`Cholesky`][structlin.Cholesky] (dense), [`CG`][structlin.CG]
(iterative, differentiable by implicit differentiation), [`Lanczos`][structlin.Lanczos]
(a few extreme eigenpairs), [`Hutchinson`][structlin.Hutchinson] (stochastic trace and
diagonal). [`explain`][structlin.explain] says which path a call takes and what it costs,
without running it.

An algorithm is a small immutable object whose methods (`solve`, `inv`, `slogdet`,
`eigh`, `trace`, `diag`) do the work, as lineax's solvers are; a method an algorithm
lacks raises `TypeError` naming those that have it. The iterative methods are written
once over the [backend](backends.md) operations, so they run on NumPy, PyTorch and JAX
(under `jax.jit`, through `Backend.while_loop`).

Examples:
    >>> import numpy as np, structlin as sl
    >>> a = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> K = sl.Kron(sl.PSD(a), sl.PSD(a), sl.PSD(a))
    >>> S = K + 0.1 * sl.Identity(8)
    >>> print(sl.explain(sl.solve, S, np.ones(8)).path)
    shifted
    >>> x = sl.solve(S, np.ones(8), alg=sl.CG(tol=1e-12))
    >>> bool(np.allclose(S @ x, np.ones(8)))
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from structlin import _checks, pytree, rules
from structlin._checks import dense_backend
from structlin._dispatch import is_dense_method
from structlin.backends import Array, Backend, backend_of, is_array
from structlin.errors import ConvergenceError, ConvergenceWarning
from structlin.expressions.annotations import PSD
from structlin.expressions.dense import Dense
from structlin.expressions.inverse import Inverse
from structlin.operator import LinearOperator

__all__ = [
    "CG",
    "LU",
    "Algorithm",
    "Auto",
    "CGInfo",
    "Cholesky",
    "Hutchinson",
    "Lanczos",
    "Plan",
    "cg",
    "plan",
]


# -- the plan: what runs, and what it costs ---------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a call runs, as [`explain`][structlin.explain] reports it.

    Attributes:
        operation: `"solve"`, `"inv"`, `"slogdet"`, `"eigh"`, `"trace"` or `"diag"`.
        path: `"structured"` (a rule of the operator's structure), `"shifted"` (`B + c I`
            through `B`'s eigendecomposition), `"cholesky"`, `"lu"`, `"dense"` (another
            dense computation: a dense eigendecomposition or diagonal), `"cg"`,
            `"lanczos"` or `"hutchinson"`.
        algorithm: The algorithm object that runs it.
        reason: Why this path (for `Auto`: the rule that decided).
        cost: The cost, in words and, for the dense paths, in flops.
    """

    operation: str
    path: str
    algorithm: Algorithm
    reason: str
    cost: str
    run: Callable[..., Any] = field(repr=False, compare=False)

    def __str__(self) -> str:
        return (
            f"{self.operation}: {self.path} ({type(self.algorithm).__name__})\n"
            f"  why:  {self.reason}\n  cost: {self.cost}"
        )


def _describe(A: LinearOperator) -> str:
    return f"{type(A).__name__} of shape {_checks.shape_str(A.shape)}"


def _dense_cost(n: int, what: str, flops: float) -> str:
    return f"{what}: O(n^3) with n = {n}, about {flops:.2g} flops and {8 * n * n / 2**20:.3g} MiB (float64) for the dense matrix"


def _eigh_cost(A: LinearOperator) -> str:
    """The cost of `eigh(A)` by its rules, in words."""
    from structlin.expressions.annotations import Symmetric
    from structlin.expressions.scalar_mul import ScalarMul
    from structlin.expressions.sum import Sum

    while isinstance(A, (Symmetric, ScalarMul, Sum)):
        if isinstance(A, Sum):  # B + c I: the cost is B's
            A = max(A.ops, key=lambda op: len(pytree.tree_flatten(op)[0]))
        else:
            A = A.op
    factors = getattr(A, "factors", None)
    if factors is not None:
        sizes = [f.shape[0] for f in factors]
        return (
            f"eigendecompositions of the {len(sizes)} factors ({' + '.join(f'{s}^3' for s in sizes)} "
            f"~ {9 * sum(s**3 for s in sizes):.2g} flops), then per column two products with "
            f"the Kron of eigenvectors (~ {4 * A.shape[0] * sum(sizes):.2g} flops)"
        )
    blocks = getattr(A, "blocks", None)
    if blocks is not None and len(blocks.shape) == 3:
        b, p, _ = blocks.shape
        return f"batched eigendecomposition of {b} blocks of {p} x {p} (~ {9 * b * p**3:.2g} flops)"
    return f"the structured eigendecomposition of {_describe(A)}"


def _shift_reason(A: LinearOperator) -> str:
    return (
        f"{_describe(A)} is B + c I with B symmetric and a structured eigendecomposition: "
        "B = Q diag(w) Q^H gives B + c I = Q diag(w + c) Q^H, exactly"
    )


# -- algorithms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Algorithm:
    """Base class of the algorithm objects. Each method computes one operation; those an
    algorithm does not do raise `TypeError`."""

    def _refuse(self, operation: str, others: str) -> Any:
        raise TypeError(
            f"{type(self).__name__} does not compute {operation}; use alg={others} (or "
            "sl.Auto(), the default)"
        )

    def plan(self, operation: str, A: LinearOperator, B: Array | None = None) -> Plan:
        """The [`Plan`][structlin.algorithms.Plan] this algorithm runs for `operation` on `A` (and `B`)."""
        method = getattr(self, f"_plan_{operation}", None)
        if method is None:
            others = {
                "solve": "sl.LU(), sl.Cholesky() or sl.CG()",
                "inv": "sl.LU(), sl.Cholesky() or sl.CG()",
                "slogdet": "sl.LU() or sl.Cholesky()",
                "eigh": "sl.Lanczos()",
                "trace": "sl.Hutchinson()",
                "diag": "sl.Hutchinson()",
            }[operation]
            return self._refuse(operation, others)
        return method(A, B)


@dataclass(frozen=True)
class LU(Algorithm):
    """The dense LU factorisation, whatever the structure: `O(n^3)` time, `O(n^2)` memory.

    For `solve`, `inv` (an explicit dense inverse) and `slogdet`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Kron(np.array([[2.0, 1.0], [0.0, 1.0]]), np.eye(2))
        >>> sl.solve(A, np.ones(4), alg=sl.LU())
        array([0., 0., 1., 1.])
    """

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        n, k = A.shape[0], _columns(B)
        cost = _dense_cost(n, "LU", 2 / 3 * n**3 + 2 * n * n * k)
        return Plan("solve", "lu", self, "alg=LU()", cost, _lu_solve)

    def _plan_inv(self, A: LinearOperator, B: Array | None) -> Plan:
        n = A.shape[0]
        cost = _dense_cost(n, "LU and inverse", 2 * n**3)
        return Plan("inv", "lu", self, "alg=LU()", cost, _dense_inverse)

    def _plan_slogdet(self, A: LinearOperator, B: Array | None) -> Plan:
        n = A.shape[0]
        cost = _dense_cost(n, "LU", 2 / 3 * n**3)
        return Plan("slogdet", "lu", self, "alg=LU()", cost, _lu_slogdet)


def _dense_inverse(A: LinearOperator) -> LinearOperator:
    return Dense(dense_backend(A)[0].inv(rules.to_dense(A)))


def _lu_solve(A: LinearOperator, B: Array) -> Array:
    return dense_backend(A)[0].solve(rules.to_dense(A), B)


def _lu_slogdet(A: LinearOperator) -> tuple[Array, Array]:
    return dense_backend(A)[0].slogdet(rules.to_dense(A))


@dataclass(frozen=True)
class Cholesky(Algorithm):
    """The dense Cholesky factorisation `A = L L^H`: half the work of LU, for Hermitian
    positive definite operators; `O(n^3)` time, `O(n^2)` memory.

    For `solve`, `inv` (a dense inverse, annotated [`PSD`][structlin.PSD]) and `slogdet`
    (`2 sum log L_ii`). Raises [`NotPositiveDefiniteError`][structlin.NotPositiveDefiniteError]
    if the factorisation fails (NaN entries inside `jax.jit`). `Auto` picks it for a small
    operator known to be PSD that has no structured rule.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[4.0, 2.0], [2.0, 3.0]]))
        >>> round(float(sl.logdet(A, alg=sl.Cholesky())), 10) == round(float(np.log(8.0)), 10)
        True
    """

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        n, k = A.shape[0], _columns(B)
        cost = _dense_cost(n, "Cholesky", n**3 / 3 + 2 * n * n * k)
        return Plan("solve", "cholesky", self, "alg=Cholesky()", cost, _cholesky_solve)

    def _plan_inv(self, A: LinearOperator, B: Array | None) -> Plan:
        n = A.shape[0]
        cost = _dense_cost(n, "Cholesky and inverse", n**3)

        def run(A: LinearOperator) -> LinearOperator:
            backend, dtype, device = dense_backend(A)
            return PSD(Dense(_cholesky_solve(A, backend.eye(A.shape[0], dtype, device))))

        return Plan("inv", "cholesky", self, "alg=Cholesky()", cost, run)

    def _plan_slogdet(self, A: LinearOperator, B: Array | None) -> Plan:
        n = A.shape[0]
        cost = _dense_cost(n, "Cholesky", n**3 / 3)
        return Plan("slogdet", "cholesky", self, "alg=Cholesky()", cost, _cholesky_slogdet)


def _cholesky_solve(A: LinearOperator, B: Array) -> Array:
    backend = dense_backend(A)[0]
    return backend.cholesky_solve(backend.cholesky(rules.to_dense(A)), B)


def _cholesky_slogdet(A: LinearOperator) -> tuple[Array, Array]:
    backend, _, device = dense_backend(A)
    L = backend.cholesky(rules.to_dense(A))
    logabsdet = 2 * backend.sum(backend.log(backend.real(backend.diagonal(L))))
    return backend.zeros((), logabsdet.dtype, device) + 1, logabsdet


@dataclass(frozen=True)
class CG(Algorithm):
    """Conjugate gradients, for Hermitian positive definite operators: only products `A @ V`.

    Batched over the columns of the right-hand side (each column stops when its own
    residual is small enough), preconditioned, and differentiable with respect to the
    right-hand side and the operator's arrays by implicit differentiation: the backward
    pass is one more CG solve, with `A^H`, not the unrolled iterations (a
    `torch.autograd.Function` on PyTorch, `jax.lax.custom_linear_solve` on JAX). It runs
    under `jax.jit`. Each iteration costs one product with `A` and `O(n k)`; in exact
    arithmetic it converges in at most `n` iterations, in practice in about
    `sqrt(cond(A))` times a few.

    Stops when every column has `||A x - b|| <= max(tol ||b||, atol)` (the recursive
    residual) or after `max_iters` iterations; then warns with a
    [`ConvergenceWarning`][structlin.ConvergenceWarning] (or raises
    [`ConvergenceError`][structlin.ConvergenceError] with `on_failure="raise"`) where the
    values can be read. [`cg`][structlin.cg] returns the convergence record.

    For `solve` and `inv` (a lazy [`Inverse`][structlin.Inverse] that runs CG on each
    application).

    Args:
        tol: Relative tolerance; `None` for `1e-8` in double precision, `1e-5` in single.
        atol: Absolute tolerance.
        max_iters: At most this many iterations; `None` for `10 n`.
        preconditioner: An operator `M ~ A^{-1}` (Hermitian positive definite), a callable
            `V -> M V`, `"jacobi"` for `diag(A)^{-1}` (from the structured `diag`), or `None`.
        on_failure: `"warn"`, `"raise"` or `"ignore"` when the tolerance is not reached.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Diagonal(np.array([1.0, 10.0, 100.0])))
        >>> sl.solve(A, np.ones(3), alg=sl.CG(tol=1e-12))
        array([1.  , 0.1 , 0.01])
    """

    tol: float | None = None
    atol: float = 0.0
    max_iters: int | None = None
    preconditioner: Any = None
    on_failure: str = "warn"

    def __post_init__(self) -> None:
        if self.on_failure not in ("warn", "raise", "ignore"):
            raise ValueError(
                f"CG: on_failure must be 'warn', 'raise' or 'ignore', got {self.on_failure!r}"
            )
        if self.max_iters is not None:
            _checks.size(self.max_iters, "CG max_iters", minimum=0)

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        iters = self.max_iters if self.max_iters is not None else 10 * A.shape[0]
        cost = (
            f"at most {iters} iterations, each one product with {_describe(A)} on "
            f"{_columns(B)} column(s) and O(n k)"
        )
        return Plan("solve", "cg", self, "alg=CG()", cost, self.solve)

    def _plan_inv(self, A: LinearOperator, B: Array | None) -> Plan:
        cost = "O(1) to build; each application runs CG (see solve)"
        return Plan("inv", "cg", self, "alg=CG()", cost, lambda A: Inverse(A, alg=self))

    def solve(self, A: LinearOperator, B: Array) -> Array:
        """`A^{-1} B` for a 2-D `B`, warning or raising as `on_failure` says."""
        X, info = cg(
            A,
            B,
            tol=self.tol,
            atol=self.atol,
            max_iters=self.max_iters,
            preconditioner=self.preconditioner,
        )
        if self.on_failure != "ignore":
            _check_convergence(info, self)
        return X


def _check_convergence(info: CGInfo, alg: CG) -> None:
    backend = backend_of(info.residual)
    if not backend.is_concrete(info.residual):
        return
    converged = backend.to_numpy(info.converged)
    if converged.all():
        return
    residual = float(np.max(backend.to_numpy(info.residual)))
    message = (
        f"CG did not converge: {int(backend.to_numpy(info.iterations))} iterations, relative "
        f"residual {residual:.3g} in {int((~converged).sum())} of {converged.size} column(s) "
        f"above the tolerance {float(backend.to_numpy(info.tol)):.3g}; raise max_iters, loosen "
        "tol, or precondition (CG(preconditioner='jacobi')). Is the operator positive definite?"
    )
    if alg.on_failure == "raise":
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=4)


@dataclass(frozen=True)
class Lanczos(Algorithm):
    """The Lanczos iteration for a few extreme eigenpairs of a Hermitian operator.

    `steps` iterations (with full reorthogonalisation) build an orthonormal basis `V` of a
    Krylov space and the tridiagonal `T = V^H A V`; the Ritz values (eigenvalues of `T`)
    approximate the extreme eigenvalues of `A`, the largest and smallest first. Each step
    costs one product with `A` and `O(n steps)`; only products with `A` are needed.

    For `eigh`: returns `steps` Ritz values (ascending) and the `n x steps`
    [`Dense`][structlin.Dense] operator of Ritz vectors.

    Args:
        steps: Krylov dimension (at most `n`).
        seed: Seed of the random start vector (NumPy's generator).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Diagonal(np.r_[np.linspace(1.0, 2.0, 99), 10.0])  # one outlying eigenvalue
        >>> w, V = sl.eigh(A, alg=sl.Lanczos(steps=20))
        >>> round(float(w[-1]), 8), V.shape
        (10.0, (100, 20))
    """

    steps: int = 20
    seed: int = 0

    def _plan_eigh(self, A: LinearOperator, B: Array | None) -> Plan:
        m = min(self.steps, A.shape[0])
        cost = f"{m} products with {_describe(A)} and O(n m^2) = {A.shape[0] * m * m:.2g} for the reorthogonalisation"
        return Plan("eigh", "lanczos", self, "alg=Lanczos()", cost, self.eigh)

    def eigh(self, A: LinearOperator) -> tuple[Array, LinearOperator]:
        backend, dtype, device = dense_backend(A)
        n = A.shape[0]
        m = min(_checks.size(self.steps, "Lanczos steps"), n)
        rng = np.random.default_rng(self.seed)
        v = rng.standard_normal(n)
        v = backend.asarray(v / np.linalg.norm(v), dtype=dtype, device=device)
        basis = [v]
        alphas, betas = [], []
        for j in range(m):
            w = rules.matmat(A, backend.reshape(basis[j], (n, 1)))[:, 0]
            V = backend.stack(basis, axis=1)
            # w - V (V^H w), twice: full reorthogonalisation, which also removes alpha and beta.
            alpha = backend.real(backend.sum(backend.conj(basis[j]) * w))
            for _ in range(2):
                w = w - backend.matmul(V, backend.matmul(backend.conj(backend.swap_last(V)), w))
            alphas.append(alpha)
            if j == m - 1:
                break
            beta = backend.sqrt(backend.real(backend.sum(backend.conj(w) * w)))
            if backend.is_concrete(beta) and float(backend.to_numpy(beta)) <= 1e-12 * abs(
                float(backend.to_numpy(alpha)) + 1
            ):
                break  # an invariant subspace: the Ritz values found are exact
            betas.append(beta)
            basis.append(w / beta)
        m = len(alphas)
        a = backend.stack(alphas)
        T = backend.eye(m, a.dtype, device) * a[None, :]
        if betas:
            b = backend.concatenate([backend.stack(betas), backend.zeros((1,), a.dtype, device)])
            sub = backend.eye(m + 1, a.dtype, device)[:m, 1:] * b[None, :]  # T[j+1, j] = beta_j
            T = T + sub + backend.swap_last(sub)
        theta, S = backend.eigh(T)
        V = backend.stack(basis[:m], axis=1)
        S = backend.astype(S, V.dtype) if backend.is_complex(V.dtype) else S
        return theta, Dense(backend.matmul(V, S))


@dataclass(frozen=True)
class Hutchinson(Algorithm):
    """Hutchinson's stochastic estimator of the trace and the diagonal, from products only.

    With `s` Rademacher probes `z` (entries `±1`), `trace(A) ~ mean z^T A z` and
    `diag(A) ~ mean z * (A z)`, unbiased, with a standard error that falls as `1/sqrt(s)`
    (for the trace, `sqrt(2 ||A||_F^2 / s)` at most). One product with `A` on `s`
    columns. For operators whose products are cheap and whose structured trace or
    diagonal is not.

    Args:
        samples: The number of probes `s`.
        seed: Seed of the probes (NumPy's generator).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Diagonal(np.full(100, 2.0))
        >>> float(sl.trace(A, alg=sl.Hutchinson(samples=10)))  # exact for a diagonal
        200.0
    """

    samples: int = 100
    seed: int = 0

    def _probes(self, A: LinearOperator) -> Array:
        backend, dtype, device = dense_backend(A)
        s = _checks.size(self.samples, "Hutchinson samples")
        z = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=(A.shape[1], s))
        return backend.asarray(z, dtype=dtype, device=device)

    def _cost(self, A: LinearOperator) -> str:
        return f"one product with {_describe(A)} on {self.samples} columns; error ~ 1/sqrt({self.samples})"

    def _plan_trace(self, A: LinearOperator, B: Array | None) -> Plan:
        return Plan("trace", "hutchinson", self, "alg=Hutchinson()", self._cost(A), self.trace)

    def _plan_diag(self, A: LinearOperator, B: Array | None) -> Plan:
        return Plan("diag", "hutchinson", self, "alg=Hutchinson()", self._cost(A), self.diag)

    def trace(self, A: LinearOperator) -> Array:
        Z = self._probes(A)
        backend = backend_of(Z)
        return backend.sum(Z * rules.matmat(A, Z)) / Z.shape[1]

    def diag(self, A: LinearOperator) -> Array:
        Z = self._probes(A)
        backend = backend_of(Z)
        return backend.sum(Z * rules.matmat(A, Z), axis=1) / Z.shape[1]


@dataclass(frozen=True)
class Auto(Algorithm):
    """The default: the exact structured rule where one exists, then a dense factorisation
    while `n` is small, then conjugate gradients for a large PSD operator.

    For `solve`, in order:

    1. a structured rule of the operator (Kron, BlockDiag, Diagonal, Monarch, products
       and multiples of those, ...): exact, at the structure's cost;
    2. `B + c I` with `B` symmetric (annotated, or a Kron of symmetric factors) with a
       structured eigendecomposition: `Q diag(1 / (w + c)) Q^H`, exact, at the cost of
       `eigh(B)` (`O(sum n_i^3)` for a Kron) and two products with `Q`;
    3. an operator known to be PSD ([`is_psd`][structlin.is_psd]) with `n <= dense_limit`:
       dense Cholesky, `O(n^3 / 3)`; with `n > dense_limit`: [`CG`][structlin.CG] with
       `tol` and `max_iters`;
    4. otherwise dense LU, `O(2 n^3 / 3)`, as without `alg=`.

    `inv` and `slogdet` follow the same order (a large PSD `inv` is a lazy inverse that
    runs CG; `slogdet` has no iterative path and stays dense); `eigh`, `trace` and `diag`
    take the structured rule, else the dense computation. The choice reads types only,
    never values, so it is the same under `jax.jit`. [`explain`][structlin.explain] shows it.

    Args:
        dense_limit: The largest `n` solved densely when an iterative method would apply.
        tol: `CG`'s tolerance when it is chosen (`None`: its default).
        max_iters: `CG`'s iteration limit when it is chosen.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Dense(np.eye(3) * 2))
        >>> sl.explain(sl.solve, A, np.ones(3)).path
        'cholesky'
        >>> sl.explain(sl.solve, A, np.ones(3), alg=sl.Auto(dense_limit=2)).path
        'cg'
    """

    dense_limit: int = 4096
    tol: float | None = None
    max_iters: int | None = None

    def _path(self, operation: str, A: LinearOperator) -> str:
        return rules.exact_path(A, operation)

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("solve", A)
        n = A.shape[0]
        if path == "structured":
            why = f"{type(A).__name__} has a structured solve rule"
            return Plan("solve", path, self, why, _structured_cost(A), rules.solve)
        if path == "shifted":
            return Plan("solve", path, self, _shift_reason(A), _eigh_cost(A), rules.solve)
        if rules.is_psd(A):
            if n > self.dense_limit:
                alg = CG(tol=self.tol, max_iters=self.max_iters)
                plan = alg._plan_solve(A, B)
                why = f"{_describe(A)} is PSD, has no structured solve and n > dense_limit = {self.dense_limit}"
                return Plan("solve", "cg", self, why, plan.cost, alg.solve)
            why = f"{_describe(A)} is PSD, has no structured solve and n <= dense_limit = {self.dense_limit}"
            cost = Cholesky()._plan_solve(A, B).cost
            return Plan("solve", "cholesky", self, why, cost, rules.dense_solve)
        why = (
            f"{_describe(A)} has no structured solve and is not known to be PSD "
            "(annotate it with sl.PSD or sl.Symmetric if it is)"
        )
        return Plan("solve", "lu", self, why, LU()._plan_solve(A, B).cost, rules.solve)

    def _plan_inv(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("inv", A)
        n = A.shape[0]
        if path == "structured":
            why = f"{type(A).__name__} has a structured inverse"
            return Plan("inv", path, self, why, _structured_cost(A), rules.inv)
        if path == "shifted":
            return Plan("inv", path, self, _shift_reason(A), _eigh_cost(A), rules.inv)
        if rules.is_psd(A) and n > self.dense_limit:
            alg = CG(tol=self.tol, max_iters=self.max_iters)
            why = f"{_describe(A)} is PSD, has no structured inverse and n > dense_limit = {self.dense_limit}"
            return Plan("inv", "cg", self, why, alg._plan_inv(A, B).cost, alg._plan_inv(A, B).run)
        why = f"{_describe(A)} has no structured inverse: a lazy Inverse solving densely"
        cost = "O(1) to build; each application a dense solve, O(n^3)"
        return Plan("inv", "dense", self, why, cost, rules.inv)

    def _plan_slogdet(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("slogdet", A)
        if path == "structured":
            why = f"{type(A).__name__} has a structured log-determinant"
            return Plan("slogdet", path, self, why, _structured_cost(A), rules.slogdet)
        if path == "shifted":
            return Plan("slogdet", path, self, _shift_reason(A), _eigh_cost(A), rules.slogdet)
        if rules.is_psd(A):
            why = f"{_describe(A)} is PSD and has no structured log-determinant"
            cost = Cholesky()._plan_slogdet(A, B).cost
            return Plan("slogdet", "cholesky", self, why, cost, rules.slogdet)
        why = f"{_describe(A)} has no structured log-determinant"
        return Plan("slogdet", "lu", self, why, LU()._plan_slogdet(A, B).cost, rules.slogdet)

    def _plan_eigh(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("eigh", A)
        n = A.shape[0]
        if path == "dense":
            why = f"{_describe(A)} has no structured eigendecomposition"
            cost = _dense_cost(n, "dense eigh", 9 * n**3)
            return Plan("eigh", "dense", self, why, cost, rules.eigh)
        why = f"{type(A).__name__} has a structured eigendecomposition"
        if path == "shifted":
            why = _shift_reason(A)
        return Plan("eigh", path, self, why, _eigh_cost(A), rules.eigh)

    def _plan_trace(self, A: LinearOperator, B: Array | None) -> Plan:
        return self._plan_diagonal("trace", A, rules.trace)

    def _plan_diag(self, A: LinearOperator, B: Array | None) -> Plan:
        return self._plan_diagonal("diag", A, rules.diag)

    def _plan_diagonal(self, operation: str, A: LinearOperator, run: Callable[..., Any]) -> Plan:
        dense = is_dense_method(rules.diag.resolve(type(A)))
        if operation == "trace":  # the generic trace sums the diagonal
            generic = rules.trace.resolve(LinearOperator)
            dense = dense and rules.trace.resolve(type(A)) is generic
        if dense:
            why = f"{_describe(A)} has no structured {operation}"
            cost = f"the dense matrix, O(n^2) = {A.shape[0] ** 2:.2g} entries"
            return Plan(operation, "dense", self, why, cost, run)
        why = f"{type(A).__name__} has a structured {operation} rule"
        return Plan(operation, "structured", self, why, _structured_cost(A), run)


def _structured_cost(A: LinearOperator) -> str:
    doc = (type(A).__doc__ or "").strip().splitlines()
    first = doc[0] if doc else type(A).__name__
    return f"the rule of {type(A).__name__} (no n x n matrix; its costs are on its page): {first}"


def _columns(B: Array | None) -> int:
    if B is None:
        return 1
    return 1 if len(B.shape) == 1 else B.shape[1]


# -- planning ---------------------------------------------------------------------------------


def plan(operation: str, A: LinearOperator, alg: Algorithm | None, B: Array | None = None) -> Plan:
    """The [`Plan`][structlin.algorithms.Plan] `alg` (`None`: `Auto()`) runs for `operation` on `A`."""
    if alg is None:
        alg = _AUTO
    if not isinstance(alg, Algorithm):
        raise TypeError(
            f"alg must be an algorithm object such as sl.Auto(), sl.Cholesky(), sl.LU(), "
            f"sl.CG(...), sl.Lanczos(...) or sl.Hutchinson(...), got {alg!r}"
        )
    return alg.plan(operation, A, B)


_AUTO = Auto()


# -- conjugate gradients ------------------------------------------------------------------------


class CGInfo(NamedTuple):
    """The convergence record of [`cg`][structlin.cg] (arrays of the right-hand side's backend).

    Attributes:
        iterations: The iterations run (0-d integer array).
        residual: `||A x - b|| / ||b||` per column, from the recursive residual (shape `(k,)`).
        converged: Whether each column reached the tolerance (shape `(k,)`, boolean).
        tol: The relative tolerance used (0-d array).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> _, info = sl.cg(sl.Diagonal(np.array([1.0, 4.0])), np.ones((2, 3)), tol=1e-10)
        >>> int(info.iterations), info.residual.shape, bool(info.converged.all())
        (2, (3,), True)
    """

    iterations: Array
    residual: Array
    converged: Array
    tol: Array


def _default_tol(backend: Backend, dtype: Any) -> float:
    single = backend.result_type(dtype, backend.canonical_dtype("float32")) in (
        backend.canonical_dtype("float32"),
        backend.canonical_dtype("complex64"),
    )
    return 1e-5 if single else 1e-8


def _preconditioner(A: LinearOperator, M: Any) -> Callable[[Array], Array]:
    if M is None:
        return lambda R: R
    if isinstance(M, str):
        if M != "jacobi":
            raise ValueError(
                f"CG: unknown preconditioner {M!r}; 'jacobi', an operator or a callable"
            )
        d = rules.diag(A)
        inverse = 1 / d
        return lambda R: inverse[:, None] * R
    if isinstance(M, LinearOperator):
        return lambda R: rules.matmat(M, R)
    if callable(M):
        return M
    raise TypeError(f"CG: preconditioner must be an operator, a callable or 'jacobi', got {M!r}")


def _cg_core(
    matvec: Callable[[Array], Array],
    B: Array,
    precondition: Callable[[Array], Array],
    tol: float,
    atol: float,
    max_iters: int,
) -> tuple[Array, CGInfo]:
    """Preconditioned CG on the columns of `B`, written once over the backend operations."""
    backend = backend_of(B)

    def dot(U: Array, V: Array) -> Array:
        return backend.sum(backend.conj(U) * V, axis=0)

    def norm(U: Array) -> Array:
        return backend.sqrt(backend.real(dot(U, U)))

    bnorm = norm(B)
    threshold = backend.where(tol * bnorm > atol, tol * bnorm, atol + 0 * bnorm)
    Z = precondition(B)
    zero = backend.asarray(0)
    if backend.device(B) is not None:
        zero = backend.to_device(zero, backend.device(B))
    state = (zero, 0 * B, B, Z, dot(B, Z), bnorm)

    def cond(state: tuple[Array, ...]) -> Array:
        i, _, _, _, _, rnorm = state
        return (i < max_iters) & backend.any(rnorm > threshold)

    def body(state: tuple[Array, ...]) -> tuple[Array, ...]:
        i, X, R, P, rz, rnorm = state
        active = rnorm > threshold
        AP = matvec(P)
        pAp = dot(P, AP)
        alpha = backend.where(active, rz / backend.where(active, pAp, 1 + 0 * pAp), 0 * rz)
        X = X + alpha * P
        R = R - alpha * AP
        Z = precondition(R)
        rz_new = dot(R, Z)
        beta = backend.where(active, rz_new / backend.where(active, rz, 1 + 0 * rz), 0 * rz)
        P = Z + beta * P
        return i + 1, X, R, P, backend.where(active, rz_new, rz), norm(R)

    i, X, _, _, _, rnorm = backend.while_loop(cond, body, state)
    safe = backend.where(bnorm > 0, bnorm, 1 + 0 * bnorm)
    info = CGInfo(i, rnorm / safe, rnorm <= threshold, backend.asarray(tol) + 0 * safe[:1].sum())
    return X, info


def cg(
    A: LinearOperator,
    B: Array,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    max_iters: int | None = None,
    preconditioner: Any = None,
) -> tuple[Array, CGInfo]:
    """`A^{-1} B` by conjugate gradients, and its convergence record.

    The function behind [`CG`][structlin.CG] (see there for the method, the stopping rule
    and the differentiation), for callers who want the record: a [`CGInfo`][structlin.CGInfo]
    with the iterations, the relative residual and whether each column converged. It does
    not warn; `sl.solve(A, B, alg=sl.CG(...))` does.

    Args:
        A: A Hermitian positive definite operator (not checked).
        B: Array of shape `(n,)` or `(n, k)`.
        tol: As for [`CG`][structlin.CG].
        atol: As for `CG`.
        max_iters: As for `CG`.
        preconditioner: As for `CG`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Diagonal(np.array([1.0, 2.0, 4.0]))
        >>> x, info = sl.cg(A, np.ones(3), tol=1e-10)
        >>> x, int(info.iterations), bool(info.converged.all())
        (array([1.  , 0.5 , 0.25]), 3, True)
    """
    from structlin import functions

    _checks.square(A, "cg")
    B, A = functions._operand(A, B, "cg(A, b)", 0)
    backend = backend_of(B)
    vector = len(B.shape) == 1
    if vector:
        B = backend.reshape(B, (-1, 1))
    n = A.shape[0]
    tol = _default_tol(backend, B.dtype) if tol is None else float(tol)
    iters = 10 * n if max_iters is None else _checks.size(max_iters, "cg max_iters", minimum=0)
    precondition = _preconditioner(A, preconditioner)

    leaves, treedef = pytree.tree_flatten(A)
    where = [i for i, leaf in enumerate(leaves) if is_array(leaf)]

    def rebuild(arrays: list[Array]) -> LinearOperator:
        filled = list(leaves)
        for i, x in zip(where, arrays, strict=True):
            filled[i] = x
        return pytree.tree_unflatten(treedef, filled)

    def apply(arrays: list[Array], V: Array) -> Array:
        return rules.matmat(rebuild(arrays), V)

    def apply_adjoint(arrays: list[Array], V: Array) -> Array:
        return rules.matmat(rules.adjoint(rebuild(arrays)), V)

    def solve(matvec: Callable[[Array], Array], rhs: Array) -> tuple[Array, CGInfo]:
        return _cg_core(matvec, rhs, precondition, tol, float(atol), iters)

    X, info = backend.implicit_solve(
        solve, apply, apply_adjoint, [leaves[i] for i in where], B, symmetric=True
    )
    if vector:
        X = backend.reshape(X, (-1,))
    return X, info
