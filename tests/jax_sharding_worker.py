"""Run by `tests/nn/test_jax_sharding.py` in a fresh interpreter with 4 CPU devices.

`XLA_FLAGS=--xla_force_host_platform_device_count=4` only takes effect if it is set
before JAX is imported, which the test process has already done, hence a subprocess.
A Monarch layer's block-diagonal factors are sharded along the block axis over a
4-device mesh (each device holds one whole block); the jitted forward pass and
gradient must equal the unsharded ones. Exits non-zero on any mismatch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import structlin as sl
from structlin.nn.jax import Linear

assert len(jax.devices()) == 4, jax.devices()
# Auto axes: XLA propagates the shardings (GSPMD). Under Explicit axes (sharding in
# types) the block matmul of a sharded factor and an unsharded input is rejected.
mesh = jax.make_mesh((4,), ("blocks",), axis_types=(AxisType.Auto,))


def place(a: jax.Array) -> jax.Array:
    """Block stacks (nblocks, q, p) along the block axis; everything else replicated."""
    spec = P("blocks") if a.ndim == 3 else P()
    return jax.device_put(a, NamedSharding(mesh, spec))


def close(a: jax.Array, b: jax.Array) -> None:
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5
    )  # float32, summed in another order


x = jax.random.normal(jax.random.key(1), (8, 64))

# The operator alone: M @ x for a Monarch matrix whose factors are sharded by block.
M = sl.Monarch.random(64, 64, nblocks=4, rng=0).to(backend="jax", dtype=jnp.float32)
apply = jax.jit(lambda op, v: op @ v)
sharded_M = jax.tree.map(place, M)
assert all(s.data.shape == (1, 16, 16) for s in sharded_M.blkdiag1.addressable_shards)
close(apply(sharded_M, x.T), apply(M, x.T))

# The layer: forward pass and gradient, with weight normalisation.
layer = Linear.init(jax.random.key(0), 64, 64, "monarch", nblocks=4, weight_norm=True)
sharded = jax.tree.map(place, layer)
forward = jax.jit(lambda lin, v: lin(v))
close(forward(sharded, x), forward(layer, x))

grad = jax.jit(jax.grad(lambda lin, v: jnp.sum(jnp.tanh(lin(v)) ** 2)))
g_sharded, g = grad(sharded, x), grad(layer, x)
for a, b in zip(jax.tree.leaves(g_sharded), jax.tree.leaves(g), strict=True):
    close(a, b)
# The gradient of a block stack stays sharded by block.
for name, value in g_sharded.named_parameters().items():
    if value.ndim == 3:
        assert value.sharding.spec == P("blocks"), (name, value.sharding)
print("ok")
