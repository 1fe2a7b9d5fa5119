"""Gaussian-process regression on a 3-D grid: hyperparameters fitted through sl.solve and sl.logdet.

    python examples/gp_grid.py                  # 32^3 = 32768 points (under 2 minutes on 2 cores)
    python examples/gp_grid.py --plot gp.png    # also save the fit and the timings (matplotlib)
    python examples/gp_grid.py --smoke          # 8^3 points, a few steps (for tests)

Needs PyTorch (autograd), and matplotlib for the plot. On a grid `x = (x_1, x_2, x_3)` with
`d` points per axis, the squared-exponential kernel factorises,
`k(x, x') = s^2 prod_i exp(-(x_i - x'_i)^2 / (2 l^2))`, so its `n x n` matrix (`n = d^3`) is
the Kron of three `d x d` matrices, each annotated `sl.PSD`, and the model's covariance is
`K + sigma^2 I`. structlin solves and takes the log-determinant of that sum exactly through
the factors' eigendecompositions (`K + sigma^2 I = Q diag(w + sigma^2) Q^T`, `Q` a Kron):
`O(d^3)` for the three `eigh` plus `O(n d)` per product with `Q`, never an `n x n` matrix, and
PyTorch differentiates through it. The negative log marginal likelihood

    nll = y^T (K + sigma^2 I)^{-1} y / 2 + log det(K + sigma^2 I) / 2 + n log(2 pi) / 2

is minimised over `(log l, log s^2, log sigma^2)` by L-BFGS.

The data are a smooth random function, a draw of the same Gaussian process (through the
Kron of the factors' square roots), plus noise, so the fitted hyperparameters can be read
against the true ones. The script also

- checks the structured negative log-likelihood and its gradient against the dense
  computation (a dense Cholesky, with PyTorch's autograd) on a small grid (6^3 = 216), and
  the gradient at full size against central differences of the structured value;
- times one evaluation of the likelihood and its gradient, structured and dense, at growing
  `n` (dense measured while it fits in a few seconds, then extrapolated as `n^3`), and
  through CoLA where it is installed (it is skipped otherwise).

It exits with status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

import structlin as sl

TRUE = {"lengthscale": 0.12, "signal": 1.0, "noise": 0.1}  # noise: the standard deviation


def axis(d: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, d)


def rbf(x: Any, lengthscale: Any) -> Any:
    """The 1-D squared-exponential kernel matrix on the points `x` (a PyTorch tensor)."""
    return (-0.5 * ((x[:, None] - x[None, :]) / lengthscale) ** 2).exp()


def sample(d: int, rng: np.random.Generator) -> np.ndarray:
    """`f + noise` with `f` a draw of the Gaussian process on the `d^3` grid: `f = R z`,
    `R` the Kron of the factors' square roots (eigenvalues clipped at zero)."""
    x = axis(d)
    k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / TRUE["lengthscale"]) ** 2)
    w, v = np.linalg.eigh(k)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    scale = math.sqrt(TRUE["signal"])
    R = sl.Kron(scale * root, root, root)
    f = R @ rng.standard_normal(d**3)
    return f + TRUE["noise"] * rng.standard_normal(d**3)


def hyperparameters(params: Any) -> tuple[Any, Any, Any]:
    """`(lengthscale, signal variance, noise variance)` from the unconstrained parameters."""
    return params[0].exp(), params[1].exp(), params[2].exp()


def nll_structured(params: Any, x: Any, y: Any) -> Any:
    """The negative log marginal likelihood through structlin: Kron + sigma^2 I, exact."""
    lengthscale, signal, noise = hyperparameters(params)
    k = rbf(x, lengthscale)
    n = y.shape[0]
    K = sl.Kron(sl.PSD(signal * k), sl.PSD(k), sl.PSD(k))
    S = K + noise * sl.Identity(n)
    alpha = sl.solve(S, y)
    return 0.5 * (y @ alpha) + 0.5 * sl.logdet(S) + 0.5 * n * math.log(2 * math.pi)


def nll_dense(params: Any, x: Any, y: Any) -> Any:
    """The same, from the dense `n x n` matrix and its Cholesky factorisation."""
    import torch

    lengthscale, signal, noise = hyperparameters(params)
    k = rbf(x, lengthscale)
    n = y.shape[0]
    K = signal * torch.kron(torch.kron(k, k), k) + noise * torch.eye(n, dtype=y.dtype)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y[:, None], L)[:, 0]
    logdet = 2 * torch.log(torch.diagonal(L)).sum()
    return 0.5 * (y @ alpha) + 0.5 * logdet + 0.5 * n * math.log(2 * math.pi)


def nll_cola(params: Any, x: Any, y: Any) -> Any:
    """The same through CoLA's operators (its default algorithms), where it is installed."""
    import cola

    lengthscale, signal, noise = hyperparameters(params)
    k = rbf(x, lengthscale)
    n = y.shape[0]
    K = cola.ops.Kronecker(
        cola.PSD(cola.ops.Dense(signal * k)),
        cola.PSD(cola.ops.Dense(k)),
        cola.PSD(cola.ops.Dense(k)),
    )
    # cola.ops.Sum rather than `+`, which is an ambiguous dispatch in CoLA under its plum fork.
    S = cola.PSD(cola.ops.Sum(K, noise * cola.ops.I_like(K)))
    alpha = cola.inv(S) @ y
    return 0.5 * (y @ alpha) + 0.5 * cola.logdet(S) + 0.5 * n * math.log(2 * math.pi)


def value_and_grad(loss: Any, params: Any, x: Any, y: Any) -> tuple[float, np.ndarray]:
    p = params.detach().clone().requires_grad_(True)
    value = loss(p, x, y)
    value.backward()
    return float(value.detach()), p.grad.numpy().copy()


def time_step(loss: Any, params: Any, x: Any, y: Any, repeat: int) -> float:
    """Seconds per evaluation of the loss and its gradient (the best of `repeat`)."""
    value_and_grad(loss, params, x, y)  # warm up (rule resolution, allocations)
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        value_and_grad(loss, params, x, y)
        best = min(best, time.perf_counter() - start)
    return best


def check_against_dense(d: int, failures: list[str]) -> None:
    import torch

    rng = np.random.default_rng(1)
    y = torch.tensor(sample(d, rng))
    x = torch.tensor(axis(d))
    params = torch.tensor([math.log(0.3), math.log(0.8), math.log(0.05)], dtype=torch.float64)
    v_s, g_s = value_and_grad(nll_structured, params, x, y)
    v_d, g_d = value_and_grad(nll_dense, params, x, y)
    err_v = abs(v_s - v_d) / abs(v_d)
    err_g = np.max(np.abs(g_s - g_d)) / np.max(np.abs(g_d))
    print(f"small grid {d}^3 = {d**3}: structured against dense")
    print(f"  nll      {v_s:.10f}  {v_d:.10f}   relative difference {err_v:.1e}")
    print(
        f"  gradient {np.array2string(g_s, precision=6)}  {np.array2string(g_d, precision=6)}"
        f"   relative difference {err_g:.1e}"
    )
    if not (err_v < 1e-10 and err_g < 1e-8):
        failures.append(f"small grid: value {err_v:.1e}, gradient {err_g:.1e}")


def check_gradient_by_differences(params: Any, x: Any, y: Any, failures: list[str]) -> None:
    import torch

    _, grad = value_and_grad(nll_structured, params, x, y)
    h = 1e-5
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=params.dtype)
        e[i] = h
        with torch.no_grad():
            up = float(nll_structured(params + e, x, y))
            down = float(nll_structured(params - e, x, y))
        fd.append((up - down) / (2 * h))
    fd = np.array(fd)
    err = np.max(np.abs(grad - fd)) / np.max(np.abs(fd))
    print(
        f"\nat the starting point, n = {y.shape[0]}: gradient by autograd "
        f"{np.array2string(grad, precision=4)}, by central "
        f"differences {np.array2string(fd, precision=4)}, relative difference {err:.1e}"
    )
    if err > 1e-4:
        failures.append(f"full-size gradient against differences: {err:.1e}")


def fit(d: int, steps: int, failures: list[str]) -> dict[str, Any]:
    import torch

    rng = np.random.default_rng(0)
    y = torch.tensor(sample(d, rng))
    x = torch.tensor(axis(d))
    start = torch.tensor([math.log(0.3), math.log(0.5), math.log(0.5)], dtype=torch.float64)
    check_gradient_by_differences(start, x, y, failures)  # where the gradient is not small
    params = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-7
    )
    history: list[float] = []
    evaluations = [0]

    def closure() -> Any:
        optimiser.zero_grad()
        loss = nll_structured(params, x, y)
        loss.backward()
        history.append(float(loss.detach()) / y.shape[0])
        evaluations[0] += 1
        return loss

    began = time.perf_counter()
    optimiser.step(closure)
    elapsed = time.perf_counter() - began
    lengthscale, signal, noise = (float(v) for v in hyperparameters(params.detach()))
    fitted = {"lengthscale": lengthscale, "signal": signal, "noise": math.sqrt(noise)}
    print(
        f"\nfit on {d}^3 = {d**3} points: {evaluations[0]} evaluations of the likelihood and "
        f"its gradient in {elapsed:.2f} s ({1e3 * elapsed / evaluations[0]:.1f} ms each)"
    )
    print(f"  {'':12s} {'true':>8s} {'fitted':>8s}")
    for name in TRUE:
        print(f"  {name:12s} {TRUE[name]:8.4f} {fitted[name]:8.4f}")
    print(f"  nll / n from {history[0]:.4f} to {history[-1]:.4f}")
    if d >= 16:  # enough data to pin the hyperparameters down
        for name in TRUE:
            if abs(fitted[name] - TRUE[name]) > 0.2 * TRUE[name]:
                failures.append(f"fitted {name} {fitted[name]:.4f}, true {TRUE[name]}")
    return {"history": history, "fitted": fitted, "x": x, "y": y, "params": params.detach()}


def timings(sizes: list[int], dense_budget: float, repeat: int) -> dict[str, dict[int, float]]:
    import torch

    try:
        import cola  # noqa: F401

        have_cola = True
    except ImportError:
        have_cola = False
    params = torch.tensor([math.log(0.12), 0.0, math.log(0.01)], dtype=torch.float64)
    out: dict[str, dict[int, float]] = {"structured": {}, "dense": {}, "dense (extrapolated)": {}}
    if have_cola:
        out["CoLA"] = {}
    rng = np.random.default_rng(2)
    print(
        "\nseconds per evaluation of the likelihood and its gradient (best of "
        f"{repeat}; {torch.get_num_threads()} PyTorch thread(s))"
    )
    print(
        f"  {'n':>7s} {'structured':>12s} {'dense':>12s} {'ratio':>8s}"
        + ("  CoLA" if have_cola else "")
    )
    dense_fits = True
    last = None
    for d in sizes:
        n = d**3
        x = torch.tensor(axis(d))
        y = torch.tensor(rng.standard_normal(n))
        out["structured"][n] = time_step(nll_structured, params, x, y, repeat)
        dense = None
        if dense_fits:
            dense = time_step(nll_dense, params, x, y, 1 if n > 2000 else repeat)
            out["dense"][n] = dense
            last = (n, dense)
            dense_fits = dense < dense_budget
        elif last is not None:
            dense = last[1] * (n / last[0]) ** 3
            out["dense (extrapolated)"][n] = dense
        cola_time = ""
        if have_cola:
            try:
                out["CoLA"][n] = time_step(nll_cola, params, x, y, 1)
                cola_time = f"  {out['CoLA'][n]:.4f}"
            except Exception as e:  # CoLA's API moves; say so rather than fail
                cola_time = f"  failed: {type(e).__name__}"
        mark = "" if n in out["dense"] else " (extrapolated as n^3)"
        ratio = f"{dense / out['structured'][n]:8.3g}" if dense else ""
        dense_s = f"{dense:12.4f}" if dense else f"{'':12s}"
        print(f"  {n:7d} {out['structured'][n]:12.5f} {dense_s} {ratio}{cola_time}{mark}")
    if not have_cola:
        print("  CoLA is not installed: its timing is skipped")
    return out


def plot(path: str, result: dict[str, Any], times: dict[str, dict[int, float]], d: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4.2))
    y = result["y"].numpy().reshape(d, d, d)[:, :, d // 2]
    ax0.imshow(y.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    ax0.set_title(f"data: a slice of the {d}^3 grid")
    ax1.plot(result["history"], marker=".")
    ax1.set_xlabel("evaluation (L-BFGS)")
    ax1.set_ylabel("negative log marginal likelihood / n")
    ax1.set_title("fit: " + ", ".join(f"{k} {v:.3f}" for k, v in result["fitted"].items()))
    for name, series in times.items():
        if series:
            ns = sorted(series)
            style = "--" if "extrapolated" in name else "-"
            ax2.loglog(ns, [series[n] for n in ns], style, marker="o", label=name)
    ax2.set_xlabel("n (grid points)")
    ax2.set_ylabel("seconds per likelihood + gradient")
    ax2.legend()
    ax2.set_title("time per optimisation step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot saved to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="8^3 points, a few steps (for tests)")
    parser.add_argument("--grid", type=int, default=None, help="points per axis (default 32)")
    parser.add_argument("--plot", metavar="PNG", help="save the data, the fit and the timings")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("this example needs PyTorch")
        return 0
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    d = args.grid or (8 if args.smoke else 32)
    failures: list[str] = []
    check_against_dense(4 if args.smoke else 6, failures)
    result = fit(d, 10 if args.smoke else 60, failures)
    sizes = [4, 6, 8] if args.smoke else [6, 8, 12, 16, 20, 24, 32]
    times = timings(sizes, dense_budget=0.5 if args.smoke else 8.0, repeat=2 if args.smoke else 3)
    if args.plot:
        plot(args.plot, result, times, d)
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
