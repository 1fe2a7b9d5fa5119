"""Run by `tests/test_sharding.py` in a fresh interpreter with 4 CPU devices.

`XLA_FLAGS=--xla_force_host_platform_device_count=4` only takes effect if it is set
before JAX is imported, which the test process has already done, hence a subprocess.
Every check runs, under mesh axes of both types (`Explicit`, `jax.make_mesh`'s
default, and `Auto`), and prints `ok <name>` or `FAIL <name>` with its traceback;
the test asserts that every check printed `ok`.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import structlin as sl
from structlin.nn.jax import Linear

assert len(jax.devices()) == 4, jax.devices()
AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}
CHECKS: list[Callable[[], None]] = []


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS.append(fn)
    return fn


def close(a: jax.Array, b: jax.Array) -> None:
    # float32, summed in another order
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def operators() -> dict[str, sl.LinearOperator]:
    rng = np.random.default_rng(0)
    f32 = {"backend": "jax", "dtype": jnp.float32}
    return {
        "blockdiag": sl.BlockDiag(jnp.asarray(rng.standard_normal((8, 8, 6)), jnp.float32)),
        "monarch nb=4": sl.Monarch.random(64, 64, nblocks=4, rng=0).to(**f32),
        "monarch nb=8, 48 x 64": sl.Monarch.random(48, 64, nblocks=8, rng=1).to(**f32),
        "btt 2 cores": sl.BTT.random((8, 8), (8, 8), ranks=(2,), rng=2).to(**f32),
        "btt 3 cores": sl.BTT.random((4, 4, 4), (4, 4, 4), ranks=(2, 2), rng=3).to(**f32),
    }


def expressions() -> dict[str, sl.LinearOperator]:
    """Block-sharded operators inside expressions with replicated ones."""
    rng = np.random.default_rng(4)
    M = sl.Monarch.random(64, 64, nblocks=4, rng=5).to(backend="jax", dtype=jnp.float32)
    W = sl.Dense(jnp.asarray(rng.standard_normal((64, 64)) / 8, jnp.float32))
    return {
        "permutation @ monarch": sl.Permutation(jnp.asarray(rng.permutation(64))) @ M,
        "dense @ monarch + monarch": W @ M + 2.0 * M,
        "monarch @ monarch.T": M @ M.T,
        "(I + monarch / 8)^-1": (sl.Identity(64, dtype=jnp.float32) + M / 8).inv(),
    }


def products(A: sl.LinearOperator, x: jax.Array) -> dict[str, Callable]:
    """Products of `A` with a batch of 8 vectors, each a jitted function of `(A, x)`."""
    return {
        "A @ X": jax.jit(lambda A, x: A @ x[:, : A.shape[1]].T),
        "X @ A": jax.jit(lambda A, x: x[:, : A.shape[0]] @ A),
        "A.T @ X": jax.jit(lambda A, x: A.T @ x[:, : A.shape[0]].T),
        "A @ v": jax.jit(lambda A, x: A @ x[0, : A.shape[1]]),
    }


def with_mesh(mesh: jax.sharding.Mesh, fn: Callable, *args):
    with jax.set_mesh(mesh):
        return fn(*args)


@check
def operators_sharded_by_block_match_unsharded() -> None:
    x = jax.random.normal(jax.random.key(1), (8, 64))
    for kind, axis_type in AXIS_TYPES.items():
        mesh = jax.make_mesh((4,), ("blocks",), axis_types=(axis_type,))
        # Expressions only under Explicit axes, where structlin places the shardings.
        cases = {**operators(), **(expressions() if axis_type == AxisType.Explicit else {})}
        for name, A in cases.items():
            sharded = jax.device_put(A, sl.block_shardings(A, mesh))
            blocks = [a for a in jax.tree.leaves(sharded) if "blocks" in a.sharding.spec]
            assert blocks, (kind, name)
            for block in blocks:  # each device holds whole blocks
                assert block.addressable_shards[0].data.size == block.size // 4
            for product, fn in products(A, x).items():
                try:
                    close(with_mesh(mesh, fn, sharded, x), fn(A, x))
                except Exception as e:
                    raise AssertionError(f"{kind} axes, {name}, {product}") from e


def collectives(hlo: str) -> Counter:
    return Counter(
        re.findall(
            r" (all-to-all|all-gather|all-reduce|collective-permute|reduce-scatter)(?:-start)?\(",
            hlo,
        )
    )


@check
def only_the_permutations_between_factors_communicate() -> None:
    """Under Explicit axes a block-sharded factor computes with no communication, and a
    Monarch or BTT product moves data once per non-trivial stride permutation (an
    all-to-all), never gathering a whole factor or all the activations."""
    mesh = jax.make_mesh((4,), ("blocks",))
    ops = operators()
    expected = {
        "blockdiag": {},
        "monarch nb=4": {"all-to-all": 2},
        "btt 2 cores": {"all-to-all": 2},
    }
    for name, want in expected.items():
        A = ops[name]
        A = jax.device_put(A, sl.block_shardings(A, mesh))
        x = jax.device_put(jnp.ones((A.shape[1], 16)), NamedSharding(mesh, P("blocks")))
        with jax.set_mesh(mesh):
            hlo = jax.jit(lambda A, x: A @ x).lower(A, x).compile().as_text()
        assert collectives(hlo) == Counter(want), (name, collectives(hlo))


def layers(key: jax.Array) -> dict[str, Linear]:
    k1, k2 = jax.random.split(key)
    return {
        "monarch, weight-normalised": Linear.init(
            k1, 64, 64, "monarch", nblocks=4, weight_norm=True
        ),
        "btt": Linear.init(k2, 64, 64, "btt", rank=2, bias=True),
    }


def loss(layer: Linear, x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.tanh(layer(x)) ** 2)


@check
def layers_sharded_by_block_match_unsharded() -> None:
    x = jax.random.normal(jax.random.key(1), (2, 4, 64))
    forward = jax.jit(lambda layer, x: layer(x))
    grad = jax.jit(jax.grad(loss))
    for kind, axis_type in AXIS_TYPES.items():
        mesh = jax.make_mesh((4,), ("blocks",), axis_types=(axis_type,))
        for name, layer in layers(jax.random.key(0)).items():
            sharded = jax.device_put(layer, sl.block_shardings(layer, mesh))
            try:
                close(with_mesh(mesh, forward, sharded, x), forward(layer, x))
                g_sharded, g = with_mesh(mesh, grad, sharded, x), grad(layer, x)
                for a, b in zip(jax.tree.leaves(g_sharded), jax.tree.leaves(g), strict=True):
                    close(a, b)
                if axis_type == AxisType.Explicit:  # under Auto axes XLA picks where
                    # A block stack's gradient stays where its blocks are.
                    for leaf, placed in zip(
                        jax.tree.leaves(g_sharded), jax.tree.leaves(sharded), strict=True
                    ):
                        assert leaf.sharding.is_equivalent_to(placed.sharding, leaf.ndim)
            except Exception as e:
                raise AssertionError(f"{kind} axes, {name}") from e


@check
def data_and_block_parallel_on_a_2x2_mesh() -> None:
    """Rows of the batch over `data`, blocks over `blocks`: a training step's loss and
    gradients match one device's."""
    x = jax.random.normal(jax.random.key(1), (8, 64))
    grad = jax.jit(jax.value_and_grad(lambda ls, x: loss(ls[1], jax.nn.gelu(ls[0](x)))))
    for axis_type in AXIS_TYPES.values():
        mesh = jax.make_mesh((2, 2), ("data", "blocks"), axis_types=(axis_type,) * 2)
        model = tuple(layers(jax.random.key(0)).values())
        sharded = jax.device_put(model, sl.block_shardings(model, mesh))
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        (value, g_sharded), (ref, g) = with_mesh(mesh, grad, sharded, xs), grad(model, x)
        close(value, ref)
        for a, b in zip(jax.tree.leaves(g_sharded), jax.tree.leaves(g), strict=True):
            close(a, b)


@check
def block_counts_that_do_not_split_are_refused() -> None:
    mesh = jax.make_mesh((4,), ("blocks",))
    A = sl.Monarch.random(36, 36, nblocks=6, rng=0).to(backend="jax")
    try:
        sl.block_shardings(A, mesh)
    except ValueError as e:
        message = str(e)
    else:
        raise AssertionError("6 blocks over 4 devices were accepted")
    assert "(6, 6, 6)" in message, message
    assert "size 4" in message, message


for fn in CHECKS:
    try:
        fn()
        print("ok", fn.__name__, flush=True)
    except Exception:
        print("FAIL", fn.__name__, flush=True)
        traceback.print_exc()
