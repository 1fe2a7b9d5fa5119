"""One jitted JAX training step of a Monarch MLP sharded over 4 CPU devices, against 1 device.

The model is 2 residual MLP blocks, `x + W_2 gelu(W_1 x)` with Monarch `W_1: d -> 4d`
and `W_2: 4d -> d` (d = 1024, `structlin.nn.jax.Linear`, float32), on a batch of
1024 rows. A step is the mean-squared error to a fixed target, its gradient and an
SGD update, all inside one `jax.jit`. The 4 devices are XLA's host-platform
devices (`--xla_force_host_platform_device_count=4`), each run in a process of
its own, on mesh axes of `jax.make_mesh`'s default type (Explicit):

- "blocks": every Monarch factor split by block (`structlin.block_shardings`), the
  batch replicated; each stride permutation between factors is an all-to-all.
- "data": the batch split by rows, the weights replicated; the gradients are
  all-reduced.
- "data x blocks": a 2 x 2 mesh of both.

On a CPU the 4 "devices" share the machine's cores and the collectives are memory
copies, so this measures the overhead of sharding, not a speed-up: that needs
devices with cores (or chips) of their own.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import harness

NAME = "sharding"
DESCRIPTION = __doc__
PLOT = None

HERE = Path(__file__).resolve().parent
# Each layout: (mesh shape, mesh axis names, the axis splitting the blocks, the axis
# splitting the batch); `None` is one device, unsharded.
LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[str, ...], str | None, str | None] | None] = {
    "1 device": None,
    "blocks": ((4,), ("blocks",), "blocks", None),
    "data": ((4,), ("data",), None, "data"),
    "data x blocks": ((2, 2), ("data", "blocks"), "blocks", "data"),
}


def _devices(layout: str) -> int:
    mesh = LAYOUTS[layout]
    return 1 if mesh is None else math.prod(mesh[0])


def run(settings: harness.Settings) -> list[harness.Record]:
    if importlib.util.find_spec("jax") is None:
        print("   JAX is not installed: skipped", flush=True)
        return []
    d, batch, nblocks = (64, 16, [4]) if settings.quick else (1024, 1024, [4, 32])
    rows: list[harness.Record] = []
    for nb in nblocks:
        case = {"d": d, "batch": batch, "nblocks": nb}
        timings: dict[str, tuple[float, float, float | None]] = {}
        for devices in sorted({_devices(name) for name in LAYOUTS}):
            layouts = [name for name in LAYOUTS if _devices(name) == devices]
            timings.update(_in_subprocess(devices, layouts, case, settings))
        base = timings["1 device"][0]
        timings = {name: (m, s, m / base) for name, (m, s, _) in timings.items()}
        rows += harness.records(NAME, case, timings)
        for name, (median, _, ratio) in timings.items():
            print(f"   nb={nb} {name:14s} {median * 1e3:8.1f} ms/step (x{ratio:.2f})", flush=True)
    return rows


def _in_subprocess(
    devices: int, layouts: list[str], case: dict, settings: harness.Settings
) -> dict[str, tuple[float, float, float | None]]:
    """Time `layouts` in a fresh interpreter with `devices` XLA host devices (the flag
    takes effect only before JAX is imported)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    job = {"layouts": layouts, "case": case, "quick": settings.quick}
    out = subprocess.run(
        [sys.executable, __file__, json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sharding benchmark on {devices} devices failed:\n{out.stderr}")
    return {name: tuple(t) for name, t in json.loads(out.stdout.splitlines()[-1]).items()}


def _time_layouts(job: dict) -> dict[str, tuple[float, float, float | None]]:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import structlin as sl
    from structlin.nn.jax import Linear

    d, batch, nb = job["case"]["d"], job["case"]["batch"], job["case"]["nblocks"]
    keys = jax.random.split(jax.random.key(0), 6)
    model = [
        (
            Linear.init(keys[2 * i], d, 4 * d, "monarch", nblocks=nb),
            Linear.init(keys[2 * i + 1], 4 * d, d, "monarch", nblocks=nb),
        )
        for i in range(2)
    ]
    x = jax.random.normal(keys[4], (batch, d))
    target = jax.random.normal(keys[5], (batch, d))

    def loss(model, x, target):
        for up, down in model:
            x = x + down(jax.nn.gelu(up(x)))
        return jnp.mean((x - target) ** 2)

    @jax.jit
    def step(model, x, target):
        value, grads = jax.value_and_grad(loss)(model, x, target)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, model, grads), value

    contenders = {}
    for layout in job["layouts"]:
        if LAYOUTS[layout] is None:
            contenders[layout] = _stepper(step, model, x, target, None)
            continue
        shape, names, blocks, data = LAYOUTS[layout]
        mesh = jax.make_mesh(shape, names)
        placed = (
            jax.device_put(model, sl.block_shardings(model, mesh, blocks))
            if blocks
            else jax.device_put(model, NamedSharding(mesh, P()))
        )
        rows = NamedSharding(mesh, P(data))
        contenders[layout] = _stepper(
            step, placed, jax.device_put(x, rows), jax.device_put(target, rows), mesh
        )
    settings = harness.Settings.make(job["quick"], "cpu")
    return harness.compare(contenders, settings)


def _stepper(step, model, x, target, mesh):
    import jax

    def call():
        if mesh is None:
            return jax.block_until_ready(step(model, x, target))
        with jax.set_mesh(mesh):
            return jax.block_until_ready(step(model, x, target))

    return call


if __name__ == "__main__":
    print(json.dumps(_time_layouts(json.loads(sys.argv[1]))))
