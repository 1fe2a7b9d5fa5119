"""Krylov methods written once over the backend operations: the cores of CG, GMRES, MINRES,
LSQR and stochastic Lanczos quadrature.

Each core takes `matvec(V) = A @ V` on an `(n, k)` array and works on all `k` columns at
once, every column stopping at its own tolerance. Loops are `Backend.while_loop` (a Python
loop, or `jax.lax.while_loop` under `jax.jit`), so the state keeps fixed shapes: a column that
has converged is carried along unchanged rather than dropped, and GMRES writes its basis
vector `j` into a preallocated `(restart + 1, n, k)` array through a one-hot mask instead of
by indexing. The algorithm objects and the implicit differentiation live in
`structlin.algorithms`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from structlin.backends import Array, Backend, backend_of

Matvec = Callable[[Array], Array]


class SolveInfo(NamedTuple):
    """The convergence record of an iterative solve ([`cg`][structlin.cg],
    [`gmres`][structlin.gmres], [`minres`][structlin.minres]); arrays of the right-hand
    side's backend.

    Attributes:
        iterations: The iterations run (0-d integer array): products with `A` for CG and
            MINRES, Arnoldi steps for GMRES (which adds one product per restart).
        residual: `||A x - b|| / ||b||` per column (shape `(k,)`): CG's recursive residual,
            GMRES's true residual at its last restart, MINRES's recursive estimate (in the
            preconditioner's norm where there is one).
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


def _dot(backend: Backend, U: Array, V: Array) -> Array:
    return backend.sum(backend.conj(U) * V, axis=0)


def _norm(backend: Backend, U: Array) -> Array:
    return backend.sqrt(backend.real(_dot(backend, U, U)))


def _threshold(backend: Backend, bnorm: Array, tol: float, atol: float) -> Array:
    return backend.where(tol * bnorm > atol, tol * bnorm, atol + 0 * bnorm)


def _zero(backend: Backend, B: Array) -> Array:
    zero = backend.asarray(0)
    if backend.device(B) is not None:
        zero = backend.to_device(zero, backend.device(B))
    return zero


def _record(
    backend: Backend, i: Array, rnorm: Array, bnorm: Array, threshold: Array, tol: float
) -> SolveInfo:
    safe = backend.where(bnorm > 0, bnorm, 1 + 0 * bnorm)
    return SolveInfo(i, rnorm / safe, rnorm <= threshold, backend.asarray(tol) + 0 * safe[:1].sum())


# -- conjugate gradients ----------------------------------------------------------------------


def cg(
    matvec: Matvec,
    B: Array,
    precondition: Matvec,
    tol: float,
    atol: float,
    max_iters: int,
) -> tuple[Array, SolveInfo]:
    """Preconditioned CG on the columns of `B`."""
    backend = backend_of(B)

    def dot(U: Array, V: Array) -> Array:
        return _dot(backend, U, V)

    bnorm = _norm(backend, B)
    threshold = _threshold(backend, bnorm, tol, atol)
    Z = precondition(B)
    state = (_zero(backend, B), 0 * B, B, Z, dot(B, Z), bnorm)

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
        return i + 1, X, R, P, backend.where(active, rz_new, rz), _norm(backend, R)

    i, X, _, _, _, rnorm = backend.while_loop(cond, body, state)
    return X, _record(backend, i, rnorm, bnorm, threshold, tol)


# -- GMRES ------------------------------------------------------------------------------------


def gmres(
    matvec: Matvec,
    B: Array,
    precondition: Matvec,
    tol: float,
    atol: float,
    max_iters: int,
    restart: int,
) -> tuple[Array, SolveInfo]:
    """Restarted, right-preconditioned GMRES on the columns of `B`.

    Each cycle runs at most `restart` Arnoldi steps on `A M` (classical Gram-Schmidt,
    twice), reducing the Hessenberg matrix by Givens rotations as it grows, so that the
    residual of every column is known at every step; a column whose residual falls below
    its threshold stops growing its basis (its next Hessenberg columns are unit vectors).
    At the end of a cycle the small triangular systems are solved, `x += M V y`, and the
    true residual `b - A x` starts the next cycle.
    """
    backend = backend_of(B)
    n, k = B.shape
    m = max(1, min(restart, n))
    dtype, device = B.dtype, backend.device(B)
    slots = backend.arange(m + 1, device)
    bnorm = _norm(backend, B)
    threshold = _threshold(backend, bnorm, tol, atol)
    zero = _zero(backend, B)

    def onehot(j: Array, size: int) -> Array:
        return backend.astype(slots[:size] == j, dtype)

    def pick(x: Array, j: Array) -> Array:  # x[j] for x of shape (m + 1, k)
        return backend.sum(onehot(j, x.shape[0])[:, None] * x, axis=0)

    def cycle(total: Array, R0: Array, rnorm: Array) -> tuple[Array, Array]:
        """One restart cycle from the residual `R0`: the iterations after it and `M V y`."""
        active = rnorm > threshold
        safe = backend.where(active, rnorm, 1 + 0 * rnorm)
        v0 = backend.where(active[None, :], R0 / safe, 0 * R0)
        V = backend.zeros((m + 1, n, k), dtype, device) + onehot(zero, m + 1)[:, None, None] * v0
        # The rotated Hessenberg matrix R, column by column; those never written (after
        # every column converged) stay unit vectors.
        H = backend.eye(m, dtype, device)[:, :, None] + backend.zeros((m, m, k), dtype, device)
        cs = backend.zeros((m, k), dtype, device) + 1
        sn = backend.zeros((m, k), dtype, device)
        g = backend.zeros((m + 1, k), dtype, device) + onehot(zero, m + 1)[:, None] * rnorm
        steps = 0 * backend.astype(active, backend.real(g).dtype)

        def cond(state: tuple[Array, ...]) -> Array:
            j, total, _, _, _, _, _, active, _ = state
            return (j < m) & (total < max_iters) & backend.any(active)

        def body(state: tuple[Array, ...]) -> tuple[Array, ...]:
            j, total, V, H, cs, sn, g, active, steps = state
            e = onehot(j, m + 1)
            w = matvec(precondition(backend.sum(e[:, None, None] * V, axis=0)))
            h = 0 * g
            for _ in range(2):  # classical Gram-Schmidt, twice
                c = backend.sum(backend.conj(V) * w[None], axis=1)
                w = w - backend.sum(V * c[:, None, :], axis=0)
                h = h + c
            hnext = _norm(backend, w)
            ok = active & (hnext > 0)
            v = backend.where(ok[None, :], w / backend.where(ok, hnext, 1 + 0 * hnext), 0 * w)
            V = V + onehot(j + 1, m + 1)[:, None, None] * v[None]
            # Rotations 0 .. j-1 on the new column (those not yet set are the identity).
            h = h + onehot(j + 1, m + 1)[:, None] * hnext  # V[j + 1] was zero: h[j + 1] = 0
            col = [h[i] for i in range(m + 1)]
            # Under jax.jit `j` is traced: every rotation runs, those not set yet as identities.
            set_ = int(backend.to_numpy(j)) if backend.is_concrete(j) else m - 1
            for i in range(set_):
                a, b = col[i], col[i + 1]
                col[i] = cs[i] * a + sn[i] * b
                col[i + 1] = -backend.conj(sn[i]) * a + cs[i] * b
            col = backend.stack(col)
            col = backend.where(active[None, :], col, e[:, None] + 0 * col)  # done: e_j
            # Rotation j, which zeroes entry j + 1 (real and >= 0).
            a, b = pick(col, j), backend.real(pick(col, j + 1))
            absa = backend.abs(a)
            r = backend.sqrt(absa * absa + b * b)
            nonzero = r > 0
            safe_r = backend.where(nonzero, r, 1 + 0 * r)
            phase = backend.where(
                absa > 0, a / backend.where(absa > 0, absa, 1 + 0 * absa), 1 + 0 * a
            )
            c = backend.where(nonzero, absa / safe_r, 1 + 0 * r)
            s = backend.where(nonzero, phase * b / safe_r, 0 * a)
            ej = e[:m]
            cs = cs + ej[:, None] * (c - 1)
            sn = sn + ej[:, None] * s
            diagonal = backend.where(nonzero, phase * r, 1 + 0 * a)
            below = onehot(j + 1, m + 1)
            col = col + e[:, None] * (diagonal - a) - below[:, None] * pick(col, j + 1)
            col = col[:m]  # entry j + 1 is now zero
            H = H + ej[None, :, None] * (col - ej[:, None])[:, None, :]
            gj, gj1 = pick(g, j), pick(g, j + 1)
            new_gj, new_gj1 = c * gj + s * gj1, -backend.conj(s) * gj + c * gj1
            g = g + e[:, None] * (new_gj - gj) + below[:, None] * (new_gj1 - gj1)
            steps = steps + backend.astype(active, steps.dtype)
            active = active & (backend.abs(new_gj1) > threshold)
            return j + 1, total + 1, V, H, cs, sn, g, active, steps

        state = (zero, total, V, H, cs, sn, g, active, steps)
        _, total, V, H, _, _, g, _, steps = backend.while_loop(cond, body, state)
        Rk = backend.permute_dims(H, (2, 0, 1))  # (k, m, m), upper triangular
        y = backend.solve(Rk, backend.permute_dims(g[:m], (1, 0))[:, :, None])[:, :, 0]
        used = backend.astype(slots[None, :m] < backend.astype(steps, slots.dtype)[:, None], dtype)
        y = backend.permute_dims(y * used, (1, 0))  # (m, k)
        return total, precondition(backend.sum(V[:m] * y[:, None, :], axis=0))

    def cond(state: tuple[Array, ...]) -> Array:
        total, _, _, rnorm = state
        return (total < max_iters) & backend.any(rnorm > threshold)

    def body(state: tuple[Array, ...]) -> tuple[Array, ...]:
        total, X, R0, rnorm = state
        total, dX = cycle(total, R0, rnorm)
        X = X + dX
        R0 = B - matvec(X)
        return total, X, R0, _norm(backend, R0)

    total, X, _, rnorm = backend.while_loop(cond, body, (zero, 0 * B, B, bnorm))
    return X, _record(backend, total, rnorm, bnorm, threshold, tol)


# -- MINRES -----------------------------------------------------------------------------------


def minres(
    matvec: Matvec,
    B: Array,
    precondition: Matvec,
    tol: float,
    atol: float,
    max_iters: int,
) -> tuple[Array, SolveInfo]:
    """Preconditioned MINRES (Paige and Saunders) on the columns of `B`, after SciPy's
    `minres`: the Lanczos recurrence with a Givens QR of its tridiagonal matrix; every
    coefficient is real (the operator is Hermitian), one per column."""
    backend = backend_of(B)
    Y = precondition(B)
    beta1 = backend.sqrt(backend.abs(backend.real(_dot(backend, B, Y))))
    threshold = _threshold(backend, beta1, tol, atol)
    zeros = 0 * beta1

    def safe(x: Array) -> Array:
        return backend.where(x > 0, x, 1 + 0 * x)

    def cond(state: tuple[Array, ...]) -> Array:
        i, *_, phibar = state
        return (i < max_iters) & backend.any(phibar > threshold)

    def body(state: tuple[Array, ...]) -> tuple[Array, ...]:
        i, X, R1, R2, Y, W, W2, oldb, beta, dbar, epsln, cs, sn, phibar = state
        active = phibar > threshold
        V = Y / safe(beta)
        Y = matvec(V)
        Y = Y - backend.where(oldb > 0, beta / safe(oldb), zeros) * R1
        alpha = backend.real(_dot(backend, V, Y))
        Y = Y - (alpha / safe(beta)) * R2
        R1, R2 = R2, Y
        Y = precondition(R2)
        oldb, beta = beta, backend.sqrt(backend.abs(backend.real(_dot(backend, R2, Y))))
        oldeps = epsln
        delta = cs * dbar + sn * alpha
        gbar = sn * dbar - cs * alpha
        epsln = sn * beta
        dbar = -cs * beta
        gamma = backend.sqrt(gbar * gbar + beta * beta)
        gamma = safe(gamma)
        cs, sn = gbar / gamma, beta / gamma
        phi, phibar = cs * phibar, sn * phibar
        W1, W2 = W2, W
        W = (V - oldeps * W1 - delta * W2) / gamma
        X = X + phi * W
        new = (X, R1, R2, Y, W, W2, oldb, beta, dbar, epsln, cs, sn, phibar)
        old = state[1:]
        kept = tuple(
            backend.where(active[None, :] if len(a.shape) == 2 else active, a, b)
            for a, b in zip(new, old, strict=True)
        )
        return (i + 1, *kept)

    state = (_zero(backend, B), 0 * B, B, B, Y, 0 * B, 0 * B, zeros, beta1, zeros, zeros)
    state = (*state, zeros - 1, zeros, beta1)
    final = backend.while_loop(cond, body, state)
    i, X, phibar = final[0], final[1], final[-1]
    return X, _record(backend, i, phibar, beta1, threshold, tol)


# -- LSQR -------------------------------------------------------------------------------------


def lsqr(
    matvec: Matvec,
    rmatvec: Matvec,
    B: Array,
    tol: float,
    atol: float,
    max_iters: int,
) -> tuple[Array, SolveInfo]:
    """LSQR (Paige and Saunders, 1982) on the columns of `B`, after SciPy's `lsqr`:
    `argmin ||A x - b||` of least norm, from products with `A` (`matvec`) and `A^H`
    (`rmatvec`) only. Golub-Kahan bidiagonalisation from `b`, with a Givens QR of the
    bidiagonal matrix; mathematically CG on the normal equations `A^H A x = A^H b`, but
    without forming them. From `x = 0` every iterate lies in the row space of `A`, so
    the limit is the least-norm solution. Every coefficient is real, one per column.

    A column stops when `||r|| <= max(tol (||b|| + ||A|| ||x||), atol)` (a consistent
    system) or `||A^H r|| <= tol ||A|| ||r||` (a least-squares one), with `||A||` the
    Frobenius norm of the bidiagonal matrix so far, and `r = b - A x` from the recurrence.
    """
    backend = backend_of(B)

    def safe(x: Array) -> Array:
        return backend.where(x > 0, x, 1 + 0 * x)

    bnorm = _norm(backend, B)
    U = B / safe(bnorm)
    V = rmatvec(U)
    alpha = _norm(backend, V)
    V = V / safe(alpha)

    def done(rnorm: Array, arnorm: Array, anorm: Array, xnorm: Array) -> Array:
        consistent = rnorm <= backend.where(
            tol * (bnorm + anorm * xnorm) > atol, tol * (bnorm + anorm * xnorm), atol + 0 * rnorm
        )
        return consistent | (arnorm <= tol * anorm * rnorm)

    zeros = 0 * bnorm
    finished = done(bnorm, alpha * bnorm, zeros, zeros)
    # i, X, U, V, W, alpha, rhobar, phibar (= ||r||), anorm^2, finished
    state = (_zero(backend, B), 0 * V, U, V, V, alpha, alpha, bnorm, zeros, finished)

    def cond(state: tuple[Array, ...]) -> Array:
        i, *_, finished = state
        return (i < max_iters) & backend.any(~finished)

    def body(state: tuple[Array, ...]) -> tuple[Array, ...]:
        i, X, U, V, W, alpha, rhobar, phibar, anorm2, finished = state
        # The next step of the bidiagonalisation: beta u = A v - alpha u, alpha v = A^H u - beta v.
        U = matvec(V) - alpha * U
        beta = _norm(backend, U)
        U = U / safe(beta)
        anorm2 = anorm2 + alpha * alpha + beta * beta
        V = rmatvec(U) - beta * V
        alpha = _norm(backend, V)
        V = V / safe(alpha)
        # The rotation that eliminates beta from the bidiagonal matrix.
        rho = safe(backend.sqrt(rhobar * rhobar + beta * beta))
        c, s = rhobar / rho, beta / rho
        theta, rhobar = s * alpha, -c * alpha
        phi, phibar = c * phibar, s * phibar
        X = X + (phi / rho) * W
        W = V - (theta / rho) * W
        anorm = backend.sqrt(anorm2)
        now = done(phibar, alpha * backend.abs(c) * phibar, anorm, _norm(backend, X))
        new = (X, U, V, W, alpha, rhobar, phibar, anorm2, now)
        old = state[1:]
        kept = tuple(
            backend.where(finished[None, :] if len(b.shape) == 2 else finished, b, a)
            for a, b in zip(new, old, strict=True)
        )
        return (i + 1, *kept)

    i, X, *_, phibar, _, finished = backend.while_loop(cond, body, state)
    safe_b = safe(bnorm)
    return X, SolveInfo(i, phibar / safe_b, finished, backend.asarray(tol) + 0 * safe_b[:1].sum())


# -- stochastic Lanczos quadrature ------------------------------------------------------------


def lanczos_quadrature(matvec: Matvec, Z: Array, steps: int, eps: float) -> tuple[Array, Array]:
    """Nodes and weights of the Gauss quadrature rules `z^H f(A) z ~ ||z||^2 sum_j w_j f(t_j)`,
    one rule per column of `Z`, from `steps` Lanczos steps (without reorthogonalisation,
    as stochastic Lanczos quadrature runs it: a lost direction only adds nodes of small
    weight). Returns `(nodes, weights)`, each of shape `(k, steps)`, the weights scaled by
    `||z||^2`. A column whose Krylov space is exhausted (`beta ~ 0`) stops: its remaining
    nodes are decoupled, with weight zero and value 1."""
    backend = backend_of(Z)
    m = max(1, min(steps, Z.shape[0]))
    device = backend.device(Z)
    znorm = _norm(backend, Z)
    V = Z / backend.where(znorm > 0, znorm, 1 + 0 * znorm)
    V_prev = 0 * V
    beta_prev = 0 * znorm
    alive = znorm > 0
    alphas: list[Array] = []
    betas: list[Array] = []
    for j in range(m):
        W = matvec(V)
        alpha = backend.real(_dot(backend, V, W))
        alphas.append(backend.where(alive, alpha, 1 + 0 * alpha))
        if j == m - 1:
            break
        W = W - alpha * V - beta_prev * V_prev
        beta = _norm(backend, W)
        alive = alive & (beta > eps * (backend.abs(alpha) + beta_prev))
        beta = backend.where(alive, beta, 0 * beta)
        betas.append(beta)
        V_prev, V = (
            V,
            backend.where(alive[None, :], W / backend.where(alive, beta, 1 + beta), 0 * W),
        )
        beta_prev = beta
    a = backend.stack(alphas, axis=1)  # (k, m)
    T = backend.eye(m, a.dtype, device)[None] * a[:, None, :]
    if betas:
        b = backend.stack([*betas, 0 * betas[0]], axis=1)  # (k, m): T[j + 1, j] = b[j]
        sub = backend.eye(m + 1, a.dtype, device)[None, :m, 1:] * b[:, None, :]
        T = T + sub + backend.swap_last(sub)
    nodes, vectors = backend.eigh(T)
    first = backend.real(vectors[:, 0, :] * backend.conj(vectors[:, 0, :]))
    return nodes, first * (znorm * znorm)[:, None]
