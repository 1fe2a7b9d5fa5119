"""Loss against training compute for dense, Monarch, BTT and low-rank MLPs across widths: the
compute-optimal frontier of each structure and its slope.

    python examples/scaling.py              # ~9 min on 2 CPU cores
    python examples/scaling.py --quick      # two widths fewer, 500 steps (~1 min)
    python examples/scaling.py --smoke      # tiny (for tests)

Needs PyTorch, and matplotlib for the plot. The task and the model are those of
`mup_transfer.py` (next character from the previous 8, on the Python standard library's
source; an embedding, residual MLP blocks whose `4d x d` and `d x 4d` layers are
structured, a readout), trained with structlin's μP (`param_groups(model, lr,
base_fan_in=64)`, zero readout) at one learning rate for every structure and width: the
rate tuned for the dense model at width 64 (`--lr`; `mup_transfer.py` finds it), which
μP transfers. The structured models go to larger widths than the dense one (`WIDTHS`),
so that every structure's runs span about the same training compute.

Every model trains on the same batches for `--steps` Adam steps at a constant rate and
is scored on 2048 held-out positions at log-spaced steps. Its training compute at a
step is `3 x` the forward FLOPs of one example (counted by running the model under
`torch.utils.flop_counter`, so they are the structure's own, embedding and readout
included) times the examples seen; wall time is measured too (one thread per process).
A structure's compute-optimal frontier is the lowest loss any of its widths reaches
with at most that much compute; its slope is the exponent `b` of a least-squares fit
`loss ∝ compute^b` over the frontier's points. The script prints each run, the slopes,
which structure is best at each compute, and saves the frontier plot (FLOPs and wall
time) and the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from mup_transfer import _DATA, CharMLP, _init_worker, evaluate, optimizer_for, windows
from torch.utils.flop_counter import FlopCounterMode

STRUCTURES = ("dense", "monarch", "btt", "lowrank")
# The widths of each structure. A structure costs less per width than dense (Monarch with 4
# blocks a quarter, BTT and low rank about d^1.5), so the structured models go wider: their
# largest runs reach about the training compute of the largest dense one, and the frontiers
# overlap instead of the structured ones stopping early.
WIDTHS = {
    "dense": (64, 128, 256, 512),
    "monarch": (64, 128, 256, 512, 1024),
    "btt": (64, 128, 256, 512, 1024, 2048),
    "lowrank": (64, 128, 256, 512, 1024, 2048),
}


@dataclass(frozen=True)
class Task:
    structure: str
    width: int
    lr: float
    steps: int
    batch: int
    blocks: int
    evals: int


@dataclass(frozen=True)
class Run:
    structure: str
    width: int
    params: int  # of the structured (or dense) MLP layers
    flops_per_example: int  # forward, whole model
    steps: list[int]
    flops: list[float]  # training FLOPs at each evaluated step
    seconds: list[float]  # training wall time at each evaluated step
    val_loss: list[float]


def cost(task: Task) -> int:
    """A run's forward FLOPs per example, to order the runs by how long they take."""
    return forward_flops(CharMLP(task.width, task.structure, "mup", task.blocks))


def forward_flops(model: torch.nn.Module) -> int:
    """FLOPs of one example's forward pass, counted by PyTorch."""
    x = torch.zeros(1, 8, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def run(task: Task) -> Run:
    train, val = _DATA["train"], _DATA["val"]
    torch.manual_seed(0)
    model = CharMLP(task.width, task.structure, "mup", task.blocks)
    opt = optimizer_for(model, task.structure, "mup", task.lr)
    mlp_params = sum(
        p.numel() for block in model.blocks for layer in block[1:] for p in layer.parameters()
    )
    per_example = forward_flops(model)
    checkpoints = sorted(
        {round(float(s)) for s in np.geomspace(max(1, task.steps / 64), task.steps, task.evals)}
    )
    batches = torch.Generator().manual_seed(1000)
    steps, flops, seconds, losses = [], [], [], []
    elapsed = 0.0
    for step in range(1, task.steps + 1):
        start = time.perf_counter()
        starts = torch.randint(0, len(train) - 9, (task.batch,), generator=batches)
        x, y = windows(train, starts)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - start
        if step in checkpoints:
            steps.append(step)
            flops.append(3.0 * per_example * task.batch * step)
            seconds.append(elapsed)
            losses.append(evaluate(model, val, n=2048) if torch.isfinite(loss) else math.inf)
    return Run(task.structure, task.width, mlp_params, per_example, steps, flops, seconds, losses)


def frontier(runs: list[Run], axis: str = "flops") -> tuple[np.ndarray, np.ndarray]:
    """The points no other point of these runs beats: (compute, loss) with every point of
    less compute having a higher loss."""
    points = sorted(
        (c, loss)
        for r in runs
        for c, loss in zip(getattr(r, axis), r.val_loss, strict=True)
        if math.isfinite(loss)
    )
    kept, best = [], math.inf
    for c, loss in points:
        if loss < best:
            kept.append((c, loss))
            best = loss
    return np.array([c for c, _ in kept]), np.array([loss for _, loss in kept])


def slope(compute: np.ndarray, loss: np.ndarray) -> float:
    """`b` of the least-squares fit `loss ∝ compute^b` in log-log."""
    return float(np.polyfit(np.log(compute), np.log(loss), 1)[0]) if len(loss) >= 2 else math.nan


def best_at(
    frontiers: dict[str, tuple[np.ndarray, np.ndarray]], budget: float
) -> tuple[str, float]:
    """The structure with the lowest loss reachable with at most `budget` compute."""
    reach = {}
    for name, (c, loss) in frontiers.items():
        within = loss[c <= budget]
        reach[name] = float(within.min()) if len(within) else math.inf
    name = min(reach, key=reach.get)
    return name, reach[name]


def plot(runs: list[Run], structures: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = dict(zip(structures, plt.cm.tab10(np.arange(len(structures))), strict=True))
    for ax, axis, label in [
        (axes[0], "flops", "training FLOPs"),
        (axes[1], "seconds", "training time (s, one CPU thread)"),
    ]:
        for s in structures:
            mine = [r for r in runs if r.structure == s]
            for r in mine:
                ax.plot(getattr(r, axis), r.val_loss, "-", lw=0.7, alpha=0.35, color=colors[s])
            c, loss = frontier(mine, axis)
            ax.plot(
                c,
                loss,
                "o-",
                ms=3,
                lw=2,
                color=colors[s],
                label=f"{s} (slope {slope(c, loss):.3f})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("validation loss (nats / char)")
    fig.suptitle("compute-optimal frontiers (thin: each width's training curve)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="two widths fewer, 500 steps")
    mode.add_argument("--smoke", action="store_true", help="tiny (for tests)")
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    parser.add_argument(
        "--widths", help="the same widths for every structure (default: WIDTHS, per structure)"
    )
    parser.add_argument("--steps", type=int, help="default 2000 (--quick: 500)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument(
        "--lr", type=float, default=2.0**-6, help="μP learning rate at width 64 (default 2^-6)"
    )
    parser.add_argument("--evals", type=int, default=10, help="evaluations per run")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--plot", metavar="PNG", default="scaling.png")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = parser.parse_args(argv)

    widths, steps = dict(WIDTHS), 2000
    if args.quick:
        widths, steps = {s: w[:-2] for s, w in WIDTHS.items()}, 500
    if args.smoke:
        args.structures, args.widths, steps = "dense,monarch", "16,32", 4
        args.batch, args.blocks, args.evals, args.workers = 8, 1, 2, 1
        args.plot = os.path.join(tempfile.mkdtemp(), "scaling.png")
    structures = args.structures.split(",")
    for name in structures:
        if name not in STRUCTURES:
            parser.error(f"unknown structure {name!r}; choose from {', '.join(STRUCTURES)}")
    if args.widths:
        widths = {s: tuple(sorted(int(w) for w in args.widths.split(","))) for s in structures}
    steps = args.steps or steps
    tasks = [
        Task(s, w, args.lr, steps, args.batch, args.blocks, args.evals)
        for s in structures
        for w in widths[s]
    ]
    tasks.sort(key=lambda t: -cost(t))  # the slowest first, so that the workers end together
    text_chars = 200_000 if args.smoke else 2_000_000
    print(
        f"{len(tasks)} runs: "
        + ", ".join(f"{s} at widths {list(widths[s])}" for s in structures)
        + f"; {steps} Adam steps of "
        f"batch {args.batch} at lr {args.lr:.3g} (μP, base width 64), {args.workers} processes"
    )
    start = time.perf_counter()
    if args.workers <= 1:
        _init_worker(text_chars, 1)
        runs = [run(t) for t in tasks]
    else:
        with ProcessPoolExecutor(
            args.workers, initializer=_init_worker, initargs=(text_chars, 1)
        ) as pool:
            runs = list(pool.map(run, tasks))
    elapsed = time.perf_counter() - start
    runs.sort(key=lambda r: (structures.index(r.structure), r.width))
    print(f"{len(runs)} runs in {elapsed:.0f} s\n")
    print(
        f"{'structure':<9} {'width':>6} {'MLP params':>11} {'fwd FLOPs/ex':>13} {'train FLOPs':>12} {'seconds':>8} {'val loss':>9}"
    )
    for r in runs:
        print(
            f"{r.structure:<9} {r.width:>6} {r.params:>11,} {r.flops_per_example:>13,} "
            f"{r.flops[-1]:>12.3g} {r.seconds[-1]:>8.1f} {r.val_loss[-1]:>9.3f}"
        )
    slopes = {}
    print("\ncompute-optimal frontier: loss ∝ compute^b")
    for axis in ("flops", "seconds"):
        for s in structures:
            c, loss = frontier([r for r in runs if r.structure == s], axis)
            slopes[s, axis] = slope(c, loss)
        print(
            f"  b against {axis:<8}" + "".join(f"  {s} {slopes[s, axis]:.3f}" for s in structures)
        )
    print("\nbest structure at each compute budget (training FLOPs):")
    frontiers = {s: frontier([r for r in runs if r.structure == s]) for s in structures}
    low = min(c.min() for c, _ in frontiers.values())
    high = max(c.max() for c, _ in frontiers.values())
    budgets = np.geomspace(low * 4, high, 6)
    for budget in budgets:
        name, loss = best_at(frontiers, budget)
        print(f"  <= {budget:9.3g} FLOPs: {name:<8} ({loss:.3f})")
    plot(runs, structures, args.plot)
    print(f"\nplot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot")}
                    | {"widths": {s: list(widths[s]) for s in structures}, "steps": steps},
                    "seconds": elapsed,
                    "slopes": {f"{s}/{axis}": b for (s, axis), b in slopes.items()},
                    "best_at": [
                        {
                            "flops": float(b),
                            "structure": best_at(frontiers, b)[0],
                            "loss": best_at(frontiers, b)[1],
                        }
                        for b in budgets
                    ],
                    "runs": [asdict(r) for r in runs],
                },
                f,
                indent=1,
            )
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
