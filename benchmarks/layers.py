"""One training step of an MLP with structlin layers against `nn.Linear`, with the step's peak memory.

The model is 4 pre-norm residual MLP blocks, `x + W_2 gelu(W_1 LayerNorm(x))` with
`W_1: d -> 4d` and `W_2: 4d -> d` (d = 1024), applied to a batch of rows (float32).
A step is forward, mean-squared error to a fixed target, backward and an AdamW
update with `structlin.nn.param_groups` (muP learning rates); gradients are set to
`None` between steps, as `zero_grad()` does by default. "peak MiB" is the most
memory the step itself held above what was allocated before it (activations,
gradients, temporaries; the weights and the optimizer's state are allocated by a
warm-up step before), from PyTorch's profiler on the CPU and from
`torch.cuda.max_memory_allocated` on a GPU. "params" counts the MLP weights.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import harness
import torch
from torch import nn

import structlin.nn as slnn

NAME = "layers"
DESCRIPTION = __doc__
PLOT = ("batch", [])

STRUCTURES: dict[str, dict] = {
    "dense": {},
    "monarch nb=4": {"structure": "monarch", "nblocks": 4},
    "monarch nb=32": {"structure": "monarch", "nblocks": 32},
    "btt r=1": {"structure": "btt", "rank": 1},
}


class Block(nn.Module):
    def __init__(self, d: int, hidden: int, spec: dict):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        if spec:
            self.up = slnn.Linear(d, hidden, **spec)
            self.down = slnn.Linear(hidden, d, **spec)
        else:
            self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def make_step(spec: dict, d: int, batch: int, device: str) -> tuple[Callable[[], None], int]:
    """A training step closure for a fresh model, and the model's number of weight entries."""
    torch.manual_seed(0)
    model = nn.Sequential(*[Block(d, 4 * d, spec) for _ in range(4)]).to(device)
    optimizer = torch.optim.AdamW(slnn.param_groups(model, lr=1e-3, weight_decay=0.01))
    x = torch.randn(batch, d, device=device)
    target = torch.randn(batch, d, device=device)

    def step() -> None:
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    weights = sum(
        p.numel() for name, p in model.named_parameters() if "norm" not in name and p.ndim > 1
    )
    return step, weights


def peak_mib(step: Callable[[], None], device: str) -> float:
    """The most memory `step` held at once above what was allocated before it, in MiB."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each allocation and free is an instant "[memory]" event of the trace, with its size.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    sizes = [
        e["args"]["Bytes"]
        for e in sorted(events, key=lambda e: e["ts"])
        if e.get("name") == "[memory]"
    ]
    current = peak = 0
    for size in sizes:
        current += size
        peak = max(peak, current)
    return peak / 2**20


def run(settings: harness.Settings) -> list[harness.Record]:
    d, batches = (64, [32]) if settings.quick else (1024, [1024, 4096])
    rows: list[harness.Record] = []
    for batch in batches:
        steps, extra = {}, {}
        for name, spec in STRUCTURES.items():
            if spec.get("nblocks", 0) > d // 2:
                continue
            step, weights = make_step(spec, d, batch, settings.device)
            step()  # the optimizer's state, the rule caches
            extra[name] = {"peak MiB": peak_mib(step, settings.device), "params": weights}
            steps[name] = step
        timings = harness.compare(steps, settings, baseline="dense")
        rows += harness.records(NAME, {"d": d, "batch": batch}, timings, extra)
        for name, (median, _, ratio) in timings.items():
            print(
                f"   batch={batch} {name:14s} {median * 1e3:8.1f} ms/step (x{ratio:.2f}), "
                f"peak {extra[name]['peak MiB']:.0f} MiB",
                flush=True,
            )
    return rows
