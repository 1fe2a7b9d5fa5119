"""Algorithms as arguments: how `solve`, `inv`, `slogdet`, `trace`, `diag` and `eigh` compute.

Each of those functions takes `alg=`, an algorithm object. The default,
[`Auto`][structlin.Auto], takes the exact structured rule where one exists (a Kron's
factor by factor inverse, `B + c I` through `B`'s eigendecomposition), then a dense
factorisation (Cholesky for an operator known to be PSD, LU otherwise) while `n` is
small, then an iterative method for a large operator (CG, MINRES or GMRES; SLQ for the
log-determinant of a PSD one). The others force one method: [`LU`][structlin.LU],
[`Cholesky`][structlin.Cholesky] (dense), [`CG`][structlin.CG], [`MINRES`][structlin.MINRES]
and [`GMRES`][structlin.GMRES] (iterative, differentiable by implicit differentiation),
[`Lanczos`][structlin.Lanczos] (a few extreme eigenpairs), [`Hutchinson`][structlin.Hutchinson]
(stochastic trace and diagonal), [`SLQ`][structlin.SLQ] (stochastic log-determinant).
[`explain`][structlin.explain] says which path a call takes and what it costs, without
running it.

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
from typing import Any

import numpy as np

from structlin import _checks, _krylov, pytree, rules
from structlin._checks import dense_backend
from structlin._dispatch import is_dense_method
from structlin._krylov import SolveInfo
from structlin.backends import Array, Backend, backend_of, is_array
from structlin.errors import ConvergenceError, ConvergenceWarning
from structlin.expressions.annotations import PSD
from structlin.expressions.dense import Dense
from structlin.expressions.inverse import Inverse
from structlin.expressions.pseudo_inverse import PseudoInverse
from structlin.operator import LinearOperator

__all__ = [
    "CG",
    "GMRES",
    "LSQR",
    "LU",
    "MINRES",
    "SLQ",
    "Algorithm",
    "Auto",
    "Cholesky",
    "Hutchinson",
    "Lanczos",
    "Plan",
    "SolveInfo",
    "cg",
    "gmres",
    "lsqr",
    "minres",
    "plan",
]


# -- the plan: what runs, and what it costs ---------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a call runs, as [`explain`][structlin.explain] reports it.

    Attributes:
        operation: `"solve"`, `"inv"`, `"slogdet"`, `"eigh"`, `"trace"`, `"diag"`,
            `"lstsq"` or `"pinv"`.
        path: `"structured"` (a rule of the operator's structure), `"shifted"` (`B + c I`
            through `B`'s eigendecomposition), `"eigenbasis"` (a sum of terms in one
            eigenbasis: `A + f(A)`, `A + D` with monomial eigenvectors), `"cholesky"`,
            `"lu"`, `"svd"` (the dense SVD of a pseudo-inverse), `"dense"` (another dense
            computation: a dense eigendecomposition or diagonal), `"cg"`, `"gmres"`,
            `"minres"`, `"lsqr"`, `"lanczos"`, `"hutchinson"` or `"slq"`.
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
    if isinstance(blocks, tuple):  # a Monarch's factors: the one with the largest blocks
        blocks = max(blocks, key=lambda b: b.shape[1])
    if blocks is not None and len(blocks.shape) == 3:
        b, p, _ = blocks.shape
        return f"batched eigendecomposition of {b} blocks of {p} x {p} (~ {9 * b * p**3:.2g} flops)"
    return f"the structured eigendecomposition of {_describe(A)}"


def _shift_reason(A: LinearOperator, path: str = "shifted") -> str:
    if path == "eigenbasis":
        return (
            f"{_describe(A)} is a sum of terms in one eigenbasis Q (A + f(A), A + c I, "
            "A + D with a monomial Q): Q diag(sum of their eigenvalues) Q^H, exactly"
        )
    return (
        f"{_describe(A)} is B + c I with B symmetric and a structured eigendecomposition: "
        "B = Q diag(w) Q^H gives B + c I = Q diag(w + c) Q^H, exactly"
    )


_EIGENBASIS_PATHS = ("shifted", "eigenbasis")


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
                "solve": "sl.LU(), sl.Cholesky(), sl.CG(), sl.MINRES() or sl.GMRES()",
                "inv": "sl.LU(), sl.Cholesky(), sl.CG(), sl.MINRES() or sl.GMRES()",
                "slogdet": "sl.LU(), sl.Cholesky() or sl.SLQ()",
                "eigh": "sl.Lanczos()",
                "trace": "sl.Hutchinson()",
                "diag": "sl.Hutchinson()",
                "lstsq": "sl.LSQR()",
                "pinv": "sl.LSQR()",
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


class _Iterative(Algorithm):
    """What CG, GMRES and MINRES share: `solve` and `inv` (a lazy inverse) from their
    function (`cg`, `gmres`, `minres`), the plan, and the convergence check."""

    _name = ""
    _hint = ""

    def _check_fields(self) -> None:
        name = type(self).__name__
        if self.on_failure not in ("warn", "raise", "ignore"):
            raise ValueError(
                f"{name}: on_failure must be 'warn', 'raise' or 'ignore', got {self.on_failure!r}"
            )
        if self.max_iters is not None:
            _checks.size(self.max_iters, f"{name} max_iters", minimum=0)

    def _iteration_cost(self, A: LinearOperator, B: Array | None) -> str:
        return f"one product with {_describe(A)} on {_columns(B)} column(s) and O(n k)"

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        iters = self.max_iters if self.max_iters is not None else 10 * A.shape[0]
        cost = f"at most {iters} iterations, each {self._iteration_cost(A, B)}"
        name = type(self).__name__
        return Plan("solve", self._name, self, f"alg={name}()", cost, self.solve)

    def _plan_inv(self, A: LinearOperator, B: Array | None) -> Plan:
        name = type(self).__name__
        cost = f"O(1) to build; each application runs {name} (see solve)"
        return Plan("inv", self._name, self, f"alg={name}()", cost, lambda A: Inverse(A, alg=self))

    def _run(self, A: LinearOperator, B: Array) -> tuple[Array, SolveInfo]:
        """The solve itself and its record; each iterative method (CG, GMRES, MINRES)
        provides it."""
        raise NotImplementedError(f"{type(self).__name__} does not define its iteration (_run)")

    def solve(self, A: LinearOperator, B: Array) -> Array:
        """`A^{-1} B` for a 2-D `B`, warning or raising as `on_failure` says."""
        X, info = self._run(A, B)
        if self.on_failure != "ignore":
            _check_convergence(info, self)
        return X


@dataclass(frozen=True)
class CG(_Iterative):
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
    application). For a symmetric indefinite operator use [`MINRES`][structlin.MINRES],
    for a non-symmetric one [`GMRES`][structlin.GMRES].

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

    _name = "cg"
    _hint = (
        "precondition (CG(preconditioner='jacobi')). Is the operator positive definite? "
        "(MINRES solves symmetric indefinite systems, GMRES any)"
    )

    def __post_init__(self) -> None:
        self._check_fields()

    def _run(self, A: LinearOperator, B: Array) -> tuple[Array, SolveInfo]:
        return cg(
            A,
            B,
            tol=self.tol,
            atol=self.atol,
            max_iters=self.max_iters,
            preconditioner=self.preconditioner,
        )


@dataclass(frozen=True)
class GMRES(_Iterative):
    """Restarted GMRES, for any nonsingular square operator: only products `A @ V`.

    Each cycle builds an orthonormal basis of the Krylov space of `A M` (`M` the right
    preconditioner) by the Arnoldi process, `restart` vectors at most, and takes the `x`
    of least residual in it; then it restarts from the true residual. Batched over the
    columns of the right-hand side (each column stops growing its basis when its own
    residual is small enough), preconditioned on the right (so the residual it measures is
    the true one), differentiable with respect to the right-hand side and the operator's
    arrays by implicit differentiation (the backward pass is one more GMRES solve, with
    `A^H`), and runs under `jax.jit`, as [`CG`][structlin.CG] does.

    Each Arnoldi step costs one product with `A` and `O(n k restart)` (two passes of
    Gram-Schmidt against the basis), and it keeps `restart + 1` vectors per column:
    `O(n k restart)` memory. Without restarting (`restart >= n`) it converges in at most
    `n` steps in exact arithmetic; a small `restart` saves memory and may stall, on
    strongly non-normal operators especially.

    Stops when every column has `||A x - b|| <= max(tol ||b||, atol)` (the true residual,
    computed at each restart) or after `max_iters` Arnoldi steps, then warns or raises as
    `on_failure` says. [`gmres`][structlin.gmres] returns the convergence record.

    For `solve` and `inv` (a lazy [`Inverse`][structlin.Inverse] that runs GMRES on each
    application). `Auto` picks it for an operator larger than its `dense_limit` with no
    structured solve that is not known to be symmetric.

    Args:
        tol: Relative tolerance; `None` for `1e-8` in double precision, `1e-5` in single.
        atol: Absolute tolerance.
        max_iters: At most this many Arnoldi steps; `None` for `10 n`.
        restart: The Krylov dimension of a cycle (at most `n`).
        preconditioner: An operator `M ~ A^{-1}` (applied on the right), a callable
            `V -> M V`, `"jacobi"` for `diag(A)^{-1}`, or `None`.
        on_failure: `"warn"`, `"raise"` or `"ignore"` when the tolerance is not reached.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[2.0, 1.0], [0.0, 3.0]]))  # not symmetric
        >>> x = sl.solve(A, np.array([3.0, 3.0]), alg=sl.GMRES(tol=1e-12))
        >>> bool(np.allclose(x, [1.0, 1.0]))
        True
    """

    tol: float | None = None
    atol: float = 0.0
    max_iters: int | None = None
    restart: int = 20
    preconditioner: Any = None
    on_failure: str = "warn"

    _name = "gmres"
    _hint = "raise restart, or precondition (GMRES(preconditioner='jacobi'))"

    def __post_init__(self) -> None:
        self._check_fields()
        _checks.size(self.restart, "GMRES restart")

    def _iteration_cost(self, A: LinearOperator, B: Array | None) -> str:
        m = min(self.restart, A.shape[0])
        return (
            f"one product with {_describe(A)} on {_columns(B)} column(s) and O(n k m) with "
            f"m = restart = {m}; O(n k m) memory for the basis"
        )

    def _run(self, A: LinearOperator, B: Array) -> tuple[Array, SolveInfo]:
        return gmres(
            A,
            B,
            tol=self.tol,
            atol=self.atol,
            max_iters=self.max_iters,
            restart=self.restart,
            preconditioner=self.preconditioner,
        )


@dataclass(frozen=True)
class MINRES(_Iterative):
    """MINRES (Paige and Saunders), for Hermitian operators, indefinite ones included: only
    products `A @ V`.

    The Lanczos process with a QR factorisation of its tridiagonal matrix gives, at step
    `j`, the `x` of least residual in the Krylov space, with a three-term recurrence: like
    [`CG`][structlin.CG], `O(n k)` memory and one product with `A` per iteration, but it
    needs only symmetry, not definiteness (CG may break down on an indefinite operator).
    Batched, preconditioned, differentiable by implicit differentiation and `jax.jit`-able
    as CG is.

    Stops when every column's recursive residual estimate is at most
    `max(tol ||b||, atol)` (in the norm of the preconditioner `M` where there is one:
    `||r||_M` with `||b||_M`) or after `max_iters` iterations, then warns or raises as
    `on_failure` says. [`minres`][structlin.minres] returns the convergence record.

    For `solve` and `inv`. `Auto` picks it for an operator larger than its `dense_limit`
    with no structured solve that is known to be symmetric ([`is_symmetric`][structlin.is_symmetric])
    but not PSD.

    Args:
        tol: Relative tolerance; `None` for `1e-8` in double precision, `1e-5` in single.
        atol: Absolute tolerance.
        max_iters: At most this many iterations; `None` for `10 n`.
        preconditioner: An operator `M ~ |A|^{-1}` that is Hermitian positive definite, a
            callable `V -> M V`, `"jacobi"` for `diag(A)^{-1}` (only where that is
            positive), or `None`.
        on_failure: `"warn"`, `"raise"` or `"ignore"` when the tolerance is not reached.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Symmetric(sl.Diagonal(np.array([-2.0, 1.0, 4.0])))  # indefinite
        >>> sl.solve(A, np.ones(3), alg=sl.MINRES(tol=1e-12))
        array([-0.5 ,  1.  ,  0.25])
    """

    tol: float | None = None
    atol: float = 0.0
    max_iters: int | None = None
    preconditioner: Any = None
    on_failure: str = "warn"

    _name = "minres"
    _hint = "precondition (a positive definite M). Is the operator symmetric? (GMRES is not restricted to symmetric operators)"

    def __post_init__(self) -> None:
        self._check_fields()

    def _run(self, A: LinearOperator, B: Array) -> tuple[Array, SolveInfo]:
        return minres(
            A,
            B,
            tol=self.tol,
            atol=self.atol,
            max_iters=self.max_iters,
            preconditioner=self.preconditioner,
        )


def _check_convergence(info: SolveInfo, alg: _Iterative | LSQR) -> None:
    backend = backend_of(info.residual)
    if not backend.is_concrete(info.residual):
        return
    converged = backend.to_numpy(info.converged)
    if converged.all():
        return
    residual = float(np.max(backend.to_numpy(info.residual)))
    message = (
        f"{type(alg).__name__} did not converge: {int(backend.to_numpy(info.iterations))} "
        f"iterations, relative residual {residual:.3g} in {int((~converged).sum())} of "
        f"{converged.size} column(s) above the tolerance {float(backend.to_numpy(info.tol)):.3g}; "
        f"raise max_iters, loosen tol, or {alg._hint}"
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
        return _rademacher(A, self.samples, self.seed, "Hutchinson")

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


def _rademacher(A: LinearOperator, samples: int, seed: int, what: str) -> Array:
    backend, dtype, device = dense_backend(A)
    s = _checks.size(samples, f"{what} samples")
    z = np.random.default_rng(seed).choice([-1.0, 1.0], size=(A.shape[1], s))
    return backend.asarray(z, dtype=dtype, device=device)


@dataclass(frozen=True)
class SLQ(Algorithm):
    """Stochastic Lanczos quadrature: the log-determinant, and the trace of any function, of
    a Hermitian positive definite operator, from products only.

    `log det A = trace(log A)`, and for each of `s` Rademacher probes `z`,
    `z^T log(A) z ~ n sum_j w_j log(t_j)`: `m` Lanczos steps from `z` give a tridiagonal
    `T` whose eigenvalues `t_j` and squared first eigenvector components `w_j` are the
    nodes and weights of a Gauss quadrature (Ubaru, Chen and Saad, 2017). The estimate is
    the mean over the probes: its standard error falls as `1/sqrt(s)` (the quadrature
    error falls fast in `m`, geometrically in `sqrt(cond(A))`; 30 steps reach double
    precision for well-conditioned operators). All probes run at once: `m` products with
    `A` on `s` columns and `O(n s)` memory (no reorthogonalisation). The probes come from
    NumPy's generator with `seed`, so a call is deterministic; it runs under `jax.jit` and
    gradients flow through the iterations (unrolled; stochastic like the value).

    For `slogdet` (the sign is 1: `A` is taken to be positive definite, not checked) and,
    by [`trace_function`][structlin.SLQ.trace_function], `trace(f(A))`. `Auto` picks it
    for the log-determinant of a PSD operator larger than its `dense_limit` with no
    structured rule.

    Args:
        samples: The number of probes `s`.
        steps: The number of Lanczos steps `m` per probe (at most `n`).
        seed: Seed of the probes (NumPy's generator).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Diagonal(np.linspace(1.0, 10.0, 400)))
        >>> exact = float(np.sum(np.log(np.linspace(1.0, 10.0, 400))))
        >>> estimate = float(sl.logdet(A, alg=sl.SLQ(samples=10)))
        >>> abs(estimate - exact) / exact < 1e-12  # a diagonal: each probe is exact
        True
    """

    samples: int = 30
    steps: int = 30
    seed: int = 0

    def _plan_slogdet(self, A: LinearOperator, B: Array | None) -> Plan:
        return Plan("slogdet", "slq", self, "alg=SLQ()", self._cost(A), self.slogdet)

    def _cost(self, A: LinearOperator) -> str:
        m = min(self.steps, A.shape[0])
        return (
            f"{m} products with {_describe(A)} on {self.samples} columns, O(n s) memory and "
            f"{self.samples} eigendecompositions of {m} x {m}; standard error ~ 1/sqrt({self.samples})"
        )

    def quadrature(self, A: LinearOperator) -> tuple[Array, Array]:
        """The nodes and weights of every probe's rule, each of shape `(samples, m)`:
        `trace(f(A)) ~ sum(weights * f(nodes)) / samples`."""
        Z = _rademacher(A, self.samples, self.seed, "SLQ")
        backend = backend_of(Z)
        steps = _checks.size(self.steps, "SLQ steps")
        eps = 1e-6 if _single(backend, Z.dtype) else 1e-14
        return _krylov.lanczos_quadrature(lambda V: rules.matmat(A, V), Z, steps, eps)

    def trace_function(self, f: Callable[[Array], Array], A: LinearOperator) -> Array:
        """`trace(f(A))` for a Hermitian `A` and a function `f` of its (real) eigenvalues,
        applied elementwise to arrays of the operator's backend (e.g. `torch.exp`).

        Examples:
            >>> import numpy as np, structlin as sl
            >>> A = sl.Diagonal(np.linspace(1.0, 2.0, 50))
            >>> t = sl.SLQ(samples=4).trace_function(np.sqrt, A)
            >>> bool(np.isclose(t, np.sqrt(np.linspace(1.0, 2.0, 50)).sum()))
            True
        """
        nodes, weights = self.quadrature(A)
        backend = backend_of(nodes)
        return backend.sum(weights * f(nodes)) / nodes.shape[0]

    def slogdet(self, A: LinearOperator) -> tuple[Array, Array]:
        nodes, weights = self.quadrature(A)
        backend = backend_of(nodes)
        logabsdet = backend.sum(weights * backend.log(nodes)) / nodes.shape[0]
        return 0 * logabsdet + 1, logabsdet


@dataclass(frozen=True)
class LSQR(Algorithm):
    """LSQR (Paige and Saunders), for least squares with any operator, rectangular or
    rank-deficient: only products `A @ V` and `A^H @ U`.

    Solves `min ||A x - b||^2 + damp^2 ||x||^2`: with `damp = 0` the least-squares
    solution of least norm (as `numpy.linalg.lstsq` gives it, to the tolerance); with
    `damp > 0` ridge regression, `(A^H A + damp^2 I)^{-1} A^H b`. Mathematically CG on
    the normal equations, but by the Golub-Kahan bidiagonalisation of `A`, which never
    forms `A^H A` and so loses less accuracy to its squared condition number. Each
    iteration costs one product with `A` and one with `A^H` and `O((m + n) k)`; in exact
    arithmetic it converges in at most `min(m, n)` iterations, in practice in about
    `cond(A)` times a few (`sqrt(cond(A^H A + damp^2 I))`).

    Batched over the columns of the right-hand side (each column stops on its own), and
    runs under `jax.jit`. Differentiable with respect to `b` and the operator's arrays by
    implicit differentiation, not through the iterations: the backward pass is two more
    LSQR runs on `[A; damp I]` and its adjoint, from the derivative of the pseudo-inverse
    (Golub and Pereyra), which for full column rank or `damp > 0` is that of the normal
    equations, `d x = N^{-1} (dA^H r - A^H dA x)` with `N = A^H A + damp^2 I` and
    `r = b - A x`. For `damp = 0` it assumes the rank stays the same nearby (the
    pseudo-inverse jumps where it changes), as `torch.linalg.pinv`'s gradient does.

    A column stops when `||r|| <= max(tol (||b|| + ||A|| ||x||), atol)` (a consistent
    system) or `||A^H r|| <= tol ||A|| ||r||` (the least-squares optimum), `||A||` being
    LSQR's running estimate of the Frobenius norm and `r` the residual of the stacked
    problem `[A; damp I] x ~ [b; 0]`; or after `max_iters` iterations, then it warns with
    a [`ConvergenceWarning`][structlin.ConvergenceWarning] (or raises
    [`ConvergenceError`][structlin.ConvergenceError] with `on_failure="raise"`).
    [`lsqr`][structlin.lsqr] returns the convergence record.

    For `lstsq` and `pinv` (a lazy [`PseudoInverse`][structlin.PseudoInverse] that runs
    LSQR on each application). `Auto` picks it for the least squares of an operator larger
    than its `dense_limit` with no structured pseudo-inverse.

    Args:
        tol: Relative tolerance; `None` for `1e-8` in double precision, `1e-5` in single.
        atol: Absolute tolerance on `||r||`.
        max_iters: At most this many iterations; `None` for `10 min(m, n)`.
        damp: The ridge parameter, `>= 0`.
        on_failure: `"warn"`, `"raise"` or `"ignore"` when the tolerance is not reached.

    Raises:
        ValueError: `damp` is negative or not finite, `max_iters` is negative, or
            `on_failure` is not one of the three.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # tall
        >>> b = np.array([1.0, 2.0, 4.0])
        >>> x = sl.lstsq(A, b, alg=sl.LSQR(tol=1e-12))
        >>> bool(np.allclose(x, np.linalg.lstsq(A.to_dense(), b, rcond=None)[0]))
        True
        >>> ridge = sl.lstsq(A, b, alg=sl.LSQR(tol=1e-12, damp=1.0))
        >>> a = A.to_dense()
        >>> bool(np.allclose(ridge, np.linalg.solve(a.T @ a + np.eye(2), a.T @ b)))
        True
    """

    tol: float | None = None
    atol: float = 0.0
    max_iters: int | None = None
    damp: float = 0.0
    on_failure: str = "warn"

    _name = "lsqr"
    _hint = "add damp > 0 (ridge) if the operator is ill-conditioned"

    def __post_init__(self) -> None:
        if self.on_failure not in ("warn", "raise", "ignore"):
            raise ValueError(
                f"LSQR: on_failure must be 'warn', 'raise' or 'ignore', got {self.on_failure!r}"
            )
        if self.max_iters is not None:
            _checks.size(self.max_iters, "LSQR max_iters", minimum=0)
        _damp(self.damp, "LSQR")

    def _cost(self, A: LinearOperator, B: Array | None) -> str:
        m, n = A.shape
        iters = self.max_iters if self.max_iters is not None else 10 * min(m, n)
        return (
            f"at most {iters} iterations, each one product with {_describe(A)} and one with "
            f"its adjoint on {_columns(B)} column(s), and O((m + n) k)"
        )

    def _plan_lstsq(self, A: LinearOperator, B: Array | None) -> Plan:
        return Plan("lstsq", "lsqr", self, "alg=LSQR()", self._cost(A, B), self.lstsq)

    def _plan_pinv(self, A: LinearOperator, B: Array | None) -> Plan:
        cost = "O(1) to build; each application runs LSQR (see lstsq)"
        run = lambda A: PseudoInverse(A, alg=self)  # noqa: E731
        return Plan("pinv", "lsqr", self, "alg=LSQR()", cost, run)

    def lstsq(self, A: LinearOperator, B: Array) -> Array:
        """The least-squares solution for a 2-D `B`, warning or raising as `on_failure` says."""
        X, info = lsqr(A, B, tol=self.tol, atol=self.atol, max_iters=self.max_iters, damp=self.damp)
        if self.on_failure != "ignore":
            _check_convergence(info, self)
        return X


def _damp(damp: Any, name: str) -> float:
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0:
        raise ValueError(
            f"{name}: damp must be a finite number >= 0 (the ridge parameter), got {damp!r}"
        )
    if not np.isfinite(damp):
        raise ValueError(f"{name}: damp must be finite, got {damp!r}")
    return float(damp)


@dataclass(frozen=True)
class Auto(Algorithm):
    """The default: the exact structured rule where one exists, then a dense factorisation
    while `n` is small, then an iterative method for a large operator.

    For `solve`, in order:

    1. a structured rule of the operator (Kron, BlockDiag, Diagonal, Monarch, products
       and multiples of those, ...): exact, at the structure's cost;
    2. `B + c I` with `B` symmetric (annotated, or a Kron of symmetric factors) with a
       structured eigendecomposition: `Q diag(1 / (w + c)) Q^H`, exact, at the cost of
       `eigh(B)` (`O(sum n_i^3)` for a Kron) and two products with `Q`;
    3. `n <= dense_limit`: dense Cholesky (`O(n^3 / 3)`) for an operator known to be PSD
       ([`is_psd`][structlin.is_psd]), dense LU (`O(2 n^3 / 3)`) otherwise, as without
       `alg=`;
    4. `n > dense_limit`: [`CG`][structlin.CG] for an operator known to be PSD,
       [`MINRES`][structlin.MINRES] for one known to be symmetric
       ([`is_symmetric`][structlin.is_symmetric]), [`GMRES`][structlin.GMRES] otherwise,
       with `tol`, `max_iters` (and GMRES's `restart`); but a [`Dense`][structlin.Dense]
       operator (annotated or not) keeps its exact dense factorisation (Cholesky or LU) at
       any size: its matrix is already in memory, and an iterative method would stop at a
       tolerance or stall where the factorisation does not.

    `inv` follows the same order (above `dense_limit`, a lazy inverse that runs the
    iterative method on each application). `slogdet` takes the structured and shifted
    rules, then dense Cholesky (PSD) or LU, but for a PSD operator above `dense_limit`
    the stochastic estimate of [`SLQ`][structlin.SLQ] (with its defaults: 30 probes, 30
    steps, seed 0), since it has no exact iterative method; a `Dense` operator keeps its
    exact Cholesky. `lstsq` and `pinv` take the structured pseudo-inverse, then the dense
    SVD (a `Dense` operator at any size), and [`LSQR`][structlin.LSQR] for an operator
    with `max(m, n) > dense_limit`; an inverse is never taken for a pseudo-inverse, since
    they agree only for a nonsingular operator. `eigh`, `trace` and `diag`
    take the structured rule, else the dense computation. The choice reads types only,
    never values, so it is the same under `jax.jit`. [`explain`][structlin.explain] shows it.

    Args:
        dense_limit: The largest `n` computed densely when an iterative method would apply.
        tol: The iterative method's tolerance when one is chosen (`None`: its default).
        max_iters: Its iteration limit.
        restart: GMRES's restart length when it is chosen.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Dense(np.eye(3) * 2) + sl.Diagonal(np.ones(3)))
        >>> sl.explain(sl.solve, A, np.ones(3)).path
        'cholesky'
        >>> sl.explain(sl.solve, A, np.ones(3), alg=sl.Auto(dense_limit=2)).path
        'cg'
        >>> sl.explain(sl.solve, sl.PSD(sl.Dense(np.eye(3))), np.ones(3), alg=sl.Auto(dense_limit=2)).path
        'cholesky'
        >>> N = sl.Kron(np.eye(3), np.array([[2.0, 1.0], [0.0, 1.0]])) + sl.Diagonal(np.ones(6))
        >>> sl.explain(sl.solve, N, np.ones(6), alg=sl.Auto(dense_limit=2)).path
        'gmres'
    """

    dense_limit: int = 4096
    tol: float | None = None
    max_iters: int | None = None
    restart: int = 20

    def _path(self, operation: str, A: LinearOperator) -> str:
        return rules.exact_path(A, operation)

    def _iterative(self, A: LinearOperator, operation: str) -> tuple[_Iterative | None, str]:
        """The iterative method for a large `A` without a structured `operation`, and why;
        `None` for a dense matrix that is not PSD, which is factorised instead."""
        large = f"has no structured {operation} and n > dense_limit = {self.dense_limit}"
        if _is_dense_matrix(A):
            why = (
                f"{_describe(A)} is a dense matrix, already in memory: its factorisation is "
                "exact, where an iterative method stops at a tolerance and may stall (force "
                "one with alg=sl.CG(), sl.MINRES() or sl.GMRES())"
            )
            return None, why
        if rules.is_psd(A):
            return CG(tol=self.tol, max_iters=self.max_iters), f"{_describe(A)} is PSD, {large}"
        if rules.is_symmetric(A):
            why = f"{_describe(A)} is symmetric (not known to be PSD), {large}"
            return MINRES(tol=self.tol, max_iters=self.max_iters), why
        alg = GMRES(tol=self.tol, max_iters=self.max_iters, restart=self.restart)
        why = (
            f"{_describe(A)} is not known to be symmetric, {large} (annotate it with "
            "sl.Symmetric or sl.PSD if it is: MINRES or CG)"
        )
        return alg, why

    def _plan_solve(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("solve", A)
        n = A.shape[0]
        if path == "structured":
            why = f"{type(A).__name__} has a structured solve rule"
            return Plan("solve", path, self, why, _structured_cost(A), rules.solve)
        if path in _EIGENBASIS_PATHS:
            return Plan("solve", path, self, _shift_reason(A, path), _eigh_cost(A), rules.solve)
        alg, why = self._iterative(A, "solve") if n > self.dense_limit else (None, "")
        if alg is not None:
            return Plan("solve", alg._name, self, why, alg._plan_solve(A, B).cost, alg.solve)
        if why and rules.is_psd(A):
            cost = Cholesky()._plan_solve(A, B).cost
            return Plan("solve", "cholesky", self, why, cost, rules.dense_solve)
        if why:
            return Plan("solve", "lu", self, why, LU()._plan_solve(A, B).cost, rules.solve)
        if rules.is_psd(A):
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
        if path in _EIGENBASIS_PATHS:
            return Plan("inv", path, self, _shift_reason(A, path), _eigh_cost(A), rules.inv)
        alg, why = self._iterative(A, "inverse") if n > self.dense_limit else (None, "")
        if alg is not None:
            plan = alg._plan_inv(A, B)
            return Plan("inv", alg._name, self, why, plan.cost, plan.run)
        why = f"{_describe(A)} has no structured inverse: a lazy Inverse solving densely"
        cost = "O(1) to build; each application a dense solve, O(n^3)"
        return Plan("inv", "dense", self, why, cost, rules.inv)

    def _plan_slogdet(self, A: LinearOperator, B: Array | None) -> Plan:
        path = self._path("slogdet", A)
        if path == "structured":
            why = f"{type(A).__name__} has a structured log-determinant"
            return Plan("slogdet", path, self, why, _structured_cost(A), rules.slogdet)
        if path in _EIGENBASIS_PATHS:
            return Plan("slogdet", path, self, _shift_reason(A, path), _eigh_cost(A), rules.slogdet)
        if rules.is_psd(A):
            if A.shape[0] > self.dense_limit and not _is_dense_matrix(A):
                alg = SLQ()
                why = (
                    f"{_describe(A)} is PSD, has no structured log-determinant and n > "
                    f"dense_limit = {self.dense_limit}: a stochastic estimate (force an exact "
                    "one with alg=sl.Cholesky())"
                )
                return Plan("slogdet", "slq", self, why, alg._cost(A), alg.slogdet)
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
        if path in _EIGENBASIS_PATHS:
            why = _shift_reason(A, path)
        return Plan("eigh", path, self, why, _eigh_cost(A), rules.eigh)

    def _plan_lstsq(self, A: LinearOperator, B: Array | None) -> Plan:
        return self._plan_least_squares("lstsq", A, B)

    def _plan_pinv(self, A: LinearOperator, B: Array | None) -> Plan:
        return self._plan_least_squares("pinv", A, B)

    def _plan_least_squares(self, operation: str, A: LinearOperator, B: Array | None) -> Plan:
        run = _apply_pinv if operation == "lstsq" else rules.pinv
        if self._path("pinv", A) == "structured":
            why = f"{type(A).__name__} has a structured pseudo-inverse"
            return Plan(operation, "structured", self, why, _structured_cost(A), run)
        m, n = A.shape
        if max(m, n) > self.dense_limit and not _is_dense_matrix(A):
            alg = LSQR(tol=self.tol, max_iters=self.max_iters)
            why = (
                f"{_describe(A)} has no structured pseudo-inverse and max(m, n) > "
                f"dense_limit = {self.dense_limit}"
            )
            plan = alg.plan(operation, A, B)
            return Plan(operation, "lsqr", self, why, plan.cost, plan.run)
        why = f"{_describe(A)} has no structured pseudo-inverse: the dense SVD"
        if _is_dense_matrix(A):
            why = f"{_describe(A)} is a dense matrix, already in memory: its SVD"
        k = min(m, n)
        cost = (
            f"thin SVD: O(m n min(m, n)) with (m, n) = ({m}, {n}), about {4 * m * n * k + 8 * k**3:.2g} "
            f"flops and {8 * m * n / 2**20:.3g} MiB (float64) for the dense matrix"
        )
        if operation == "pinv" and not _is_dense_matrix(A):
            cost = f"O(1) to build; each application a {cost}"
        return Plan(operation, "svd", self, why, cost, run)

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


def _apply_pinv(A: LinearOperator, B: Array) -> Array:
    """`A^+ B` through the pseudo-inverse's rule (structured, or the dense SVD)."""
    return rules.matmat(rules.pinv(A), B)


def _is_dense_matrix(A: LinearOperator) -> bool:
    """Whether `A` is a `Dense`, annotated or not."""
    from structlin.expressions.annotations import Symmetric

    while isinstance(A, (PSD, Symmetric)):
        A = A.op
    return isinstance(A, Dense)


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
            f"sl.CG(...), sl.MINRES(...), sl.GMRES(...), sl.Lanczos(...), sl.Hutchinson(...) "
            f"or sl.SLQ(...), got {alg!r}"
        )
    return alg.plan(operation, A, B)


_AUTO = Auto()


# -- iterative solves: the functions with their convergence record ------------------------------


def _default_tol(backend: Backend, dtype: Any) -> float:
    return 1e-5 if _single(backend, dtype) else 1e-8


def _single(backend: Backend, dtype: Any) -> bool:
    return backend.result_type(dtype, backend.canonical_dtype("float32")) in (
        backend.canonical_dtype("float32"),
        backend.canonical_dtype("complex64"),
    )


def _preconditioner(A: LinearOperator, M: Any, name: str) -> Callable[[Array], Array]:
    if M is None:
        return lambda R: R
    if isinstance(M, str):
        if M != "jacobi":
            raise ValueError(
                f"{name}: unknown preconditioner {M!r}; 'jacobi', an operator or a callable"
            )
        d = rules.diag(A)
        inverse = 1 / d
        return lambda R: inverse[:, None] * R
    if isinstance(M, LinearOperator):
        return lambda R: rules.matmat(M, R)
    if callable(M):
        return M
    raise TypeError(
        f"{name}: preconditioner must be an operator, a callable or 'jacobi', got {M!r}"
    )


def _solve_iteratively(
    name: str,
    A: LinearOperator,
    B: Array,
    core: Callable[..., tuple[Array, SolveInfo]],
    tol: float | None,
    atol: float,
    max_iters: int | None,
    preconditioner: Any,
    symmetric: bool,
) -> tuple[Array, SolveInfo]:
    """`core(matvec, B, precondition, tol, atol, max_iters)` on `A` and `B`, differentiated
    implicitly with respect to `B` and `A`'s arrays (`Backend.implicit_solve`)."""
    from structlin import functions

    _checks.square(A, name)
    B, A = functions._operand(A, B, f"{name}(A, b)", 0)
    backend = backend_of(B)
    vector = len(B.shape) == 1
    if vector:
        B = backend.reshape(B, (-1, 1))
    n = A.shape[0]
    tol = _default_tol(backend, B.dtype) if tol is None else float(tol)
    iters = 10 * n if max_iters is None else _checks.size(max_iters, f"{name} max_iters", minimum=0)
    precondition = _preconditioner(A, preconditioner, name.upper())

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

    def solve(matvec: Callable[[Array], Array], rhs: Array) -> tuple[Array, SolveInfo]:
        return core(matvec, rhs, precondition, tol, float(atol), iters)

    X, info = backend.implicit_solve(
        solve, apply, apply_adjoint, [leaves[i] for i in where], B, symmetric=symmetric
    )
    if vector:
        X = backend.reshape(X, (-1,))
    return X, info


def cg(
    A: LinearOperator,
    B: Array,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    max_iters: int | None = None,
    preconditioner: Any = None,
) -> tuple[Array, SolveInfo]:
    """`A^{-1} B` by conjugate gradients, and its convergence record.

    The function behind [`CG`][structlin.CG] (see there for the method, the stopping rule
    and the differentiation), for callers who want the record: a [`SolveInfo`][structlin.SolveInfo]
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
    return _solve_iteratively(
        "cg", A, B, _krylov.cg, tol, atol, max_iters, preconditioner, symmetric=True
    )


def gmres(
    A: LinearOperator,
    B: Array,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    max_iters: int | None = None,
    restart: int = 20,
    preconditioner: Any = None,
) -> tuple[Array, SolveInfo]:
    """`A^{-1} B` by restarted GMRES, and its convergence record.

    The function behind [`GMRES`][structlin.GMRES] (see there for the method, the stopping
    rule and the differentiation): returns the solution and a
    [`SolveInfo`][structlin.SolveInfo] (Arnoldi steps, the true relative residual of each
    column at the last restart, whether it converged). It does not warn;
    `sl.solve(A, B, alg=sl.GMRES(...))` does.

    Args:
        A: A nonsingular square operator.
        B: Array of shape `(n,)` or `(n, k)`.
        tol: As for [`GMRES`][structlin.GMRES].
        atol: As for `GMRES`.
        max_iters: As for `GMRES`.
        restart: As for `GMRES`.
        preconditioner: As for `GMRES`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 4.0]]))
        >>> x, info = sl.gmres(A, np.ones(3), tol=1e-10)
        >>> bool(np.allclose(A @ x, 1.0)), int(info.iterations), bool(info.converged.all())
        (True, 3, True)
    """
    size = _checks.size(restart, "gmres restart")

    def core(*args: Any) -> tuple[Array, SolveInfo]:
        return _krylov.gmres(*args, restart=size)

    return _solve_iteratively(
        "gmres", A, B, core, tol, atol, max_iters, preconditioner, symmetric=False
    )


def minres(
    A: LinearOperator,
    B: Array,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    max_iters: int | None = None,
    preconditioner: Any = None,
) -> tuple[Array, SolveInfo]:
    """`A^{-1} B` by MINRES, for a Hermitian (possibly indefinite) `A`, and its convergence record.

    The function behind [`MINRES`][structlin.MINRES] (see there for the method, the
    stopping rule and the differentiation): returns the solution and a
    [`SolveInfo`][structlin.SolveInfo]. It does not warn;
    `sl.solve(A, B, alg=sl.MINRES(...))` does.

    Args:
        A: A Hermitian operator (not checked).
        B: Array of shape `(n,)` or `(n, k)`.
        tol: As for [`MINRES`][structlin.MINRES].
        atol: As for `MINRES`.
        max_iters: As for `MINRES`.
        preconditioner: As for `MINRES` (Hermitian positive definite).

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Diagonal(np.array([-1.0, 2.0, 4.0]))
        >>> x, info = sl.minres(A, np.ones(3), tol=1e-10)
        >>> x, int(info.iterations), bool(info.converged.all())
        (array([-1.  ,  0.5 ,  0.25]), 3, True)
    """
    return _solve_iteratively(
        "minres", A, B, _krylov.minres, tol, atol, max_iters, preconditioner, symmetric=True
    )


def lsqr(
    A: LinearOperator,
    B: Array,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    max_iters: int | None = None,
    damp: float = 0.0,
) -> tuple[Array, SolveInfo]:
    """`argmin ||A X - B||^2 + damp^2 ||X||^2` (of least norm) by LSQR, and its convergence record.

    The function behind [`LSQR`][structlin.LSQR] (see there for the method, the stopping
    rule and the differentiation), for callers who want the record: a
    [`SolveInfo`][structlin.SolveInfo] with the iterations, `||r|| / ||b||` per column
    (the residual of `[A; damp I] x ~ [b; 0]`, which need not be small for a
    least-squares problem) and whether each column met the stopping rule. It does not
    warn; `sl.lstsq(A, B, alg=sl.LSQR(...))` does.

    Args:
        A: An operator of shape `(m, n)`, any `m` and `n`.
        B: Array of shape `(m,)` or `(m, k)`.
        tol: As for [`LSQR`][structlin.LSQR].
        atol: As for `LSQR`.
        max_iters: As for `LSQR`.
        damp: As for `LSQR`.

    Raises:
        ValueError: `B` does not have `m` rows, or `damp` is negative.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.Dense(np.array([[1.0, 1.0]]))  # wide: x1 + x2 = 2 has many solutions
        >>> x, info = sl.lsqr(A, np.array([2.0]), tol=1e-12)
        >>> x, bool(info.converged.all())  # the one of least norm
        (array([1., 1.]), True)
    """
    from structlin import functions

    m, n = A.shape
    B, A = functions._operand(A, B, "lsqr(A, b)", 0, size=m)
    damp = _damp(damp, "lsqr")
    backend = backend_of(B)
    vector = len(B.shape) == 1
    if vector:
        B = backend.reshape(B, (-1, 1))
    k = B.shape[1]
    tol = _default_tol(backend, B.dtype) if tol is None else float(tol)
    if max_iters is None:
        iters = 10 * max(1, min(m, n))
    else:
        iters = _checks.size(max_iters, "lsqr max_iters", minimum=0)

    leaves, treedef = pytree.tree_flatten(A)
    where = [i for i, leaf in enumerate(leaves) if is_array(leaf)]

    def rebuild(arrays: list[Array]) -> LinearOperator:
        filled = list(leaves)
        for i, x in zip(where, arrays, strict=True):
            filled[i] = x
        return pytree.tree_unflatten(treedef, filled)

    def stacked(arrays: list[Array]) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
        """Products with `[A; damp I]` and its adjoint (`A` and `A^H` for `damp = 0`)."""
        op = rebuild(arrays)
        op_h = rules.adjoint(op)
        if damp == 0:
            return (lambda V: rules.matmat(op, V)), (lambda U: rules.matmat(op_h, U))

        def matvec(V: Array) -> Array:
            return backend.concatenate([rules.matmat(op, V), damp * V], axis=0)

        def rmatvec(U: Array) -> Array:
            return rules.matmat(op_h, U[:m]) + damp * U[m:]

        return matvec, rmatvec

    def core(matvec: Callable[[Array], Array], rmatvec: Callable[[Array], Array], rhs: Array):
        return _krylov.lsqr(matvec, rmatvec, rhs, tol, float(atol), iters)

    def padded(B: Array) -> Array:
        if damp == 0:
            return B
        return backend.concatenate([B, backend.zeros((n, B.shape[1]), B.dtype, backend.device(B))])

    def forward(arrays: list[Array]) -> tuple[Array, SolveInfo]:
        B, *leaf_arrays = arrays
        return core(*stacked(leaf_arrays), padded(B))

    def backward(arrays: list[Array], X: Array, G: Array) -> list[Array | None]:
        # The derivative of x = C^+ c for C = [A; damp I], c = [b; 0] (Golub and Pereyra):
        # dx = -C^+ dC x + C^+ C^{+H} dC^H r + (I - C^+ C) dC^H C^{+H} x, with r = c - C x.
        # Its adjoint for the cotangent g: dc = u and dC = -u x^H + r w^H + v h^H, with
        # u = C^{+H} g, w = C^+ u, v = C^{+H} x and h = (I - C^+ C) g; each a least-squares
        # solve with C or C^H. For damp > 0, C has full column rank: v = h = 0.
        B, *leaf_arrays = arrays
        matvec, rmatvec = stacked(leaf_arrays)
        R = padded(B) - matvec(X)
        if damp > 0:
            U, _ = core(rmatvec, matvec, G)
            W, _ = core(matvec, rmatvec, U)
            left, right = [U, R], [-X, W]
        else:
            UV, _ = core(rmatvec, matvec, backend.concatenate([G, X], axis=1))
            U, V = UV[:, :k], UV[:, k:]
            WP, _ = core(matvec, rmatvec, backend.concatenate([U, matvec(G)], axis=1))
            W, H = WP[:, :k], G - WP[:, k:]
            left, right = [U, R, V], [-X, W, H]
        cotangent = backend.concatenate([Y[:m] for Y in left], axis=1)
        columns = backend.concatenate(right, axis=1)
        grads = backend.vjp(lambda ls: rules.matmat(rebuild(ls), columns), leaf_arrays, cotangent)
        return [U[:m], *grads]

    X, info = backend.custom_vjp(forward, backward, [B, *(leaves[i] for i in where)])
    if vector:
        X = backend.reshape(X, (-1,))
    return X, info
