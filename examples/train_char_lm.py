"""Train a small character-level GPT with dense, Monarch and BTT MLPs and compare them.

    python examples/train_char_lm.py                  # 3 x 120 s of training, ~7 min on 2 CPU cores
    python examples/train_char_lm.py --seconds 60     # a shorter time budget per model
    python examples/train_char_lm.py --steps 300      # a fixed step count instead (reproducible)
    python examples/train_char_lm.py --structured-attention   # structure q, k, v, out too
    python examples/train_char_lm.py --device cuda    # on a GPU
    python examples/train_char_lm.py --smoke          # tiny model, a few steps (for tests)

Needs PyTorch, and matplotlib for the plot. The text is the source code of the
Python standard library that runs the script (its top-level `*.py` files in sorted
order, 3 million characters, printable ASCII and newlines only), so nothing is
downloaded; the last 10% is held out for validation.

One decoder-only Transformer class (token and position embeddings, pre-LayerNorm
blocks of causal multi-head attention and a 4x GELU MLP, a final LayerNorm and a
dense output head) is built three times with a different `make_linear` factory:

- dense: every linear layer of the blocks is a `torch.nn.Linear`;
- monarch: the MLP linears are `structlin.nn.Linear(..., "monarch", nblocks=4)`;
- btt: the MLP linears are `structlin.nn.Linear(..., "btt", rank=1)` (`--btt-rank`).

With `--structured-attention` the attention projections are structured too. That
saves parameters but not time on a CPU at this width: the d x d structured layers
cost more than the dense matrix products they replace.

Everything else is identical: the same seed, the same batches in the same order,
the same optimiser (`torch.optim.AdamW` over `structlin.nn.param_groups`, which
gives each structured component its structure-aware μP learning rate and every
dense parameter the base rate), the same learning-rate schedule, and the same
initial function (the layers that write into the residual stream start at zero,
and the embeddings and head are drawn identically). By default each model trains
for the same wall-clock budget, so the comparison is validation loss for the same
training time: the structured models are cheaper per step and take more steps
(the step counts, and so the results, then depend on the machine and its load;
`--steps` fixes them). The script prints the parameter counts, steps, time per
step and validation losses of each model, saves a plot of validation loss
against training time (`--plot`), and samples some text from the best model.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import structlin.nn as snn

# The vocabulary is fixed (newline + the 95 printable ASCII characters) rather than
# read off the text, so ids mean the same thing whatever slice of text is loaded.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))

# A factory for the block linears: (d_in, d_out, role) -> module, with role one of
# "q", "k", "v" and "out" (attention), "up" and "down" (MLP).
MakeLinear = Callable[[int, int, str], nn.Module]
# The layers that write into the residual stream; they start at zero.
WRITES_RESIDUAL = ("out", "down")


# -- data ---------------------------------------------------------------------------
def load_text(max_chars: int) -> str:
    """The standard library's top-level `*.py` files, concatenated in sorted order and
    cut to `max_chars` characters of printable ASCII and newlines."""
    stdlib = pathlib.Path(os.path.dirname(os.__file__))
    allowed = set(VOCAB)
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        kept = "".join(c for c in source if c in allowed)
        parts.append(kept)
        total += len(kept)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def encode(text: str) -> torch.Tensor:
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    # "\n" -> 0, " " (32) -> 1, ..., "~" (126) -> 95: the positions in VOCAB.
    ids = np.where(codes == 10, 0, codes.astype(np.int64) - 31)
    return torch.from_numpy(ids)


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def batch_at(data: torch.Tensor, starts: torch.Tensor, seq_len: int, device: str):
    """Inputs and next-character targets for the windows starting at `starts`."""
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[idx].to(device)
    return chunk[:, :-1], chunk[:, 1:]


# -- model --------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-LayerNorm Transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`."""

    def __init__(self, d: int, n_heads: int, make_linear: MakeLinear):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        # Separate square q, k, v projections rather than one d -> 3d layer: each is
        # then a structured d x d matrix, the shape the structures factor best.
        self.q = make_linear(d, d, "q")
        self.k = make_linear(d, d, "k")
        self.v = make_linear(d, d, "v")
        self.out = make_linear(d, d, "out")
        self.ln2 = nn.LayerNorm(d)
        self.up = make_linear(d, 4 * d, "up")
        self.down = make_linear(4 * d, d, "down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        h = self.ln1(x)
        # (B, T, d) -> (B, heads, T, d / heads)
        q, k, v = (
            f(h).view(B, T, self.n_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    """A decoder-only character model whose block linears come from `make_linear`."""

    def __init__(
        self, vocab: int, d: int, n_layers: int, n_heads: int, seq_len: int, make_linear: MakeLinear
    ):
        super().__init__()
        self.seq_len = seq_len
        # The layers shared by every variant are drawn before the blocks, so that
        # with the same seed they start identical. As the residual branches start
        # at zero, all three variants then compute the same function at step 0.
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq_len, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)  # dense in every variant: it is small (d x 96)
        self.blocks = nn.ModuleList(Block(d, n_heads, make_linear) for _ in range(n_layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def block_linears(self) -> list[nn.Module]:
        return [m for m in self.blocks.modules() if isinstance(m, (nn.Linear, snn.Linear))]

    @torch.no_grad()
    def sample(self, prompt: str, n: int, temperature: float, seed: int) -> str:
        device = self.head.weight.device
        generator = torch.Generator(device=device).manual_seed(seed)
        ids = encode(prompt).tolist()
        for _ in range(n):
            context = torch.tensor([ids[-self.seq_len :]], device=device)
            logits = self(context)[0, -1] / temperature
            probs = torch.softmax(logits.float(), dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=generator)))
        return decode(ids)


def dense_linear(d_in: int, d_out: int, role: str) -> nn.Module:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.bias)  # as structlin.nn.Linear does
    if role in WRITES_RESIDUAL:
        # Zero the residual branches here too, so that only the structure differs.
        nn.init.zeros_(layer.weight)
    return layer


def structured_linear(structure: str, **spec) -> MakeLinear:
    def make(d_in: int, d_out: int, role: str) -> nn.Module:
        # zero_init_last zeroes only the components that write the output, so the
        # layer starts at W = 0 but its other components still receive gradients.
        zero = role in WRITES_RESIDUAL
        return snn.Linear(d_in, d_out, structure, zero_init_last=zero, **spec)

    return make


def mlp_only(make: MakeLinear) -> MakeLinear:
    """`make` for the MLP layers, dense layers for the attention projections."""

    def choose(d_in: int, d_out: int, role: str) -> nn.Module:
        return (make if role in ("up", "down") else dense_linear)(d_in, d_out, role)

    return choose


# -- training -----------------------------------------------------------------------
@dataclass
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    batch: int
    lr: float
    weight_decay: float
    warmup: float  # fraction of the run spent warming up the learning rate
    text_chars: int
    val_batches: int
    seconds: float | None  # a wall-clock budget per model, or
    steps: int | None  # a fixed number of steps per model
    evals: int  # validation evaluations during the run (plus one at the end)


@dataclass
class Result:
    name: str
    model: GPT
    linear_params: int
    total_params: int
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, val loss)

    @property
    def final_val(self) -> float:
        return self.curve[-1][1]

    @property
    def best_val(self) -> float:
        return min(loss for _, loss in self.curve)


@torch.no_grad()
def evaluate(model: GPT, val_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    losses = [float(model.loss(x, y)) for x, y in val_batches]
    model.train()
    return sum(losses) / len(losses)


def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at `progress` = 1."""
    if progress < warmup:
        return progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def progress_bar(name: str, progress: float, step: int, loss: float, elapsed: float, val: float):
    width = 24
    filled = int(width * min(progress, 1.0))
    bar = "#" * filled + "-" * (width - filled)
    val_text = f"  val {val:.3f}" if math.isfinite(val) else ""
    sys.stderr.write(
        f"\r  {name:<8}[{bar}] {100 * min(progress, 1.0):3.0f}%  step {step:5d}  "
        f"loss {loss:.3f}{val_text}  {elapsed:6.1f}s "
    )
    sys.stderr.flush()


def train(
    name: str,
    make_linear: MakeLinear,
    cfg: Config,
    train_data: torch.Tensor,
    val_batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: str,
    seed: int,
) -> Result:
    torch.manual_seed(seed)  # the same embeddings and head in every model (see GPT)
    model = GPT(len(VOCAB), cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.seq_len, make_linear)
    model.to(device)
    result = Result(
        name,
        model,
        linear_params=sum(p.numel() for m in model.block_linears() for p in m.parameters()),
        total_params=sum(p.numel() for p in model.parameters()),
    )

    # Each structured component gets lr * kappa (its μP multiplier); dense
    # weights, embeddings, norms and biases get lr. Decay only on matrices.
    groups = snn.param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    # The same batches in the same order for every model: a generator of its own.
    batches = torch.Generator().manual_seed(seed)
    high = len(train_data) - cfg.seq_len - 1

    def progress() -> float:
        if cfg.steps is not None:
            return result.steps / cfg.steps
        return result.train_seconds / cfg.seconds

    def record() -> None:
        start = time.perf_counter()
        result.curve.append((result.train_seconds, evaluate(model, val_batches)))
        result.eval_seconds += time.perf_counter() - start

    record()
    next_eval, loss, last_draw = 1, float("nan"), 0.0
    while progress() < 1:
        # The clock runs only while training, so evaluation does not eat the budget.
        start = time.perf_counter()
        factor = learning_rate_factor(progress(), cfg.warmup)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        x, y = batch_at(
            train_data, torch.randint(high, (cfg.batch,), generator=batches), cfg.seq_len, device
        )
        loss_t = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss_t.backward()
        optimizer.step()
        loss = float(loss_t.detach())  # also waits for the device, so the clock is honest on GPUs
        result.steps += 1
        result.train_seconds += time.perf_counter() - start

        if progress() >= next_eval / cfg.evals and progress() < 1:
            record()
            next_eval += 1
        if time.monotonic() - last_draw > 0.2:  # redraw at most five times a second
            progress_bar(
                name, progress(), result.steps, loss, result.train_seconds, result.curve[-1][1]
            )
            last_draw = time.monotonic()
    record()
    progress_bar(name, 1.0, result.steps, loss, result.train_seconds, result.curve[-1][1])
    sys.stderr.write("\n")
    return result


# -- reporting ----------------------------------------------------------------------
def plot(results: list[Result], cfg: Config, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        times, losses = zip(*r.curve, strict=True)
        ax.plot(times, losses, marker="o", markersize=3, label=f"{r.name} ({r.steps} steps)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation loss (nats / char)")
    ax.set_title(
        f"Char-level GPT on Python stdlib source: d={cfg.d_model}, {cfg.n_layers} layers, "
        f"batch {cfg.batch} x {cfg.seq_len}",
        fontsize=9,
    )
    # The first point (the untrained model, loss ~ log 96) would flatten the rest.
    late = [loss for r in results for _, loss in r.curve[1:]]
    if late:
        ax.set_ylim(min(late) - 0.05, max(late) + 0.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few steps (for tests)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds", type=float, help="training time per model in seconds (default 120)"
    )
    budget.add_argument(
        "--steps", type=int, help="train each model for this many steps instead (5 in --smoke)"
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="where to save the plot (default train_char_lm.png; a temporary file in --smoke)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--btt-rank", type=int, default=1, help="rank of the BTT layers (default 1)"
    )
    parser.add_argument("--d-model", type=int, help="model width (default 384)")
    parser.add_argument("--layers", type=int, help="number of blocks (default 2)")
    parser.add_argument("--batch", type=int, help="sequences per batch (default 32)")
    parser.add_argument(
        "--lr", type=float, help="peak learning rate of the dense model (default 2e-3)"
    )
    parser.add_argument(
        "--structured-attention",
        action="store_true",
        help="also structure the attention projections, not only the MLP (slower on CPU: "
        "at d_model 384 the d x d structured layers cost more than dense ones)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.smoke:
        cfg = Config(
            d_model=32, n_layers=1, n_heads=2, seq_len=16, batch=4, lr=3e-3, weight_decay=0.1,
            warmup=0.2, text_chars=20_000, val_batches=2, seconds=None, steps=5, evals=2,
        )  # fmt: skip
    else:
        cfg = Config(
            d_model=384, n_layers=2, n_heads=6, seq_len=128, batch=32, lr=2e-3, weight_decay=0.1,
            warmup=0.05, text_chars=3_000_000, val_batches=8, seconds=120.0, steps=None,
            evals=10,
        )  # fmt: skip
    if args.d_model is not None:
        cfg.d_model, cfg.n_heads = args.d_model, max(1, args.d_model // 64)  # heads of 64
    if args.layers is not None:
        cfg.n_layers = args.layers
    if args.batch is not None:
        cfg.batch = args.batch
    if args.lr is not None:
        cfg.lr = args.lr
    if args.steps is not None:
        cfg.seconds, cfg.steps = None, args.steps
    elif args.seconds is not None:
        cfg.seconds, cfg.steps = args.seconds, None

    text = load_text(cfg.text_chars)
    data = encode(text)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    # A fixed set of validation windows, evenly spread over the held-out text.
    starts = torch.linspace(0, len(val_data) - cfg.seq_len - 1, cfg.val_batches * cfg.batch).long()
    val_batches = [
        batch_at(val_data, chunk, cfg.seq_len, args.device) for chunk in starts.split(cfg.batch)
    ]
    budget_text = f"{cfg.seconds:g} s" if cfg.steps is None else f"{cfg.steps} steps"
    print(
        f"text: {len(text):,} characters of Python stdlib source "
        f"({len(train_data):,} train / {len(val_data):,} validation), vocabulary {len(VOCAB)}"
    )
    print(
        f"model: d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"sequence {cfg.seq_len}, batch {cfg.batch}; AdamW lr {cfg.lr:g} (x muP multipliers), "
        f"weight decay {cfg.weight_decay:g}; {budget_text} per model on {args.device}"
        + (f" ({args.threads} threads)" if args.device == "cpu" else "")
    )
    where = "MLP and attention" if args.structured_attention else "MLP"
    print(f"structured layers: the {where} linears of every block\n")

    wrap = (lambda make: make) if args.structured_attention else mlp_only
    variants: dict[str, MakeLinear] = {
        "dense": dense_linear,
        "monarch": wrap(structured_linear("monarch", nblocks=4)),
        "btt": wrap(structured_linear("btt", rank=args.btt_rank)),
    }
    results = []
    run_start = time.perf_counter()
    for name, make in variants.items():
        result = train(name, make, cfg, train_data, val_batches, args.device, args.seed)
        results.append(result)
        print(
            f"{name}: {result.linear_params:,} block-linear / {result.total_params:,} total "
            f"parameters; {result.steps} steps in {result.train_seconds:.1f} s "
            f"({1e3 * result.train_seconds / result.steps:.1f} ms/step); validation loss "
            f"final {result.final_val:.4f}, best {result.best_val:.4f}"
        )

    print(
        f"\n{'model':<9}{'linear params':>15}{'all params':>12}{'steps':>7}{'train s':>9}"
        f"{'ms/step':>9}{'vs dense':>10}{'final val':>11}{'best val':>10}"
    )
    dense_step = results[0].train_seconds / results[0].steps
    for r in results:
        step = r.train_seconds / r.steps
        print(
            f"{r.name:<9}{r.linear_params:>15,}{r.total_params:>12,}{r.steps:>7}"
            f"{r.train_seconds:>9.1f}{1e3 * step:>9.1f}{step / dense_step:>9.2f}x"
            f"{r.final_val:>11.4f}{r.best_val:>10.4f}"
        )
    print(
        f"(linear params: the linear layers of the blocks, biases included; validation loss "
        f"in nats per character over {cfg.val_batches * cfg.batch} fixed windows of "
        f"{cfg.seq_len}; total time {time.perf_counter() - run_start:.0f} s including evaluation)"
    )

    if args.plot:
        plot(results, cfg, args.plot)
    elif args.smoke:
        # Draw the plot (so the tests cover it) without leaving a file behind.
        with tempfile.TemporaryDirectory() as tmp:
            plot(results, cfg, os.path.join(tmp, "train_char_lm.png"))
    else:
        plot(results, cfg, "train_char_lm.png")

    best = min(results, key=lambda r: r.best_val)
    prompt = "def "
    sample = best.model.sample(prompt, 200, temperature=0.8, seed=args.seed)
    print(f"\n200 characters from the {best.name} model (temperature 0.8, prompt {prompt!r}):")
    print("-" * 60)
    print(sample)
    print("-" * 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
