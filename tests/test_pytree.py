"""Operators as pytrees: generic flattening and JAX transformations with operator arguments."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import structlin as sl


def _nested() -> sl.LinearOperator:
    rng = np.random.default_rng(0)
    return 2.0 * sl.Kron(
        sl.Diagonal(rng.uniform(1, 2, 3)), rng.standard_normal((2, 2))
    ) @ sl.Permutation(rng.permutation(6)) + sl.Identity(6)


def test_flatten_unflatten_round_trip_and_tree_map() -> None:
    op = _nested()
    leaves, treedef = sl.pytree.tree_flatten(op)
    assert any(isinstance(leaf, np.ndarray) and leaf.dtype == np.int64 for leaf in leaves)
    rebuilt = sl.pytree.tree_unflatten(treedef, leaves)
    np.testing.assert_array_equal(rebuilt.to_dense(), op.to_dense())
    doubled = sl.pytree.tree_map(
        lambda x: 2 * x if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x, op
    )
    assert doubled.shape == op.shape
    with pytest.raises(ValueError, match="more leaves"):
        sl.pytree.tree_unflatten(treedef, [*leaves, 1.0])


def test_jit_and_grad_with_operator_arguments() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((3, 3)))
    b = jnp.asarray(rng.standard_normal((2, 2)))
    op = sl.Kron(a, b) @ sl.Permutation(jnp.asarray(rng.permutation(6)))
    x = jnp.asarray(rng.standard_normal(6))
    np.testing.assert_allclose(
        jax.jit(lambda A, v: A.inv() @ v)(op, x), np.linalg.solve(op.to_dense(), x), rtol=1e-10
    )
    # log det((K P)^T K P) = 2 log|det K| = 4 log|det a| + 6 log|det b|, so d/da = 4 a^{-T}.
    grad = jax.grad(lambda A: sl.logdet(A.T @ A), allow_int=True)(op)
    assert isinstance(grad, sl.Product)
    np.testing.assert_allclose(grad.ops[0].factors[0].array, 4 * np.linalg.inv(a).T, rtol=1e-10)
    np.testing.assert_allclose(grad.ops[0].factors[1].array, 6 * np.linalg.inv(b).T, rtol=1e-10)


def test_vmap_over_a_batch_of_operators() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(2)
    blocks = jnp.asarray(rng.standard_normal((5, 2, 3, 3)))  # 5 operators of 2 blocks each
    template = sl.BlockDiag(blocks[0])
    batch = jax.tree_util.tree_map(lambda _: blocks, template)
    xs = jnp.asarray(rng.standard_normal((5, 6)))
    ys = jax.vmap(lambda A, v: A @ v)(batch, xs)
    expected = np.stack([sl.BlockDiag(blocks[i]).to_dense() @ xs[i] for i in range(5)])
    np.testing.assert_allclose(ys, expected, rtol=1e-12)
    logdets = jax.vmap(lambda A: sl.slogdet(A)[1])(batch)
    np.testing.assert_allclose(
        logdets,
        [np.linalg.slogdet(sl.BlockDiag(blocks[i]).to_dense())[1] for i in range(5)],
        rtol=1e-10,
    )


def test_operators_register_with_jax_imported_after_structlin() -> None:
    pytest.importorskip("jax")
    code = (
        "import numpy as np, structlin as sl\n"
        "import jax, jax.numpy as jnp\n"
        "op = sl.Dense(jnp.eye(2))\n"  # first JAX array: registration happens here
        "print(jax.jit(lambda A: A @ jnp.ones(2))(op))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[1. 1.]" in out.stdout
