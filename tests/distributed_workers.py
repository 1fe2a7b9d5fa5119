"""Worker processes for `tests/nn/test_distributed.py`: structured layers under DDP and FSDP2.

The workers live in a module of their own (importable as `distributed_workers`,
since `tests/` is on `sys.path`) because `torch.multiprocessing.spawn` starts fresh
interpreters that import the worker function by its module name, which a test
module collected with `--import-mode=importlib` does not have.

Each run trains the same small model of [`structlin.nn.Linear`][structlin.nn.Linear]
layers (a weight-normalised Monarch layer, then a BTT layer) with AdamW over
[`param_groups`][structlin.nn.param_groups] on `world` processes, each on its
slice of every batch, and records per step the global loss and the full gradient
of every parameter. [`reference`][] does the same on one process with whole
batches, which is what data-parallel training must reproduce: the mean loss over a
batch split into equal slices is the mean of the slices' mean losses, and so is its
gradient.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import structlin.nn as snn

D_IN, D_HIDDEN, D_OUT = 16, 32, 8
BATCH = 8  # rows per step, split evenly across the processes
LR, WEIGHT_DECAY = 1e-2, 0.1


def make_model(seed: int = 0) -> nn.Sequential:
    """Monarch (weight-normalised) -> GELU -> BTT, float32, the same for every seed."""
    torch.manual_seed(seed)
    return nn.Sequential(
        snn.Linear(D_IN, D_HIDDEN, "monarch", nblocks=4, weight_norm=True),
        nn.GELU(),
        snn.Linear(D_HIDDEN, D_OUT, "btt", rank=2),
    )


def make_batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(BATCH, D_IN, generator=generator),
            torch.randn(BATCH, D_OUT, generator=generator),
        )
        for _ in range(steps)
    ]


def optimizer(model: nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(snn.param_groups(model, lr=LR, weight_decay=WEIGHT_DECAY))


def group_lrs(opt: torch.optim.Optimizer, strip: str = "") -> dict[str, float]:
    """The learning rate each parameter name gets (with a wrapper prefix `strip` removed)."""
    return {
        name.removeprefix(strip): group["lr"]
        for group in opt.param_groups
        for name in group["names"]
    }


def reference(steps: int) -> dict[str, Any]:
    """Losses and gradients per step of the single-process run on whole batches."""
    model = make_model()
    opt = optimizer(model)
    losses, grads = [], []
    for x, y in make_batches(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        opt.step()
    return {"losses": losses, "grads": grads, "lrs": group_lrs(opt), "model": model}


# -- process management ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker: Callable[..., None], world: int, *args: Any) -> None:
    """Run `worker(rank, world, port, *args)` on `world` fresh processes joined by gloo."""
    mp.spawn(worker, args=(world, free_port(), *args), nprocs=world, join=True)


@contextmanager
def _process_group(rank: int, world: int, port: int) -> Iterator[None]:
    """Join the gloo group for the body, and leave it together with the other ranks."""
    torch.set_num_threads(1)  # the processes share the machine's cores
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        yield
        # A rank that tears its group down while a peer is still working (rank 0 writes
        # extra files) can abort in gloo's destructor (seen once in CI: SIGABRT,
        # "terminate called without an active exception"); the barrier lines them up.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _local(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    return t.chunk(world)[rank]


def _global_loss(loss: torch.Tensor) -> torch.Tensor:
    total = loss.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def _record_run(
    model: nn.Module,
    rank: int,
    world: int,
    out: str,
    steps: int,
    full_grad: Callable[[torch.Tensor], torch.Tensor],
    prefix: str = "",
) -> None:
    """Train the wrapped `model` on this rank's slices and save, per step, the global loss
    and every parameter's full gradient (names without the wrapper's `prefix`)."""
    opt = optimizer(model)
    losses, grads = [], []
    for x, y in make_batches(steps):
        opt.zero_grad()
        local = nn.functional.mse_loss(model(_local(x, rank, world)), _local(y, rank, world))
        local.backward()  # the engine averages the gradients over the processes here
        losses.append(_global_loss(local))
        grads.append(
            {name.removeprefix(prefix): full_grad(p.grad) for name, p in model.named_parameters()}
        )
        opt.step()
    torch.save(
        {"losses": losses, "grads": grads, "lrs": group_lrs(opt, prefix)},
        os.path.join(out, f"rank{rank}.pt"),
    )


# -- DDP -------------------------------------------------------------------------------


def ddp_worker(rank: int, world: int, port: int, out: str, steps: int) -> None:
    from torch.nn.parallel import DistributedDataParallel

    with _process_group(rank, world, port):
        model = DistributedDataParallel(make_model())
        _record_run(model, rank, world, out, steps, torch.Tensor.clone, prefix="module.")


# -- FSDP2 -----------------------------------------------------------------------------


def shard(model: nn.Sequential, world: int) -> nn.Sequential:
    """FSDP2: each structured layer its own unit (sharded along dim 0), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for layer in model:
        if isinstance(layer, snn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def fsdp_worker(rank: int, world: int, port: int, out: str, steps: int) -> None:
    with _process_group(rank, world, port):
        # Each rank holds a shard of every gradient (a DTensor); gather the full one.
        model = shard(make_model(), world)
        _record_run(model, rank, world, out, steps, lambda grad: grad.full_tensor())


# -- distributed checkpoint ------------------------------------------------------------


def probe() -> torch.Tensor:
    """The input whose outputs a saved and a loaded model must agree on."""
    return torch.randn(5, D_IN, generator=torch.Generator().manual_seed(2))


def checkpoint_worker(rank: int, world: int, port: int, out: str, steps: int) -> None:
    """Train the FSDP2 model `steps` steps, save a sharded checkpoint of the model and
    the optimizer with `torch.distributed.checkpoint`, then take one more step.

    Rank 0 writes the outputs on [`probe`][] before and after that step.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    with _process_group(rank, world, port):
        model = shard(make_model(), world)
        opt = optimizer(model)
        *train, (x, y) = make_batches(steps + 1)
        for xs, ys in train:
            opt.zero_grad()
            nn.functional.mse_loss(
                model(_local(xs, rank, world)), _local(ys, rank, world)
            ).backward()
            opt.step()
        model_state, optim_state = get_state_dict(model, opt)  # this rank's shards (DTensors)
        dcp.save(
            {"model": model_state, "optim": optim_state}, checkpoint_id=os.path.join(out, "ckpt")
        )
        with torch.no_grad():
            saved = model(probe())
        opt.zero_grad()
        nn.functional.mse_loss(model(_local(x, rank, world)), _local(y, rank, world)).backward()
        opt.step()
        with torch.no_grad():
            stepped = model(probe())
        if rank == 0:
            torch.save({"saved": saved, "stepped": stepped}, os.path.join(out, "outputs.pt"))


def load_checkpoint(path: str) -> tuple[nn.Sequential, torch.optim.AdamW]:
    """A fresh single-process model and optimizer with the state of a sharded checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = make_model(seed=123)  # different parameters: the checkpoint must replace them
    opt = optimizer(model)
    model_state, optim_state = get_state_dict(model, opt)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=path, no_dist=True)  # a single-process load, no process group
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return model, opt
