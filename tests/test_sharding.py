"""`structlin.block_shardings`, and operators and layers under `jax.jit` with `NamedSharding`.

The placement rules are checked here on a one-device mesh. The sharded runs need 4
CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`), which must be
requested before JAX is imported, so they run in a subprocess
(`tests/jax_sharding_worker.py`) and report each check by name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import structlin as sl  # noqa: E402
from structlin.nn.jax import Linear  # noqa: E402

P = jax.sharding.PartitionSpec
WORKER = Path(__file__).parent / "jax_sharding_worker.py"


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((1,), ("blocks",))


def specs(tree, mesh):
    return [s.spec for s in jax.tree.leaves(sl.block_shardings(tree, mesh))]


def test_block_stacks_shard_along_their_block_axis(mesh):
    M = sl.Monarch.random(64, 64, nblocks=4, rng=0).to(backend="jax")
    assert specs(M, mesh) == [P("blocks", None, None)] * 2
    D = sl.BlockDiag(jnp.ones((4, 3, 2)))
    assert specs(D, mesh) == [P("blocks", None, None)]
    # BTT core t is (N_<t, M_>t, ., .): the first core's blocks run along axis 1, the
    # last's along axis 0, and a middle core the longer of the two (axis 0 on a tie).
    B = sl.BTT.random((2, 3, 4), (4, 5, 6), ranks=(2, 2), rng=0).to(backend="jax")
    assert [c.shape[:2] for c in B.cores] == [(1, 12), (4, 4), (20, 1)]
    assert specs(B, mesh) == [
        P(None, "blocks", None, None),
        P("blocks", None, None, None),
        P("blocks", None, None, None),
    ]
    assert specs(B.T, mesh) == specs(B, mesh)


def test_everything_else_is_replicated(mesh):
    rng = np.random.default_rng(0)
    M = sl.Monarch.random(16, 16, nblocks=4, rng=0).to(backend="jax")
    expr = {
        "product": sl.Dense(jnp.ones((16, 16))) @ M,
        "kron": sl.Kron(jnp.ones((4, 4)), jnp.ones((4, 4))),
        "lowrank": sl.LowRank(jnp.ones((16, 2)), jnp.ones((2, 16))),
        "scaled": 2.0 * sl.Permutation(jnp.asarray(rng.permutation(16))),
        "data": jnp.ones(3),
    }
    got = jax.tree.map(lambda s: s.spec, sl.block_shardings(expr, mesh))
    assert jax.tree.leaves(got["product"]) == [
        P(),
        P("blocks", None, None),
        P("blocks", None, None),
    ]
    for name in ("kron", "lowrank", "scaled", "data"):
        assert all(s == P() for s in jax.tree.leaves(got[name])), name


def test_layers_place_components_and_replicate_the_rest(mesh):
    layer = Linear.init(
        jax.random.key(0), 32, 32, "monarch", nblocks=4, weight_norm=True, bias=True
    )
    shardings = sl.block_shardings(layer, mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(layer)
    placed = jax.device_put(layer, shardings)
    for name, value in placed.named_parameters().items():
        expected = (
            P("blocks", None, None) if name.startswith("blocks_") and value.ndim == 3 else P()
        )
        assert value.sharding.spec == expected, name
    # A layer built from an expression with fixed permutation indices (static leaves).
    op = sl.Permutation(jnp.asarray(np.random.default_rng(0).permutation(32))) @ sl.Monarch.random(
        32, 32, nblocks=4, rng=0
    ).to(backend="jax")
    layer = Linear.from_operator(op)
    placed = jax.device_put(layer, sl.block_shardings(layer, mesh))
    assert [v.sharding.spec for v in placed.named_parameters().values()] == [
        P("blocks", None, None)
    ] * 2


def test_unknown_mesh_axis_is_refused(mesh):
    M = sl.Monarch.random(16, 16, nblocks=4, rng=0).to(backend="jax")
    with pytest.raises(ValueError, match=r"mesh axes \('blocks',\) have no 'model'"):
        sl.block_shardings(M, mesh, axis="model")


def test_sharded_runs_on_4_devices_match_unsharded() -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    result = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=300
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    outcomes = dict(
        reversed(line.split(" ", 1))
        for line in re.findall(r"^(?:ok|FAIL) \w+$", result.stdout, re.M)
    )
    assert len(outcomes) == 5, report
    assert set(outcomes.values()) == {"ok"}, report
