"""Train a causal Monarch Mixer (M2) language model against a Transformer, and time their sequence mixers.

    python examples/m2_char_lm.py                   # 2 x 150 s of training + timings, ~6 min on 2 CPU cores
    python examples/m2_char_lm.py --plot docs/assets/m2_throughput.png
    python examples/m2_char_lm.py --seconds 60      # a shorter training budget per model
    python examples/m2_char_lm.py --steps 200       # a fixed step count instead (reproducible)
    python examples/m2_char_lm.py --skip-training   # only the throughput comparison
    python examples/m2_char_lm.py --smoke           # tiny models, a few steps (for tests)

Needs PyTorch, and matplotlib for the plot. The corpus, vocabulary and batching are
those of `train_char_lm.py` (the Python standard library's own source as
characters, nothing downloaded; the last 10% held out).

**Part 1: language models.** Two character-level models of about the same
parameter count, trained for the same wall-clock time on the same batches with
AdamW over `structlin.nn.param_groups` (μP learning rates for the structured
layers, the base rate for everything else):

- M2: token embeddings, `--m2-layers` causal `structlin.nn.MonarchMixer` blocks
  (gated Monarch-DFT long convolutions for the sequence, gated Monarch MLPs for
  the width; no position embeddings, the convolutions know the positions), a
  final LayerNorm and a dense head;
- Transformer: the GPT of `train_char_lm.py` with dense layers (token and
  position embeddings, pre-LayerNorm blocks of causal multi-head attention and a
  4x GELU MLP).

Printed: parameters, steps, training tokens per second and validation loss (nats
per character) of each, and 200 characters sampled from the M2 model (a causal
model reads a right-padded window exactly like the unpadded one).

**Part 2: throughput of the sequence mixers alone.** The M2 sequence mixer
(`MonarchMixer.sequence_mixing`: projections, short and long convolutions, gates)
against causal attention (q, k, v and output projections around
`torch.nn.functional.scaled_dot_product_attention`) at the same width, forward and
backward, for sequence lengths 256 to 8192 at a fixed number of tokens per call.
Attention costs `O(N^2 d)` per sequence, the Monarch-DFT convolution
`O(N^{1.5} d)`; the script reports the length from which M2 is faster and plots
tokens/s against length (`--plot`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from train_char_lm import (
    GPT,
    VOCAB,
    batch_at,
    decode,
    dense_linear,
    encode,
    evaluate,
    learning_rate_factor,
    load_text,
    progress_bar,
)

import structlin.nn as snn


# -- models ---------------------------------------------------------------------------
class M2LM(nn.Module):
    """A causal character model of `MonarchMixer` blocks."""

    def __init__(self, vocab: int, d: int, n_layers: int, seq_len: int, nblocks: int):
        super().__init__()
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            snn.MonarchMixer(d, seq_len, causal=True, nblocks=nblocks) for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def sample(self, prompt: str, n: int, temperature: float, seed: int) -> str:
        device = self.head.weight.device
        generator = torch.Generator(device=device).manual_seed(seed)
        ids = encode(prompt).tolist()
        for _ in range(n):
            context = ids[-self.seq_len :]
            # Right-pad to the full window: position len(context) - 1 cannot see the
            # padding (the model is causal), and every call reuses one DFT size.
            window = torch.zeros(1, self.seq_len, dtype=torch.long, device=device)
            window[0, : len(context)] = torch.tensor(context, device=device)
            logits = self(window)[0, len(context) - 1] / temperature
            probs = torch.softmax(logits.float(), dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=generator)))
        return decode(ids)


class CausalAttention(nn.Module):
    """The attention sublayer of the Transformer: q, k, v, output projections and causal SDPA."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = (
            f(x).view(B, T, self.n_heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class M2SequenceMixer(nn.Module):
    """`MonarchMixer.sequence_mixing` alone (no norm, no MLP)."""

    def __init__(self, d: int, seq_len: int, nblocks: int):
        super().__init__()
        self.block = snn.MonarchMixer(d, seq_len, causal=True, nblocks=nblocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.sequence_mixing(x)


# -- training -------------------------------------------------------------------------
@dataclass
class Config:
    d_model: int
    transformer_layers: int
    m2_layers: int
    n_heads: int
    nblocks: int
    seq_len: int
    batch: int
    lr: float
    weight_decay: float
    warmup: float
    text_chars: int
    val_batches: int
    seconds: float | None
    steps: int | None
    evals: int
    lengths: tuple[int, ...]  # of the throughput comparison
    tokens: int  # per timed call
    repeats: int


@dataclass
class Result:
    name: str
    model: nn.Module
    params: int
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, val loss)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def train(name, model, cfg: Config, train_data, val_batches, device, seed) -> Result:
    model.to(device)
    result = Result(name, model, params=sum(p.numel() for p in model.parameters()))
    groups = snn.param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    batches = torch.Generator().manual_seed(seed)  # the same batches for both models
    high = len(train_data) - cfg.seq_len - 1

    def progress() -> float:
        if cfg.steps is not None:
            return result.steps / cfg.steps
        return result.train_seconds / cfg.seconds

    result.curve.append((0.0, evaluate(model, val_batches)))
    next_eval, loss, last_draw = 1, float("nan"), 0.0
    while progress() < 1:
        start = time.perf_counter()  # the clock runs only while training
        factor = learning_rate_factor(progress(), cfg.warmup)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        starts = torch.randint(high, (cfg.batch,), generator=batches)
        x, y = batch_at(train_data, starts, cfg.seq_len, device)
        loss_t = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss_t.backward()
        optimizer.step()
        loss = float(loss_t.detach())
        result.steps += 1
        result.tokens += x.numel()
        result.train_seconds += time.perf_counter() - start
        if progress() >= next_eval / cfg.evals and progress() < 1:
            result.curve.append((result.train_seconds, evaluate(model, val_batches)))
            next_eval += 1
        if time.monotonic() - last_draw > 0.2:
            progress_bar(
                name, progress(), result.steps, loss, result.train_seconds, result.curve[-1][1]
            )
            last_draw = time.monotonic()
    result.curve.append((result.train_seconds, evaluate(model, val_batches)))
    progress_bar(name, 1.0, result.steps, loss, result.train_seconds, result.curve[-1][1])
    sys.stderr.write("\n")
    return result


# -- throughput -----------------------------------------------------------------------
def tokens_per_second(module: nn.Module, batch: int, seq_len: int, d: int, repeats: int, device):
    """Forward and backward through `module` on `(batch, seq_len, d)`: median tokens/s."""
    module.to(device)
    x = torch.randn(batch, seq_len, d, device=device, requires_grad=True)
    grad = torch.randn(batch, seq_len, d, device=device)
    times = []
    for i in range(repeats + 1):  # the first call warms up (allocations, caches)
        start = time.perf_counter()
        module(x).backward(grad)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        module.zero_grad(set_to_none=True)
        x.grad = None
    return batch * seq_len / statistics.median(times)


def throughput(cfg: Config, device: str) -> list[tuple[int, float, float]]:
    rows = []
    print(
        f"\nsequence mixers alone, forward + backward, width {cfg.d_model}, "
        f"{cfg.tokens} tokens per call (batch = {cfg.tokens} / length), median of {cfg.repeats}:"
    )
    print(
        f"{'length':>7}{'batch':>7}{'M2 tokens/s':>14}{'attention tokens/s':>20}{'M2 / attn':>11}"
    )
    for seq_len in cfg.lengths:
        batch = max(1, cfg.tokens // seq_len)
        torch.manual_seed(0)
        m2 = M2SequenceMixer(cfg.d_model, seq_len, cfg.nblocks)
        m2_rate = tokens_per_second(m2, batch, seq_len, cfg.d_model, cfg.repeats, device)
        del m2
        attention = CausalAttention(cfg.d_model, cfg.n_heads)
        attn_rate = tokens_per_second(attention, batch, seq_len, cfg.d_model, cfg.repeats, device)
        rows.append((seq_len, m2_rate, attn_rate))
        print(
            f"{seq_len:>7}{batch:>7}{m2_rate:>14,.0f}{attn_rate:>20,.0f}{m2_rate / attn_rate:>10.2f}x"
        )
    return rows


def crossover(rows: list[tuple[int, float, float]]) -> int | None:
    """The shortest measured length from which M2 is faster at every longer one."""
    found = None
    for seq_len, m2_rate, attn_rate in reversed(rows):
        if m2_rate <= attn_rate:
            break
        found = seq_len
    return found


def plot(rows, cfg: Config, where: int | None, path: str, threads: int, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths, m2_rates, attn_rates = zip(*rows, strict=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lengths, m2_rates, marker="o", label="M2 sequence mixer (Monarch-DFT long conv)")
    ax.plot(lengths, attn_rates, marker="s", label="causal attention (SDPA)")
    if where is not None:
        ax.axvline(where, color="gray", linestyle="--", linewidth=1)
        ax.annotate(f"M2 faster from N = {where}", (where, min(m2_rates + attn_rates)), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(n) for n in lengths])
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("tokens / s (forward + backward)")
    where_run = f"{threads} CPU threads" if device == "cpu" else device
    ax.set_title(
        f"Sequence mixers alone: width {cfg.d_model}, {cfg.tokens} tokens per call, {where_run}",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


# -- main -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few steps (for tests)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="training time per model (default 150)")
    budget.add_argument("--steps", type=int, help="train each model this many steps instead")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="where to save the throughput plot (default m2_throughput.png; a temporary file in --smoke)",
    )
    parser.add_argument("--skip-training", action="store_true", help="only time the mixers")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m2-layers", type=int, help="M2 blocks (default 2)")
    parser.add_argument(
        "--nblocks", type=int, help="blocks of the M2 model's Monarch layers (default 2)"
    )
    parser.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.smoke:
        cfg = Config(
            d_model=32, transformer_layers=1, m2_layers=2, n_heads=2, nblocks=4, seq_len=32,
            batch=4, lr=3e-3, weight_decay=0.1, warmup=0.2, text_chars=20_000, val_batches=2,
            seconds=None, steps=3, evals=1, lengths=(32, 64), tokens=128, repeats=1,
        )  # fmt: skip
    else:
        cfg = Config(
            d_model=256, transformer_layers=2, m2_layers=2, n_heads=4, nblocks=2, seq_len=256,
            batch=16, lr=2e-3, weight_decay=0.1, warmup=0.05, text_chars=3_000_000,
            val_batches=8, seconds=150.0, steps=None, evals=6,
            lengths=(256, 512, 1024, 2048, 4096, 8192), tokens=8192, repeats=3,
        )  # fmt: skip
    if args.m2_layers is not None:
        cfg.m2_layers = args.m2_layers
    if args.nblocks is not None:
        cfg.nblocks = args.nblocks
    if args.lr is not None:
        cfg.lr = args.lr
    if args.steps is not None:
        cfg.seconds, cfg.steps = None, args.steps
    elif args.seconds is not None:
        cfg.seconds, cfg.steps = args.seconds, None
    run_start = time.perf_counter()

    if not args.skip_training:
        text = load_text(cfg.text_chars)
        data = encode(text)
        split = int(0.9 * len(data))
        train_data, val_data = data[:split], data[split:]
        starts = torch.linspace(0, len(val_data) - cfg.seq_len - 1, cfg.val_batches * cfg.batch)
        val_batches = [
            batch_at(val_data, chunk, cfg.seq_len, args.device)
            for chunk in starts.long().split(cfg.batch)
        ]
        budget_text = f"{cfg.seconds:g} s" if cfg.steps is None else f"{cfg.steps} steps"
        print(
            f"text: {len(text):,} characters of Python stdlib source ({len(train_data):,} train / "
            f"{len(val_data):,} validation); batch {cfg.batch} x {cfg.seq_len}; AdamW lr "
            f"{cfg.lr:g} (x muP multipliers), weight decay {cfg.weight_decay:g}; {budget_text} "
            f"per model on {args.device}"
            + (f" ({args.threads} threads)" if args.device == "cpu" else "")
        )
        torch.manual_seed(args.seed)
        m2 = M2LM(len(VOCAB), cfg.d_model, cfg.m2_layers, cfg.seq_len, cfg.nblocks)
        torch.manual_seed(args.seed)
        gpt = GPT(
            len(VOCAB), cfg.d_model, cfg.transformer_layers, cfg.n_heads, cfg.seq_len, dense_linear
        )
        results = []
        for name, model, shape in [
            ("m2", m2, f"{cfg.m2_layers} MonarchMixer blocks, d {cfg.d_model}, Monarch nblocks {cfg.nblocks}"),
            ("gpt", gpt, f"{cfg.transformer_layers} Transformer blocks, d {cfg.d_model}, {cfg.n_heads} heads, dense"),
        ]:  # fmt: skip
            print(f"{name}: {shape}, {sum(p.numel() for p in model.parameters()):,} parameters")
            results.append(train(name, model, cfg, train_data, val_batches, args.device, args.seed))
        print(
            f"\n{'model':<6}{'params':>11}{'steps':>7}{'train s':>9}{'tokens/s':>10}{'val loss':>10}"
        )
        for r in results:
            print(
                f"{r.name:<6}{r.params:>11,}{r.steps:>7}{r.train_seconds:>9.1f}"
                f"{r.tokens_per_second:>10,.0f}{r.curve[-1][1]:>10.4f}"
            )
        print(
            f"(validation loss in nats per character over {cfg.val_batches * cfg.batch} fixed "
            f"windows of {cfg.seq_len}; tokens/s counts training steps only)"
        )
        prompt = "def "
        sample = m2.sample(prompt, 200, temperature=0.8, seed=args.seed)
        print(f"\n200 characters from the M2 model (temperature 0.8, prompt {prompt!r}):")
        print("-" * 60)
        print(sample)
        print("-" * 60)

    rows = throughput(cfg, args.device)
    where = crossover(rows)
    if where is None:
        print(f"M2 is not faster than attention up to length {cfg.lengths[-1]} here")
    else:
        ratio = {n: m / a for n, m, a in rows}
        print(
            f"M2 overtakes attention at sequence length {where} (and is faster at every longer "
            f"length measured: {ratio[cfg.lengths[-1]]:.1f}x at {cfg.lengths[-1]})"
        )
    if args.plot:
        plot(rows, cfg, where, args.plot, args.threads, args.device)
    elif args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            plot(
                rows, cfg, where, os.path.join(tmp, "m2_throughput.png"), args.threads, args.device
            )
    else:
        plot(rows, cfg, where, "m2_throughput.png", args.threads, args.device)
    print(f"total time {time.perf_counter() - run_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
