"""Project dense matrices onto structures with the same parameter budget and compare the errors.

    python examples/projection_errors.py           # d = 1024
    python examples/projection_errors.py --smoke   # d = 64 (for tests)
    python examples/projection_errors.py --plot errors.png   # also save a bar chart (matplotlib)

For a d x d matrix and a budget of 2 d^2 / b parameters (b = 4 here), each
structure gets the sizes that spend that budget:

- Monarch with b blocks per factor (2 d^2 / b parameters);
- BTT with 2 cores of sqrt(d) x sqrt(d) and rank sqrt(d) / b (2 r d^1.5);
- low rank d / b (2 d r);
- TT with 2 cores and rank d / b (2 r d; it shares parameters across blocks);
- block-diagonal with b / 2 blocks (d^2 / (b / 2)).
Kronecker (2 d parameters, a much smaller budget) is shown for reference.

Every projection is the Frobenius-optimal one except TT-SVD, which is within sqrt(c - 1)
of optimal (exact for c = 2 cores, as here). The relative error ||W - A||_F / ||W||_F
is printed for three matrices: a dense Gaussian one (no structure, so every method
keeps about its share of the energy), a sparse one (5% nonzeros: block-sparse
structures beat low rank, as the Monarch paper observes) and a smooth kernel
matrix (numerically low rank: every structure with a rank parameter reproduces it to
round-off; block-diagonal and Kronecker cannot). The script exits with status 1 if
an error is not in [0, 1] or the optimal structures fail to reproduce a matrix of
their own class.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import structlin as sl


def specs(d: int, b: int) -> dict[str, tuple[type, dict]]:
    root = math.isqrt(d)
    return {
        f"Monarch ({b} blocks)": (sl.Monarch, {"nblocks": b}),
        f"BTT (rank {root // b})": (
            sl.BTT,
            {"ms": (root, root), "ns": (root, root), "ranks": root // b},
        ),
        f"low rank ({d // b})": (sl.LowRank, {"rank": d // b}),
        f"TT (rank {d // b})": (sl.TT, {"ms": (root, root), "ns": (root, root), "ranks": d // b}),
        f"block-diagonal ({b // 2} blocks)": (sl.BlockDiag, {"nblocks": b // 2}),
        "Kronecker (2d params)": (sl.Kron, {"factor_shapes": ((root, root), (root, root))}),
    }


def matrices(d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dense = rng.standard_normal((d, d))
    sparse = dense * (rng.uniform(size=(d, d)) < 0.05)
    grid = np.linspace(0, 1, d)
    kernel = np.exp(-((grid[:, None] - grid[None, :]) ** 2) / 0.02)
    return {"dense Gaussian": dense, "sparse (5%)": sparse, "smooth kernel": kernel}


def parameters(A: sl.LinearOperator) -> int:
    return sum(int(np.size(leaf)) for leaf in sl.pytree.tree_flatten(A)[0])


def plot(table: dict[str, list[float]], matrices: list[str], d: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(table)
    for i, (label, errors) in enumerate(table.items()):
        ax.bar(np.arange(len(matrices)) + i * width, errors, width, label=label)
    ax.set_xticks(np.arange(len(matrices)) + 0.4 - width / 2, matrices)
    ax.set_ylabel("relative Frobenius error")
    ax.set_title(f"Projection of a {d} x {d} matrix, equal parameter budget")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="d = 64, for the tests")
    parser.add_argument(
        "--plot", metavar="PNG", help="save a bar chart of the errors (needs matplotlib)"
    )
    args = parser.parse_args()
    d, b = (64, 4) if args.smoke else (1024, 4)
    rng = np.random.default_rng(0)
    failures = []

    table: dict[str, list[float]] = {}
    structures = specs(d, b)
    Ws = matrices(d, rng)
    print(
        f"d = {d}: relative Frobenius error of the projection, budget {2 * d * d // b} parameters\n"
    )
    header = (
        f"{'structure':<30}{'params':>9}" + "".join(f"{name:>17}" for name in Ws) + f"{'time':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, (structure, spec) in structures.items():
        errors = []
        start = time.perf_counter()
        for W in Ws.values():
            A = sl.project(W, structure, **spec)
            errors.append(np.linalg.norm(W - A.to_dense()) / np.linalg.norm(W))
        elapsed = (time.perf_counter() - start) / len(Ws)
        table[label] = errors
        print(
            f"{label:<30}{parameters(A):>9}"
            + "".join(f"{e:>17.3f}" for e in errors)
            + f"{elapsed * 1e3:>7.0f}ms"
        )
        if not all(0 <= e <= 1 + 1e-12 for e in errors):
            failures.append(f"{label}: error outside [0, 1]")

    if args.plot:
        plot(table, list(Ws), d, args.plot)

    # Sanity: projecting a member of the class gives it back.
    M = sl.Monarch.random(d, d, b, rng=1)
    if (
        np.linalg.norm(sl.project(M.to_dense(), sl.Monarch, nblocks=b).to_dense() - M.to_dense())
        > 1e-8
    ):
        failures.append("Monarch projection does not reproduce a Monarch matrix")
    root = math.isqrt(d)
    B = sl.BTT.random((root, root), (root, root), 2, rng=2)
    exact = sl.project(B.to_dense(), sl.BTT, ms=(root, root), ns=(root, root), ranks=2)
    if np.linalg.norm(exact.to_dense() - B.to_dense()) > 1e-8 * np.linalg.norm(B.to_dense()):
        failures.append("BTT projection does not reproduce a BTT matrix")

    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
