"""structlin quickstart: solve with a Kronecker product without forming it.

    python examples/quickstart.py           # three 16 x 16 factors, n = 4096
    python examples/quickstart.py --smoke   # three 4 x 4 factors, n = 64 (for tests)

Only NumPy is required. The PyTorch and JAX sections run when those libraries
are installed and are skipped with a note otherwise. The script exits with
status 1 if any result disagrees with plain NumPy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import structlin as sl

TOL = 1e-8  # float64 results must match NumPy to this relative error
failures: list[str] = []


def check(what: str, err: float, tol: float = TOL) -> None:
    """Print a comparison with NumPy and remember it if the error is too large."""
    ok = err <= tol
    print(f"  {what:<44} rel. error {err:.1e}  {'ok' if ok else 'FAILED'}")
    if not ok:
        failures.append(what)


def rel_err(result, reference) -> float:
    result, reference = np.asarray(result), np.asarray(reference)
    return float(np.linalg.norm(result - reference) / np.linalg.norm(reference))


def median_time(fn, repeats: int):
    """Median wall time of `fn()` over `repeats` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def random_factor(rng: np.random.Generator, m: int) -> np.ndarray:
    """A well-conditioned m x m matrix: the identity plus a small random perturbation."""
    return np.eye(m) + 0.1 * rng.standard_normal((m, m)) / np.sqrt(m)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args()

    m = 4 if args.smoke else 16  # size of each factor
    dense_repeats, structured_repeats = (1, 3) if args.smoke else (3, 20)

    rng = np.random.default_rng(0)
    A, B, C = (random_factor(rng, m) for _ in range(3))
    K = sl.Kron(A, B, C)  # K = A ⊗ B ⊗ C, never formed
    n = K.shape[0]
    x = rng.standard_normal(n)

    # -- 1. Solve K y = x: structured vs dense ------------------------------------
    print(f"1. Solve K y = x with K = sl.Kron(A, B, C), three {m} x {m} factors, n = {n}")
    print(f"  K = {K}")

    # K.inv() is the Kron of the three factor inverses; applying it is three small matmuls.
    t_structured, y = median_time(lambda: K.inv() @ x, structured_repeats)

    t_build, dense = median_time(lambda: np.kron(np.kron(A, B), C), dense_repeats)
    t_solve, y_dense = median_time(lambda: np.linalg.solve(dense, x), dense_repeats)

    print(f"  structlin   K.inv() @ x (incl. inverting the factors)  {t_structured * 1e3:9.3f} ms")
    print(f"  numpy       build np.kron(np.kron(A, B), C)            {t_build * 1e3:9.3f} ms")
    print(f"  numpy       np.linalg.solve(dense, x)                  {t_solve * 1e3:9.3f} ms")
    print(
        f"  memory: the dense matrix takes {dense.nbytes / 2**20:.3g} MiB, "
        f"the three factors {3 * A.nbytes / 2**10:.3g} KiB"
    )
    print(f"  (medians of {structured_repeats} structlin / {dense_repeats} numpy runs)")
    check("K.inv() @ x vs numpy.linalg.solve", rel_err(y, y_dense))
    check("sl.solve(K, x) vs numpy.linalg.solve", rel_err(sl.solve(K, x), y_dense))

    # -- 2. A short tour -----------------------------------------------------------
    print("\n2. Transposes, determinants and expressions (all checked against the dense matrix)")

    print(f"  K.T = {K.T}   (the Kron of the transposed factors)")
    check("K.T @ x", rel_err(K.T @ x, dense.T @ x))
    check("x @ K", rel_err(x @ K, x @ dense))

    sign, logabsdet = sl.slogdet(K)  # sum_i (n / n_i) log|det A_i|: no n x n matrix
    sign_np, logabsdet_np = np.linalg.slogdet(dense)
    print(f"  sl.slogdet(K)        = ({sign:+.0f}, {logabsdet:.10f})")
    print(f"  np.linalg.slogdet(.) = ({sign_np:+.0f}, {logabsdet_np:.10f})")
    check("sl.slogdet(K)", rel_err(logabsdet, logabsdet_np) + abs(sign - sign_np))
    check("sl.logdet(K)", rel_err(sl.logdet(K), logabsdet_np))

    KK = K @ K  # (A ⊗ B ⊗ C)(A ⊗ B ⊗ C) = AA ⊗ BB ⊗ CC: still a Kron
    print(f"  K @ K = {KK}")
    check("(K @ K) @ x", rel_err(KK @ x, dense @ (dense @ x)))

    S = 2 * K + sl.Identity(n)  # a lazy Sum of a ScalarMul and the identity
    print(f"  2 * K + sl.Identity(n) = {S}")
    check("(2 * K + I) @ x", rel_err(S @ x, 2 * (dense @ x) + x))

    # -- 3. The same operator on other array libraries -----------------------------
    print("\n3. Other backends: the backend is chosen from the arrays you pass")
    try:
        import torch
    except ImportError:
        print("  PyTorch is not installed: skipping (pip install torch)")
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        Kt = sl.Kron(*(torch.as_tensor(F, device=device) for F in (A, B, C)))
        yt = Kt.inv() @ torch.as_tensor(x, device=device)
        print(f"  torch: Kt = {Kt} on {device}")
        check("torch: Kt.inv() @ x", rel_err(yt.cpu().numpy(), y_dense))

    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        print("  JAX is not installed: skipping (pip install jax)")
    else:
        # float32 unless jax_enable_x64 is set, hence the looser tolerance.
        Kj = sl.Kron(*(jnp.asarray(F) for F in (A, B, C)))
        solve_jit = jax.jit(lambda op, v: op.inv() @ v)  # operators are pytrees
        yj = solve_jit(Kj, jnp.asarray(x))
        print(f"  jax:   Kj = {Kj}")
        tol = TOL if yj.dtype == jnp.float64 else 1e-4
        check(f"jax: jit(op.inv() @ v) ({yj.dtype})", rel_err(yj, y_dense), tol)

        # The gradient of logdet is an operator of the same structure:
        # d logdet(A ⊗ B ⊗ C) / dA = (n / m) A^{-T}.
        grad = jax.grad(sl.logdet)(Kj)  # a Kron, like Kj
        expected = n / m * np.linalg.inv(A).T
        check("jax: grad(sl.logdet)(Kj), factor A", rel_err(grad.factors[0].array, expected), tol)

    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    print("\nAll results match NumPy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
