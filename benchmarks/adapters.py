"""A training step of Monarch and BTT adapters against a LoRA adapter of the same trainable parameter count.

Each contender is one frozen `d x d` `nn.Linear` (with bias) wrapped by
`structlin.nn.add_adapters`, so `y = x W^T + b + x Δ^T` with a trainable `Δ`:
"lora" is `Δ = U V` (`"lowrank"`, rank `r`), "monarch" a Monarch matrix with
`nblocks` blocks, "btt" a two-core BTT of rank `r`. A case fixes the trainable
parameter count ("params", the x axis of the plot), shared exactly by the three:
`2 d^1.5` (Monarch `nblocks = sqrt(d)`, BTT rank 1, LoRA rank `sqrt(d)`) and `d^2 / 8`
(Monarch `nblocks = 16`, BTT rank `sqrt(d) / 16`, LoRA rank `d / 16`); the "spec"
column names each. "frozen base" is the bare frozen layer, the floor every
adapter adds to. The input, a batch of `tokens` rows (float32), requires a
gradient, as the output of an earlier layer would, so the backward pass also
multiplies through the frozen `W`. A step is forward, mean-squared error to a
fixed target, backward and an AdamW update of the delta (over
`structlin.nn.param_groups`, μP learning rates; none for "frozen base"),
gradients set to `None` after it. The ratio is against "lora". "peak MiB" is the
most memory the step held above what was allocated before it (activations,
gradients, temporaries; weights and optimizer state exist from a warm-up step),
from PyTorch's profiler on the CPU (every allocation and free the step makes
through PyTorch's allocator) and `torch.cuda.max_memory_allocated` on a GPU.
Steps of a second or more (`d = 4096`) are timed over 5 rounds, not 7; on a busy
machine their ratios move by about 0.1 from run to run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import harness
import torch
from layers import peak_mib
from torch import nn

import structlin.nn as slnn

NAME = "adapters"
DESCRIPTION = __doc__
PLOT = ("params", [])


def budgets(d: int) -> dict[str, dict[str, dict]]:
    """For each trainable parameter count, the adapters that have exactly that many."""
    root = math.isqrt(d)
    out = {
        2 * d * root: {
            "lora": {"structure": "lowrank", "rank": root},
            "monarch": {"structure": "monarch", "nblocks": root},
            "btt": {"structure": "btt", "rank": 1},
        }
    }
    if root >= 32:  # d^2 / 8 = 2 d (d / 16): a whole BTT rank sqrt(d) / 16 exists from d = 1024
        out[d * d // 8] = {
            "lora": {"structure": "lowrank", "rank": d // 16},
            "monarch": {"structure": "monarch", "nblocks": 16},
            "btt": {"structure": "btt", "rank": root // 16},
        }
    return out


def make_step(
    d: int, tokens: int, spec: dict | None, device: str
) -> tuple[Callable[[], None], int]:
    """A training step of a frozen `d x d` layer with the adapter `spec` (none: the bare
    frozen layer), and the adapter's number of trainable parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, d)).to(device)
    if spec is None:
        model.requires_grad_(False)
        optimizer = None
    else:
        spec = dict(spec)
        slnn.add_adapters(model, spec.pop("structure"), **spec)  # freezes the base layer
        optimizer = torch.optim.AdamW(slnn.param_groups(model, lr=1e-3, weight_decay=0.01))
    x = torch.randn(tokens, d, device=device, requires_grad=True)
    target = torch.randn(tokens, d, device=device)

    def step() -> None:
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        x.grad = None

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, trainable


def fewer_rounds(settings: harness.Settings, seconds: float) -> harness.Settings:
    return dataclasses.replace(settings, rounds=min(settings.rounds, 5 if seconds >= 1 else 7))


def run(settings: harness.Settings) -> list[harness.Record]:
    sizes = [(64, 32)] if settings.quick else [(1024, 2048), (4096, 2048)]
    rows: list[harness.Record] = []
    for d, tokens in sizes:
        for params, adapters in budgets(d).items():
            steps, extra = {}, {}
            for name, spec in [*adapters.items(), ("frozen base", None)]:
                step, trainable = make_step(d, tokens, spec, settings.device)
                if spec is not None and trainable != params:
                    raise AssertionError(f"{name} {spec} has {trainable} parameters, not {params}")
                step()  # the optimizer's state, the rule caches
                steps[name] = step
                described = {k: v for k, v in (spec or {}).items() if k != "structure"}
                extra[name] = {
                    "spec": " ".join(f"{k}={v}" for k, v in described.items()) or "-",
                    "trainable": trainable,
                    "peak MiB": peak_mib(step, settings.device),
                }
            sync = harness.synchronizer(settings.device)
            sync()
            start = time.perf_counter()
            steps["lora"]()
            sync()
            seconds = time.perf_counter() - start
            timings = harness.compare(steps, fewer_rounds(settings, seconds), baseline="lora")
            case = {"d": d, "tokens": tokens, "params": params}
            rows += harness.records(NAME, case, timings, extra)
            for name, (median, _, ratio) in timings.items():
                print(
                    f"   d={d} tokens={tokens} params={params:,} {name:12s} "
                    f"{extra[name]['spec']:10s} {median * 1e3:8.1f} ms/step (x{ratio:.2f} LoRA), "
                    f"peak {extra[name]['peak MiB']:.0f} MiB",
                    flush=True,
                )
    return rows
