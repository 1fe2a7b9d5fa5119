"""Structure a pretrained GPT-2 three ways (project, adapt, densify) and compare them at equal time.

    python examples/finetune_gpt2.py               # 2 x 120 s + 4 x 50 s of training, ~8 min on 2 CPUs
    python examples/finetune_gpt2.py --seconds 30 --pretrain-seconds 60   # shorter budgets
    python examples/finetune_gpt2.py --plot docs/assets/finetune_gpt2.png
    python examples/finetune_gpt2.py --device cuda # on a GPU
    python examples/finetune_gpt2.py --smoke       # tiny model, a few steps (for tests)

Needs PyTorch, `transformers` (for `GPT2Config` and `GPT2LMHeadModel`; nothing is
downloaded) and matplotlib for the plot. The text is the one of
`examples/train_char_lm.py`: the top-level `*.py` files of the Python standard
library that runs the script, printable ASCII and newlines, the last 10% held out
for validation, read one character per token.

Pretrained weights cannot be downloaded here, so the script first makes its own
"pretrained" model: a small GPT-2 (d_model 128, 4 layers, context 128) trained
dense for `--pretrain-seconds`. From that checkpoint it runs the three workflows of
the structured-matrix papers with `structlin.nn`'s model surgery, each for the
same `--seconds` of training:

- (a) project: `replace_linear(model, "monarch", nblocks=4, filter="*.mlp.*",
  project=True)` puts each MLP projection (GPT-2's `Conv1D`s) onto its nearest
  Monarch matrix, then the whole model trains on ("dense-to-sparse fine-tuning");
- (b) adapters: `add_adapters(model, "monarch", nblocks=4, ...)` adds a trainable
  Monarch delta, zero at first, to every linear layer of the blocks (attention and
  MLP) and freezes the rest; at the end `merge_adapters` folds the deltas into
  plain `Conv1D`s, and the merged model is checked to compute the same logits;
- (c) reverse sparsification: a fresh GPT-2 whose MLPs are Monarch
  (`replace_linear` without projection) trains from scratch for the same
  `--pretrain-seconds` as the dense model, is turned back into a plain dense GPT-2
  by `densify` (the optimizer rebuilt over the new parameters) and trains on for
  `--seconds`;
- (d) the baseline: the dense model simply trains on for `--seconds`.

So (a), (b) and (d) compare three ways of spending the same fine-tuning time on
the same checkpoint, and (c) against (d) compares two ways of spending the same
total time (`--pretrain-seconds` + `--seconds`) from scratch: dense throughout, or
Monarch MLPs for the first part and dense for the rest. At this width the Monarch
MLPs hold a third of the dense ones' parameters but are no faster per step on a
CPU (compare tokens/s within a phase), so (a) and (c) gain no steps from their
structure here. Continued training on the same corpus stands in for a downstream
task.

The runs of a phase train in turns, a step at a time, always advancing the one
that has trained least, so that a change in the machine's speed (a shared machine,
other work) hits every variant alike; each run's clock counts its own training
steps only, never evaluation. Every run uses AdamW over `structlin.nn.param_groups`
(the μP learning rates of the structured components, frozen parameters left
out), linear warm-up and cosine decay within each phase, the same batches in the
same order, and the same fixed validation windows. The script prints the surgery
reports, a table of parameters (all and trainable), steps, tokens per second and
validation loss at the start and end of each run, checks that densifying,
merging and a `save_pretrained` / `structlin.nn.from_pretrained` round trip keep
the model's outputs (exit status 1 if not), and saves a plot of validation loss
against training time (`--plot`). Budgets are wall-clock time, so steps and
losses depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import structlin.nn as snn

# Newline and the 95 printable ASCII characters, as in train_char_lm.py.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
MLPS = "*.mlp.*"  # GPT-2's MLP projections: transformer.h.<i>.mlp.c_fc and .c_proj
BLOCKS = ["*.attn.*", "*.mlp.*"]  # every linear layer of the blocks (not the tied lm_head)


# -- data (as in train_char_lm.py) --------------------------------------------------
def load_text(max_chars: int) -> str:
    """The standard library's top-level `*.py` files, concatenated in sorted order and
    cut to `max_chars` characters of printable ASCII and newlines."""
    stdlib = pathlib.Path(os.path.dirname(os.__file__))
    allowed = set(VOCAB)
    parts, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        kept = "".join(
            c for c in path.read_text(encoding="utf-8", errors="replace") if c in allowed
        )
        parts.append(kept)
        total += len(kept)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def encode(text: str) -> torch.Tensor:
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    # "\n" -> 0, " " (32) -> 1, ..., "~" (126) -> 95: the positions in VOCAB.
    return torch.from_numpy(np.where(codes == 10, 0, codes.astype(np.int64) - 31))


def batch_at(data: torch.Tensor, starts: torch.Tensor, seq_len: int, device: str):
    """Inputs and next-character targets for the windows starting at `starts`."""
    chunk = data[starts[:, None] + torch.arange(seq_len + 1)].to(device)
    return chunk[:, :-1], chunk[:, 1:]


# -- model --------------------------------------------------------------------------
@dataclass
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    batch: int
    nblocks: int  # Monarch blocks, in every variant
    lr: float  # peak learning rate of pretraining (and of (c)'s Monarch phase)
    finetune_lr: float  # peak learning rate of every fine-tuning run
    weight_decay: float
    warmup: float  # fraction of each run spent warming up the learning rate
    text_chars: int
    val_windows: int  # validation windows of seq_len characters, evaluated 16 at a time
    pretrain: float  # the budget of a pretraining run: seconds, or steps with `steps`
    finetune: float  # the budget of a fine-tuning run
    steps: bool  # budgets are step counts (--smoke), not seconds
    evals: int  # validation evaluations during a run (plus one at each end)


def gpt2(cfg: Config, device: str, seed: int):
    """A fresh character-level GPT-2; the same `seed` gives the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(VOCAB), n_positions=cfg.seq_len, n_embd=cfg.d_model,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, use_cache=False,
        # GPT-2's own tanh GELU ("gelu_new"), as one fused kernel rather than five
        activation_function="gelu_pytorch_tanh",
    )  # fmt: skip
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(device)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def evaluate(model: nn.Module, val_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    was_training = model.training
    model.eval()
    loss = sum(float(loss_of(model, x, y)) for x, y in val_batches) / len(val_batches)
    model.train(was_training)
    return loss


@torch.no_grad()
def max_logit_change(before: nn.Module, after: nn.Module, x: torch.Tensor) -> float:
    """The largest difference between two models' logits on `x`, over the largest logit."""
    a, b = before(input_ids=x).logits, after(input_ids=x).logits
    return float((a - b).abs().max() / a.abs().max())


def count(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


# -- training in turns --------------------------------------------------------------
def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at `progress` = 1."""
    if progress < warmup:
        return progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(eq=False)
class Run:
    """One model trained for one phase's budget, with its own optimizer, clock and batches."""

    name: str
    model: nn.Module
    lr: float
    budget: float  # seconds, or steps when `by_steps`
    by_steps: bool
    offset: float  # where the run starts on the plot's time axis (pretraining is < 0)
    weight_decay: float
    seed: int
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    params: int = 0  # all parameters, and the trainable ones, while the run trains
    trainable: int = 0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training s, val loss)
    next_eval: int = 1

    def __post_init__(self) -> None:
        # AdamW over the μP groups: each structured component gets lr x its multiplier,
        # dense weights, embeddings, norms and biases lr; frozen parameters are left out.
        self.optimizer = torch.optim.AdamW(
            snn.param_groups(self.model, lr=self.lr, weight_decay=self.weight_decay),
            betas=(0.9, 0.95),
        )
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.batches = torch.Generator().manual_seed(self.seed)  # the same for every run
        self.params, self.trainable = count(self.model), count(self.model, trainable=True)

    @property
    def progress(self) -> float:
        return (self.steps if self.by_steps else self.seconds) / self.budget

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def step(self, cfg: Config, train_data: torch.Tensor, device: str) -> float:
        start = time.perf_counter()
        factor = learning_rate_factor(self.progress, cfg.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        high = len(train_data) - cfg.seq_len - 1
        starts = torch.randint(high, (cfg.batch,), generator=self.batches)
        x, y = batch_at(train_data, starts, cfg.seq_len, device)
        loss = loss_of(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())  # waits for the device, so the clock is honest on GPUs
        self.seconds += time.perf_counter() - start
        self.steps += 1
        self.tokens += x.numel()
        return value


def train_in_turns(
    phase: str,
    runs: list[Run],
    cfg: Config,
    train_data: torch.Tensor,
    val_batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: str,
) -> None:
    """Train `runs` to their budgets a step at a time, always the one that has trained
    least, evaluating each `cfg.evals` times on the way (off the clock)."""
    for run in runs:
        run.model.train()
        run.curve.append((0.0, evaluate(run.model, val_batches)))
    last_draw = 0.0
    while unfinished := [r for r in runs if r.progress < 1]:
        run = min(unfinished, key=lambda r: r.progress)
        run.step(cfg, train_data, device)
        if run.next_eval / cfg.evals <= run.progress < 1:
            run.curve.append((run.seconds, evaluate(run.model, val_batches)))
            run.next_eval += 1
        if time.monotonic() - last_draw > 0.5:
            show_progress(phase, runs)
            last_draw = time.monotonic()
    for run in runs:
        run.curve.append((run.seconds, evaluate(run.model, val_batches)))
    show_progress(phase, runs)
    sys.stderr.write("\n")


def show_progress(phase: str, runs: list[Run]) -> None:
    done = min(1.0, min(r.progress for r in runs))
    parts = "  ".join(f"{r.name.split()[0]} {r.curve[-1][1]:.3f}" for r in runs)
    sys.stderr.write(f"\r  {phase:<9}{100 * done:3.0f}%  val: {parts} ")
    sys.stderr.flush()


# -- reporting ----------------------------------------------------------------------
def print_table(rows: list[Run]) -> None:
    print(
        f"{'run':<36}{'params':>11}{'trainable':>11}{'steps':>7}{'train s':>9}"
        f"{'tokens/s':>10}{'val start':>11}{'val end':>9}"
    )
    for r in rows:
        print(
            f"{r.name:<36}{r.params:>11,}{r.trainable:>11,}{r.steps:>7}{r.seconds:>9.1f}"
            f"{r.tokens_per_s:>10,.0f}{r.curve[0][1]:>11.4f}{r.curve[-1][1]:>9.4f}"
        )


def plot(pretrain: list[Run], finetune: list[Run], cfg: Config, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    colours = {"(a)": "C0", "(b)": "C1", "(c)": "C2", "(d)": "C3"}
    for run in pretrain + finetune:
        times, losses = zip(*run.curve, strict=True)
        key = run.name[:3]
        colour = colours.get(key, "0.45")
        style = "--" if run.offset < 0 else "-"  # pretraining dashed
        ax.plot(
            [run.offset + t for t in times], losses, style, marker="o", markersize=3,
            color=colour, label=f"{run.name} ({run.steps} steps)",
        )  # fmt: skip
    ax.axvline(0, color="0.6", linewidth=0.8)
    unit = "steps" if cfg.steps else "s"
    ax.set_xlabel(f"training time ({unit}); 0 = the pretrained checkpoint")
    ax.set_ylabel("validation loss (nats / char)")
    ax.set_title(
        f"Char-level GPT-2 on Python stdlib source: d={cfg.d_model}, {cfg.n_layers} layers, "
        f"batch {cfg.batch} x {cfg.seq_len}, Monarch nblocks={cfg.nblocks}",
        fontsize=9,
    )
    # The untrained models' first points (~log 96) would flatten the rest.
    late = [loss for r in pretrain for _, loss in r.curve[1:]]
    late += [loss for r in finetune for _, loss in r.curve]
    ax.set_ylim(min(late) - 0.05, max(late) + 0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


# -- the workflows ------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few steps (for tests)")
    parser.add_argument(
        "--seconds", type=float, help="training time of each fine-tuning run (default 50)"
    )
    parser.add_argument(
        "--pretrain-seconds",
        type=float,
        help="training time of each pretraining run: the dense model and (c)'s Monarch phase "
        "(default 120)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="where to save the plot (default finetune_gpt2.png in the temporary directory)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--finetune-lr", type=float, help="peak learning rate of the fine-tuning runs (1e-3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.smoke:
        cfg = Config(
            d_model=32, n_layers=1, n_heads=2, seq_len=16, batch=4, nblocks=4, lr=3e-3,
            finetune_lr=1e-3, weight_decay=0.1, warmup=0.2, text_chars=20_000, val_windows=8,
            pretrain=4, finetune=3, steps=True, evals=2,
        )  # fmt: skip
    else:
        cfg = Config(
            d_model=128, n_layers=4, n_heads=4, seq_len=128, batch=8, nblocks=4, lr=3e-3,
            finetune_lr=1e-3, weight_decay=0.1, warmup=0.05, text_chars=3_000_000,
            val_windows=48, pretrain=120.0, finetune=50.0, steps=False, evals=4,
        )  # fmt: skip
    if args.seconds is not None:
        cfg.finetune, cfg.steps = args.seconds, False
    if args.pretrain_seconds is not None:
        cfg.pretrain, cfg.steps = args.pretrain_seconds, False
    if args.finetune_lr is not None:
        cfg.finetune_lr = args.finetune_lr
    device, unit = args.device, ("steps" if cfg.steps else "s")

    text = load_text(cfg.text_chars)
    data = encode(text)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    # A fixed set of validation windows, evenly spread over the held-out text.
    starts = torch.linspace(0, len(val_data) - cfg.seq_len - 1, cfg.val_windows).long()
    val_batches = [batch_at(val_data, s, cfg.seq_len, device) for s in starts.split(16)]
    probe = val_batches[0][0]  # for the checks that surgery keeps the outputs
    print(
        f"text: {len(text):,} characters of Python stdlib source ({len(train_data):,} train / "
        f"{len(val_data):,} validation), vocabulary {len(VOCAB)}"
    )
    print(
        f"model: GPT-2, d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"context {cfg.seq_len}, batch {cfg.batch}; AdamW (x muP multipliers), peak lr "
        f"{cfg.lr:g} pretraining, {cfg.finetune_lr:g} fine-tuning; budgets "
        f"{cfg.pretrain:g} {unit} per pretraining run, {cfg.finetune:g} {unit} per "
        f"fine-tuning run, on {device}" + (f" ({args.threads} threads)" if device == "cpu" else "")
    )
    run_start = time.perf_counter()

    def run(name: str, model: nn.Module, phase: int) -> Run:
        pretraining = phase == 1
        return Run(
            name, model, lr=cfg.lr if pretraining else cfg.finetune_lr,
            budget=cfg.pretrain if pretraining else cfg.finetune, by_steps=cfg.steps,
            offset=-cfg.pretrain if pretraining else 0.0, weight_decay=cfg.weight_decay,
            seed=args.seed + phase,
        )  # fmt: skip

    # -- phase 1: the "pretrained" dense model, and (c)'s Monarch phase, from the same init
    dense = gpt2(cfg, device, args.seed)
    sparse = gpt2(cfg, device, args.seed)
    report = snn.replace_linear(sparse, "monarch", filter=MLPS, nblocks=cfg.nblocks)
    print(f"\n(c) a fresh GPT-2 with Monarch MLPs (no projection: μP initialisation)\n{report}")
    pretrain = [
        run("dense (the pretrained model)", dense, 1),
        run("(c) Monarch MLPs from scratch", sparse, 1),
    ]
    print(f"\nphase 1: pretraining, {cfg.pretrain:g} {unit} each, in turns")
    train_in_turns("pretrain", pretrain, cfg, train_data, val_batches, device)

    # -- phase 2: four ways on from there, the same budget each
    # (a) project the MLPs onto Monarch; everything trains on.
    projected = copy.deepcopy(dense)
    report = snn.replace_linear(
        projected, "monarch", filter=MLPS, project=True, nblocks=cfg.nblocks
    )
    print(f"\n(a) the pretrained MLPs projected onto Monarch\n{report}")
    # (b) Monarch adapters on every linear layer of the frozen blocks.
    adapted = copy.deepcopy(dense)
    report = snn.add_adapters(adapted, "monarch", filter=BLOCKS, nblocks=cfg.nblocks)
    print(f"\n(b) Monarch adapters on the frozen model\n{report}")
    # (c) back to a plain dense GPT-2; its optimizer is rebuilt over the dense weights.
    before = copy.deepcopy(sparse)
    report = snn.densify(sparse)
    print(f"\n(c) the Monarch MLPs densified\n{report}")
    densify_change = max_logit_change(before, sparse, probe)
    del before
    finetune = [
        run("(a) project MLPs onto Monarch", projected, 2),
        run("(b) Monarch adapters, merged", adapted, 2),
        run("(c) Monarch MLPs -> densify", sparse, 2),
        run("(d) dense (baseline)", copy.deepcopy(dense), 2),
    ]
    print(f"\nphase 2: fine-tuning, {cfg.finetune:g} {unit} each, in turns")
    train_in_turns("finetune", finetune, cfg, train_data, val_batches, device)

    # -- what the surgery kept: outputs through merging, densifying, saving and loading
    print("\nchecks (largest change of a logit, relative to the largest logit):")
    adapter_tensors = snn.adapter_state_dict(adapted)
    before = copy.deepcopy(adapted)
    snn.merge_adapters(adapted)
    merged_change = max_logit_change(before, adapted, probe)
    del before
    merged_val = evaluate(adapted, val_batches)
    plain = all(type(m).__module__.startswith(("transformers", "torch")) for m in adapted.modules())
    print(
        f"  (b) merge_adapters: {merged_change:.1e}; the merged model is a plain GPT-2: {plain}, "
        f"{count(adapted):,} parameters; validation loss {merged_val:.4f} "
        f"(adapted {finetune[1].curve[-1][1]:.4f}); the deltas alone were "
        f"{sum(t.numel() for t in adapter_tensors.values()):,} numbers in "
        f"{len(adapter_tensors)} tensors (adapter_state_dict)"
    )
    print(f"  (c) densify: {densify_change:.1e}")
    with tempfile.TemporaryDirectory() as folder:
        from transformers.utils import logging

        logging.disable_progress_bar()  # of writing the checkpoint
        projected.save_pretrained(folder)
        reloaded = snn.from_pretrained(type(projected), folder).to(device)
        saved_change = max_logit_change(projected.eval(), reloaded, probe)
    print(f"  (a) save_pretrained, then structlin.nn.from_pretrained: {saved_change:.1e}")
    changes = {"merging": merged_change, "densifying": densify_change, "reloading": saved_change}
    # float32: W x + Δ x and (W + Δ) x round differently, by a few 1e-7 of the largest logit
    failed = [what for what, change in changes.items() if not change <= 1e-4]

    print(
        f"\nvalidation loss in nats per character over {cfg.val_windows} fixed "
        f"windows of {cfg.seq_len}; params: all the model's parameters while it trained "
        f"(adapters: base and deltas), tied ones once"
    )
    print_table(pretrain + finetune)
    a, b, c, d = (r.curve[-1][1] for r in finetune)
    print(
        f"\nfrom the same checkpoint and {cfg.finetune:g} {unit} each: (a) project "
        f"{a - d:+.4f}, (b) adapters {b - d:+.4f} nats/char against (d) dense fine-tuning."
    )
    print(
        f"from scratch, {cfg.pretrain + cfg.finetune:g} {unit} each: (c) Monarch MLPs then dense "
        f"{c - d:+.4f} nats/char against (d) dense throughout."
    )
    print(f"total time {time.perf_counter() - run_start:.0f} s, evaluation and surgery included")

    if args.plot:
        plot(pretrain, finetune, cfg, args.plot)
    elif args.smoke:
        # Draw the plot (so the tests cover it) without leaving a file behind.
        with tempfile.TemporaryDirectory() as folder:
            plot(pretrain, finetune, cfg, os.path.join(folder, "finetune_gpt2.png"))
    else:
        plot(pretrain, finetune, cfg, os.path.join(tempfile.gettempdir(), "finetune_gpt2.png"))
    if failed:
        print(f"FAILED: {', '.join(failed)} changed the model's outputs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
