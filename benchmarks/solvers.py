"""Solvers: shifted-Kron solve and log-determinant, Krylov solvers on Kron + Diagonal, SLQ.

Three symmetric positive definite factors `A_i = G G^T / m + I/2` (`m x m`, `n = m^3`),
PyTorch, float64, one right-hand side.

- `solve` and `logdet` of `K + 0.1 I`, `K = Kron(PSD(A_1), PSD(A_2), PSD(A_3))`: structlin's
  exact path through the factors' eigendecompositions (`sl.solve`, `sl.logdet`, each call
  redoing the three `eigh`) against the dense LU (`torch.linalg.solve`, `slogdet`; the
  matrix is built outside the timing) where it fits (n = 4096; at n = 32768 it would take
  8 GiB and ~2e13 flops), and CoLA's `inv`/`logdet` of the same Kronecker plus identity where
  `cola-ml` is installed (up to n = 4096: at 32768 CoLA did not finish in 12 minutes).
- `K + D` (`D` diagonal, uniform in [0.5, 2]), which has no closed form: `sl.cg` to 1e-8
  (plain and Jacobi-preconditioned; iterations in the table) against the dense Cholesky
  solve; `sl.minres` on `Kron(S, A_2, A_3) + D/20` with `S` symmetric indefinite (eigenvalues
  `+-[1, 2]`) and `sl.gmres` (restart 20) on
  `Kron(B_1, B_2, B_3) + D` with non-symmetric `B_i = A_i + N/(4 sqrt(m))`. Every answer is
  checked against the dense solve where it fits.
- `logdet(K + D)` by `sl.SLQ` (30 Lanczos steps, 10/30/100 probes): time, and the error
  against the dense value in the table.

On a CPU, PyTorch runs on one thread here, as in `dispatch`: on a shared machine, worker
threads waiting for each other made the iterative solvers' many small products up to 100
times slower; the dense factorisations lose up to 2x against two threads, so the ratios to
dense are those of one core. The recorded run (2026-12-03) shared the machine with a test run
that kept both cores busy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import harness
import torch

import structlin as sl

NAME = "solvers"
DESCRIPTION = __doc__
PLOT = ("n", ["op"])
DENSE_LIMIT = 4096  # the largest n solved densely here (the matrix is 128 MiB)
# The largest n at which CoLA's inv and logdet of the shifted Kron are timed: at n = 32768
# its default algorithm ran 12 minutes at 5 GB of memory without finishing (2026-12-03).
COLA_SHIFTED_LIMIT = 4096


def _cola():
    try:
        import cola
    except ImportError:
        return None
    return cola


def factors(m: int, gen: torch.Generator) -> list[torch.Tensor]:
    out = []
    for _ in range(3):
        g = torch.randn(m, m, generator=gen, dtype=torch.float64)
        out.append(g @ g.T / m + 0.5 * torch.eye(m, dtype=torch.float64))
    return out


def _check(x: torch.Tensor, expected: torch.Tensor | None, tol: float, what: str) -> None:
    if expected is not None:
        err = float(torch.linalg.norm(x - expected) / torch.linalg.norm(expected))
        assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


@contextlib.contextmanager
def _one_torch_thread(device: str) -> Iterator[None]:
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run(settings: harness.Settings) -> list[harness.Record]:
    with _one_torch_thread(settings.device):
        return _run(settings)


def _run(settings: harness.Settings) -> list[harness.Record]:
    sizes = [4, 8] if settings.quick else [16, 32]
    rows: list[harness.Record] = []
    cola = _cola()
    slow = settings if settings.quick else harness.Settings(rounds=5, device=settings.device)
    for m in sizes:
        n = m**3
        gen = torch.Generator().manual_seed(0)
        fs = [f.to(settings.device) for f in factors(m, gen)]
        d = (0.5 + 1.5 * torch.rand(n, generator=gen, dtype=torch.float64)).to(settings.device)
        x = torch.randn(n, generator=gen, dtype=torch.float64).to(settings.device)
        K = sl.Kron(*(sl.PSD(f) for f in fs))
        S = K + 0.1 * sl.Identity(n)
        dense = n <= DENSE_LIMIT
        Sd = K.to_dense() + 0.1 * torch.eye(n, dtype=torch.float64) if dense else None
        base = "dense" if dense else None

        # -- the exact shifted path ----------------------------------------------------------
        expected = torch.linalg.solve(Sd, x) if dense else None
        _check(sl.solve(S, x), expected, 1e-10, "shifted solve")
        solves: dict[str, Callable[[], object]] = {"structlin": lambda S=S, x=x: sl.solve(S, x)}
        logdets: dict[str, Callable[[], object]] = {"structlin": lambda S=S: sl.logdet(S)}
        if dense:
            solves["dense"] = lambda Sd=Sd, x=x: torch.linalg.solve(Sd, x)
            logdets["dense"] = lambda Sd=Sd: torch.linalg.slogdet(Sd)
            exact = torch.linalg.slogdet(Sd)[1]
            assert abs(float(sl.logdet(S) - exact)) <= 1e-10 * abs(float(exact))
        if cola is not None and n <= COLA_SHIFTED_LIMIT:
            C = cola.ops.Kronecker(*(cola.PSD(cola.ops.Dense(f)) for f in fs))
            # cola.ops.Sum rather than `+`: under cola-plum-dispatch, `+` of a Kronecker
            # and a scaled identity is an ambiguous dispatch in CoLA itself.
            Cs = cola.PSD(cola.ops.Sum(C, 0.1 * cola.ops.I_like(C)))
            solves["cola"] = lambda Cs=Cs, x=x: cola.inv(Cs) @ x
            logdets["cola"] = lambda Cs=Cs: cola.logdet(Cs)
        for op, contenders in (("shifted solve", solves), ("shifted logdet", logdets)):
            timings = harness.compare(contenders, slow, baseline=base)
            rows += harness.records(NAME, {"n": n, "op": op}, timings)
            summary = ", ".join(f"{k} {v[0] * 1e3:.3g} ms" for k, v in timings.items())
            print(f"   n={n} {op}: {summary}", flush=True)

        # -- Krylov solvers on Kron + Diagonal ------------------------------------------------
        A = K + sl.PSD(sl.Diagonal(d))
        Ad = Sd - 0.1 * torch.eye(n, dtype=torch.float64) + torch.diag(d) if dense else None
        L = torch.linalg.cholesky(Ad) if dense else None
        expected = torch.cholesky_solve(x[:, None], L)[:, 0] if dense else None
        extra: dict[str, dict[str, object]] = {}
        contenders: dict[str, Callable[[], object]] = {}
        for name, pre in (("cg", None), ("cg jacobi", "jacobi")):
            X, info = sl.cg(A, x, tol=1e-8, preconditioner=pre)
            assert bool(info.converged.all()), name
            _check(X, expected, 1e-6, name)
            extra[name] = {"iterations": int(info.iterations)}
            contenders[name] = lambda A=A, x=x, pre=pre: sl.cg(A, x, tol=1e-8, preconditioner=pre)
        if dense:
            contenders["dense"] = lambda Ad=Ad, x=x: torch.cholesky_solve(
                x[:, None], torch.linalg.cholesky(Ad)
            )
        if cola is not None:
            CA = cola.PSD(
                cola.ops.Sum(
                    cola.ops.Kronecker(*(cola.PSD(cola.ops.Dense(f)) for f in fs)),
                    cola.ops.Diagonal(d),
                )
            )
            alg = cola.linalg.CG(tol=1e-8, max_iters=10 * n)
            contenders["cola cg"] = lambda CA=CA, x=x, alg=alg: cola.inv(CA, alg=alg) @ x
        timings = harness.compare(contenders, slow, baseline=base)
        rows += harness.records(NAME, {"n": n, "op": "Kron + Diagonal (PSD)"}, timings, extra)
        print(
            f"   n={n} CG: "
            + ", ".join(f"{k} {v[0] * 1e3:.3g} ms {extra.get(k, {})}" for k, v in timings.items()),
            flush=True,
        )

        # Symmetric indefinite: the first factor's eigenvalues are +-[1, 2], so the Kron's are
        # at least 0.25 in modulus, and D / 20 (at most 0.1) keeps the sum away from singular.
        q = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))[0]
        signs = torch.where(torch.arange(m) % 2 == 0, 1.0, -1.0).to(torch.float64)
        w = signs * torch.linspace(1.0, 2.0, m, dtype=torch.float64)
        S1 = ((q * w) @ q.T).to(settings.device)
        Ai = sl.Kron(sl.Symmetric(S1), sl.PSD(fs[1]), sl.PSD(fs[2])) + 0.05 * sl.Symmetric(
            sl.Diagonal(d)
        )
        X, info = sl.minres(Ai, x, tol=1e-8)
        Aid = Ai.to_dense() if dense else None
        _check(X, torch.linalg.solve(Aid, x) if dense else None, 1e-5, "minres")
        extra = {
            "minres": {"iterations": int(info.iterations), "converged": bool(info.converged.all())}
        }
        contenders = {"minres": lambda Ai=Ai, x=x: sl.minres(Ai, x, tol=1e-8)}
        if dense:
            contenders["dense"] = lambda Aid=Aid, x=x: torch.linalg.solve(Aid, x)
        timings = harness.compare(contenders, slow, baseline=base)
        rows += harness.records(
            NAME, {"n": n, "op": "Kron + Diagonal (indefinite)"}, timings, extra
        )
        print(
            f"   n={n} MINRES: {extra['minres']}, {timings['minres'][0] * 1e3:.3g} ms", flush=True
        )

        noise = [torch.randn(m, m, generator=gen, dtype=torch.float64) / (4 * m**0.5) for _ in fs]
        Bs = [f + e for f, e in zip(fs, noise, strict=True)]
        An = sl.Kron(*Bs) + sl.Diagonal(d)
        X, info = sl.gmres(An, x, tol=1e-8, restart=20)
        And = An.to_dense() if dense else None
        _check(X, torch.linalg.solve(And, x) if dense else None, 1e-6, "gmres")
        extra = {
            "gmres": {"iterations": int(info.iterations), "converged": bool(info.converged.all())}
        }
        contenders = {"gmres": lambda An=An, x=x: sl.gmres(An, x, tol=1e-8, restart=20)}
        if dense:
            contenders["dense"] = lambda And=And, x=x: torch.linalg.solve(And, x)
        timings = harness.compare(contenders, slow, baseline=base)
        rows += harness.records(
            NAME, {"n": n, "op": "Kron + Diagonal (non-symmetric)"}, timings, extra
        )
        print(f"   n={n} GMRES: {extra['gmres']}, {timings['gmres'][0] * 1e3:.3g} ms", flush=True)

        # -- SLQ: log det(K + D) -----------------------------------------------------------------
        exact = float(2 * torch.log(torch.diagonal(L)).sum()) if dense else None
        contenders, extra = {}, {}
        for samples in (10, 30, 100):
            alg = sl.SLQ(samples=samples, steps=30)
            name = f"slq s={samples}"
            estimate = float(sl.logdet(A, alg=alg))
            extra[name] = {"estimate": round(estimate, 3)}
            if exact is not None:
                extra[name]["relative error"] = f"{abs(estimate - exact) / abs(exact):.1e}"
            contenders[name] = lambda A=A, alg=alg: sl.logdet(A, alg=alg)
        if dense:
            contenders["dense"] = lambda Ad=Ad: torch.linalg.cholesky(Ad).diagonal().log().sum()
        timings = harness.compare(contenders, slow, baseline=base)
        rows += harness.records(NAME, {"n": n, "op": "logdet(Kron + Diagonal)"}, timings, extra)
        print(f"   n={n} SLQ: {extra}", flush=True)
    return rows
