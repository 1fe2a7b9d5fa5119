"""Does the learning rate tuned on a narrow model stay optimal as it gets wider? μP against the
standard parametrisation, for dense, Monarch, BTT, low-rank and Kronecker MLPs.

    python examples/mup_transfer.py                 # ~5 min on 2 CPU cores
    python examples/mup_transfer.py --structures monarch,btt --widths 64,256,1024
    python examples/mup_transfer.py --smoke         # two tiny widths, two rates (for tests)

Needs PyTorch, and matplotlib for the plot. The task is next-character prediction on
the Python standard library's own source (as in `train_char_lm.py`; nothing is
downloaded): from the previous 8 characters, the next one.

The model is the MLP of "Compute Better Spent" (Appendix E.1), at width `d`: an input
embedding (each of the 8 positions has its own table; their sum is scaled by
`1/sqrt(8)`), residual blocks `h + W2 gelu(W1 LN(h))` with `W1` of shape `4d x d` and
`W2` of shape `d x 4d` (the structured layers), a final LayerNorm and a readout to the
96 characters. It is trained two ways at every width and learning rate:

- **μP** (structlin's): `structlin.nn.param_groups(model, lr, base_fan_in=64)`, i.e.
  structure-aware multipliers `κ_i` times μP's width factor of every parameter (the
  weights of every layer, readout included, `64 / d_in`; the embedding, the biases and
  the norms 1); the readout and the last component of every `W2` start at zero.
- **SP**, the standard parametrisation: one learning rate for every parameter,
  PyTorch's default initialisation of the readout and of dense layers, nothing zeroed.

Each run is `--steps` steps of Adam at batch 64, on the same batches for every run,
scored by the loss on 4096 held-out positions. The learning rates are powers of 2. The
script prints, per structure and parametrisation, the validation loss of every (width,
learning rate), the best learning rate per width and how far it moves from the
narrowest to the widest model, saves a plot per structure (loss against learning
rate, one line per width) and the numbers as JSON.
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
from torch import nn
from train_char_lm import VOCAB, encode, load_text

import structlin.nn as snn

CONTEXT = 8  # characters of context
BASE_WIDTH = 64  # the width the learning rate is tuned at
STRUCTURES = ("dense", "monarch", "btt", "lowrank", "kron")
PARAMETRIZATIONS = ("mup", "sp")


def structure_options(structure: str, d_in: int, d_out: int) -> dict:
    """The options of each structure, as "Compute Better Spent" sets them for MLPs."""
    if structure == "monarch":
        return {"nblocks": 4}
    if structure == "btt":
        return {"rank": 1}  # two cores, rank 1: Monarch with sqrt(d) blocks
    if structure == "lowrank":
        return {"rank": max(1, round(math.sqrt(min(d_in, d_out))))}
    return {}


# -- the model --------------------------------------------------------------------------
class CharMLP(nn.Module):
    """Embedding of `CONTEXT` characters -> residual MLP blocks -> LayerNorm -> readout."""

    def __init__(self, d: int, structure: str, parametrization: str, blocks: int = 2):
        super().__init__()
        mup = parametrization == "mup"
        self.embed = nn.Embedding(CONTEXT * len(VOCAB), d)
        nn.init.normal_(self.embed.weight)  # entries of size 1 at any width (an input layer)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.LayerNorm(d),
                    _linear(structure, d, 4 * d, zero=False),
                    _linear(structure, 4 * d, d, zero=mup),  # writes the residual stream
                ]
            )
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(d)
        self.readout = nn.Linear(d, len(VOCAB))
        if mup:  # μP's readout starts at zero (Tensor Programs V, Section 3)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self.register_buffer("offsets", torch.arange(CONTEXT) * len(VOCAB), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x + self.offsets).sum(-2) / math.sqrt(CONTEXT)
        for norm, up, down in self.blocks:
            h = h + down(F.gelu(up(norm(h))))
        return self.readout(self.norm(h))


def _linear(structure: str, d_in: int, d_out: int, zero: bool) -> nn.Module:
    if structure == "dense":
        layer = nn.Linear(d_in, d_out)
        if zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        return layer
    options = structure_options(structure, d_in, d_out)
    return snn.Linear(d_in, d_out, structure, zero_init_last=zero, **options)


def optimizer_for(model: CharMLP, structure: str, parametrization: str, lr: float):
    if parametrization == "mup":
        return torch.optim.Adam(snn.param_groups(model, lr, base_fan_in=BASE_WIDTH))
    return torch.optim.Adam(model.parameters(), lr=lr)


# -- data -------------------------------------------------------------------------------
def windows(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The `CONTEXT` characters before each target, and the target."""
    chunk = data[starts[:, None] + torch.arange(CONTEXT + 1)]
    return chunk[:, :-1], chunk[:, -1]


@dataclass(frozen=True)
class Task:
    structure: str
    parametrization: str
    width: int
    lr: float
    steps: int
    batch: int
    blocks: int
    seed: int = 0


@dataclass(frozen=True)
class Result:
    structure: str
    parametrization: str
    width: int
    lr: float
    val_loss: float  # inf where training diverged
    seconds: float


_DATA: dict[str, torch.Tensor] = {}


def _init_worker(text_chars: int, threads: int) -> None:
    torch.set_num_threads(threads)
    data = encode(load_text(text_chars))
    split = int(0.9 * len(data))
    _DATA["train"], _DATA["val"] = data[:split], data[split:]


def run(task: Task) -> Result:
    """Train one model and return its validation loss."""
    train, val = _DATA["train"], _DATA["val"]
    torch.manual_seed(task.seed)
    model = CharMLP(task.width, task.structure, task.parametrization, task.blocks)
    opt = optimizer_for(model, task.structure, task.parametrization, task.lr)
    # The same batches for every run: a generator seeded independently of the model.
    batches = torch.Generator().manual_seed(1000 + task.seed)
    start = time.perf_counter()
    diverged = False
    for _ in range(task.steps):
        starts = torch.randint(0, len(train) - CONTEXT - 1, (task.batch,), generator=batches)
        x, y = windows(train, starts)
        loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    val_loss = math.inf if diverged else evaluate(model, val)
    return Result(
        task.structure,
        task.parametrization,
        task.width,
        task.lr,
        val_loss if math.isfinite(val_loss) else math.inf,
        time.perf_counter() - start,
    )


@torch.no_grad()
def evaluate(model: nn.Module, val: torch.Tensor, n: int = 4096) -> float:
    starts = torch.linspace(0, len(val) - CONTEXT - 2, n).long()  # fixed, spread positions
    x, y = windows(val, starts)
    return F.cross_entropy(model(x), y).item()


def run_all(tasks: list[Task], workers: int, text_chars: int) -> list[Result]:
    # The widest (slowest) runs first, so that the workers finish together.
    tasks = sorted(tasks, key=lambda t: -t.width * (4 if t.structure == "dense" else 1))
    if workers <= 1:
        _init_worker(text_chars, threads=1)
        return [_report(run(t), i, len(tasks)) for i, t in enumerate(tasks)]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(text_chars, 1)) as pool:
        return [_report(r, i, len(tasks)) for i, r in enumerate(pool.map(run, tasks))]


def _report(result: Result, i: int, total: int) -> Result:
    sys.stderr.write(
        f"\r  {i + 1:4d}/{total} runs  ({result.structure} {result.parametrization} "
        f"d={result.width} lr={result.lr:.2e}: {result.val_loss:.3f})      "
    )
    sys.stderr.flush()
    return result


# -- reading the results ----------------------------------------------------------------
def best_rates(results: list[Result], structure: str, parametrization: str) -> dict[int, float]:
    """The learning rate of the lowest validation loss at each width."""
    best: dict[int, Result] = {}
    for r in results:
        mine = r.structure == structure and r.parametrization == parametrization
        if mine and (r.width not in best or r.val_loss < best[r.width].val_loss):
            best[r.width] = r
    return {w: best[w].lr for w in sorted(best)}


def transfer_penalty(results: list[Result], structure: str, parametrization: str):
    """The validation loss of the widest model trained at the rate that was best for the
    narrowest, and the widest model's best loss: what tuning small and transferring costs."""
    rates = best_rates(results, structure, parametrization)
    narrow, wide = min(rates), max(rates)
    losses = {
        r.lr: r.val_loss
        for r in results
        if (r.structure, r.parametrization, r.width) == (structure, parametrization, wide)
    }
    return losses[rates[narrow]], min(losses.values())


def shift(rates: dict[int, float]) -> float:
    """How far the best learning rate moves from the narrowest to the widest model
    (a ratio; 1 is perfect transfer, 2 one power of 2 either way)."""
    widths = sorted(rates)
    ratio = rates[widths[-1]] / rates[widths[0]]
    return max(ratio, 1 / ratio)


def print_tables(results: list[Result], structures, parametrizations, widths, lrs) -> None:
    for structure in structures:
        for p in parametrizations:
            rows = {
                (r.width, r.lr): r.val_loss
                for r in results
                if r.structure == structure and r.parametrization == p
            }
            print(f"\n{structure}, {'μP' if p == 'mup' else 'SP'}: validation loss")
            print("lr       " + "".join(f"{'d=' + str(w):>9}" for w in widths))
            for lr in lrs:
                cells = "".join(f"{rows.get((w, lr), math.nan):9.3f}" for w in widths)
                print(f"{lr:<9.2e}{cells}")
            rates = best_rates(results, structure, p)
            best = "  ".join(f"d={w}: {lr:.2e}" for w, lr in rates.items())
            spread = max(rates.values()) / min(rates.values())
            print(f"best lr  {best}   (moves {shift(rates):.0f}x; {spread:.0f}x over all widths)")
            transferred, best_loss = transfer_penalty(results, structure, p)
            print(
                f"the rate best at d={widths[0]}, used at d={widths[-1]}: loss {transferred:.3f} "
                f"(best {best_loss:.3f}, +{transferred - best_loss:.3f})"
            )


def summary(results: list[Result], structures, parametrizations) -> list[dict]:
    return [
        {
            "structure": s,
            "parametrization": p,
            "best_lr": {str(w): lr for w, lr in best_rates(results, s, p).items()},
            "shift": shift(best_rates(results, s, p)),
            "spread": max(best_rates(results, s, p).values())
            / min(best_rates(results, s, p).values()),
            "transferred_loss": transfer_penalty(results, s, p)[0],
            "best_loss_at_widest": transfer_penalty(results, s, p)[1],
        }
        for s in structures
        for p in parametrizations
    ]


def plot(results: list[Result], structures, parametrizations, widths, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(parametrizations),
        len(structures),
        figsize=(3.1 * len(structures), 2.7 * len(parametrizations)),
        squeeze=False,
        sharey=True,
    )
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(widths)))
    finite = [r.val_loss for r in results if math.isfinite(r.val_loss)]
    top = min(max(finite), min(finite) + 1.5) if finite else 5.0
    for i, p in enumerate(parametrizations):
        for j, s in enumerate(structures):
            ax = axes[i][j]
            for w, color in zip(widths, colors, strict=True):
                rs = sorted(
                    (r for r in results if (r.structure, r.parametrization, r.width) == (s, p, w)),
                    key=lambda r: r.lr,
                )
                lrs = [r.lr for r in rs]
                losses = [min(r.val_loss, top) for r in rs]
                ax.plot(lrs, losses, "o-", ms=3, color=color, label=f"d={w}")
                k = int(np.argmin([r.val_loss for r in rs]))
                ax.plot(lrs[k], losses[k], "*", ms=10, color=color)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{s}, {'μP' if p == 'mup' else 'SP'}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(parametrizations) - 1:
                ax.set_xlabel("learning rate", fontsize=8)
            if j == 0:
                ax.set_ylabel("validation loss", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("learning-rate transfer across width (stars: the best rate per width)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coordinate_checks(structures, widths, path: str | None, data: torch.Tensor) -> None:
    """`structlin.nn.coord_check` of each structure's model under μP and SP: how much the
    readout's output and its update after 4 Adam steps grow from the narrowest to the
    widest model (1 under μP)."""
    g = torch.Generator().manual_seed(0)
    batches = [windows(data, torch.randint(0, 100_000, (64,), generator=g)) for _ in range(4)]
    print(f"\ncoordinate check, widths {widths[0]} -> {widths[-1]}, 4 Adam steps at lr 2^-6:")
    print(f"{'':<9}{'':<4} {'readout size':>13} {'its update':>11} {'worst layer':>24}")
    checks = {}
    for structure in structures:
        for p in PARAMETRIZATIONS:
            check = snn.coord_check(
                lambda d, s=structure, p=p: CharMLP(d, s, p, blocks=1),
                widths, batches, steps=4, lr=2.0**-6, parametrization=p,
                base_fan_in=BASE_WIDTH,
            )  # fmt: skip
            checks[structure, p] = check
            growth = {m: check.growth(m, kind=k) for m in check.modules for k in ("update",)}
            worst = max(growth, key=lambda m: abs(math.log(growth[m])) if growth[m] > 0 else 0)
            print(
                f"{structure:<9}{'μP' if p == 'mup' else 'SP':<4} "
                f"{check.growth('readout'):>12.2f}x {check.growth('readout', kind='update'):>10.2f}x "
                f"{worst + ' ' + format(growth[worst], '.2f') + 'x':>24}"
            )
    if path is not None:
        check = checks.get(("monarch", "mup")) or next(iter(checks.values()))
        check.plot(path, kind="update", title="coordinate check: Monarch MLP, μP (update sizes)")
        sp = checks.get(("monarch", "sp"))
        if sp is not None:
            root, ext = os.path.splitext(path)
            sp.plot(f"{root}_sp{ext}", kind="update", title="the same under SP")
        print(f"coordinate-check plots: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two tiny widths, two rates")
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    parser.add_argument("--parametrizations", default=",".join(PARAMETRIZATIONS))
    parser.add_argument("--widths", default="64,128,256,512")
    parser.add_argument(
        "--lrs", default="-11,-10,-9,-8,-7,-6,-5,-4", help="learning rates as powers of 2"
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2, help="residual MLP blocks")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--plot", metavar="PNG", default="mup_transfer.png")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    parser.add_argument(
        "--coord-plot", metavar="PNG", help="save the Monarch model's coordinate-check plots"
    )
    args = parser.parse_args(argv)

    if args.smoke:
        args.structures, args.widths, args.lrs = "dense,monarch", "16,32", "-7,-5"
        args.steps, args.batch, args.blocks, args.workers = 3, 8, 1, 1
        args.plot = os.path.join(tempfile.mkdtemp(), "mup_transfer.png")
    structures = args.structures.split(",")
    parametrizations = args.parametrizations.split(",")
    for name in structures:
        if name not in STRUCTURES:
            parser.error(f"unknown structure {name!r}; choose from {', '.join(STRUCTURES)}")
    for name in parametrizations:
        if name not in PARAMETRIZATIONS:
            parser.error(f"unknown parametrization {name!r}; choose mup or sp")
    widths = sorted(int(w) for w in args.widths.split(","))
    lrs = [2.0 ** int(e) for e in args.lrs.split(",")]
    tasks = [
        Task(s, p, w, lr, args.steps, args.batch, args.blocks)
        for s in structures
        for p in parametrizations
        for w in widths
        for lr in lrs
    ]
    text_chars = 200_000 if args.smoke else 2_000_000
    print(
        f"{len(tasks)} runs: {', '.join(structures)} x {', '.join(parametrizations)} x widths "
        f"{widths} x {len(lrs)} learning rates, {args.steps} Adam steps of batch {args.batch} "
        f"each, {args.workers} processes"
    )
    start = time.perf_counter()
    torch.set_num_threads(1 if args.smoke else 2)
    coordinate_checks(
        structures,
        [16, 64] if args.smoke else [64, 256, 1024],
        args.coord_plot,
        encode(load_text(text_chars)),
    )
    results = run_all(tasks, args.workers, text_chars)
    elapsed = time.perf_counter() - start
    print(f"\n{len(results)} runs in {elapsed:.0f} s")
    print_tables(results, structures, parametrizations, widths, lrs)
    plot(results, structures, parametrizations, widths, args.plot)
    print(f"\nplot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
                    "seconds": elapsed,
                    "summary": summary(results, structures, parametrizations),
                    "runs": [asdict(r) for r in results],
                },
                f,
                indent=1,
            )
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
