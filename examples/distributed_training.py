"""Train structured layers on several processes with FSDP2 (or DDP), save a sharded
checkpoint, and load it into one process.

    python examples/distributed_training.py                 # 2 CPU processes (gloo), FSDP2
    python examples/distributed_training.py --engine ddp    # the same with DDP
    torchrun --nproc-per-node 8 examples/distributed_training.py   # 8 GPUs (nccl)

The model is a residual MLP whose layers are `structlin.nn.Linear` (weight-normalised
Monarch up-projections, BTT down-projections) learning a fixed random teacher, with
AdamW over `structlin.nn.param_groups` (μP learning rates). Under FSDP2 each
structured layer is its own `fully_shard` unit: parameters are sharded along dim 0,
which for a Monarch factor `(nblocks, q, p)` is the block axis, so each process
stores whole blocks; they are all-gathered for the forward and backward passes and
the gradients reduce-scattered, as for any FSDP2 module. The checkpoint is written
with `torch.distributed.checkpoint` (each process its shards) and, launched without
torchrun, read back into a single process whose outputs must equal the trained
model's.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import structlin.nn as snn


class Block(nn.Module):
    def __init__(self, d: int, nblocks: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = snn.Linear(d, 4 * d, "monarch", nblocks=nblocks, weight_norm=True)
        self.down = snn.Linear(4 * d, d, "btt", rank=2, zero_init_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def make_model(d: int, depth: int, nblocks: int) -> nn.Sequential:
    torch.manual_seed(0)  # every process starts from the same weights
    return nn.Sequential(*[Block(d, nblocks) for _ in range(depth)])


def batches(d: int, batch: int, steps: int, seed: int = 1):
    """Inputs and the outputs of a fixed random teacher `tanh(T x)`, the same on every process."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(d, d, generator=generator) / d**0.5
    for _ in range(steps):
        x = torch.randn(batch, d, generator=generator)
        yield x, torch.tanh(x @ teacher.T)


def wrap(model: nn.Sequential, engine: str, device: torch.device) -> nn.Module:
    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for module in model.modules():
        if isinstance(module, snn.Linear):
            fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(rank: int, world: int, args: argparse.Namespace, port: int | None) -> None:
    if port is not None:  # started by this script: CPU processes joined by gloo
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
        device = torch.device("cpu")
    else:  # torchrun set RANK, WORLD_SIZE and MASTER_ADDR/PORT
        cuda = torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        device = (
            torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
        )
        if cuda:
            torch.cuda.set_device(device)
    try:
        model = wrap(make_model(args.d, args.depth, args.nblocks).to(device), args.engine, device)
        opt = torch.optim.AdamW(snn.param_groups(model, lr=args.lr, weight_decay=0.01))
        for step, (x, y) in enumerate(batches(args.d, args.batch, args.steps)):
            x, y = x.chunk(world)[rank].to(device), y.chunk(world)[rank].to(device)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % args.log_every == 0 or step == args.steps - 1:
                total = loss.detach().clone()
                dist.all_reduce(total)
                if rank == 0:
                    print(f"step {step:4d}  loss {total.item() / world:.4f}", flush=True)
        model_state, optim_state = get_state_dict(model, opt)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=args.checkpoint)
        probe = torch.randn(4, args.d, generator=torch.Generator().manual_seed(2)).to(device)
        with torch.no_grad():
            out = model(probe)
        if rank == 0:
            torch.save(out.cpu(), os.path.join(args.checkpoint, "probe_outputs.pt"))
            print(f"saved a sharded checkpoint from {world} processes to {args.checkpoint}")
    finally:
        dist.destroy_process_group()


def load_in_one_process(args: argparse.Namespace) -> None:
    """The trained model in a single process, from the sharded checkpoint."""
    model = make_model(args.d, args.depth, args.nblocks)
    opt = torch.optim.AdamW(snn.param_groups(model, lr=args.lr, weight_decay=0.01))
    model_state, optim_state = get_state_dict(model, opt)
    state = {"model": model_state, "optim": optim_state}
    with warnings.catch_warnings():  # PyTorch warns that this load runs in a single process
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(state, checkpoint_id=args.checkpoint, no_dist=True)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    probe = torch.randn(4, args.d, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(probe)
    expected = torch.load(os.path.join(args.checkpoint, "probe_outputs.pt"))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    print(
        f"loaded into 1 process: outputs agree (max difference {(out - expected).abs().max():.1e})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("fsdp", "ddp"), default="fsdp")
    parser.add_argument("--processes", type=int, default=2, help="without torchrun")
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--nblocks", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="folder (default: a temporary one; ./structlin_checkpoint under torchrun)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps of a tiny model")
    args = parser.parse_args()
    if args.smoke:
        args.d, args.batch, args.steps, args.log_every = 32, 16, 4, 1
    if "RANK" in os.environ:  # under torchrun: every process must write to the same folder
        args.checkpoint = args.checkpoint or "structlin_checkpoint"
        train(0, 0, args, port=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        args.checkpoint = args.checkpoint or os.path.join(folder, "checkpoint")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(train, args=(args.processes, args, port), nprocs=args.processes, join=True)
        load_in_one_process(args)


if __name__ == "__main__":
    main()
