"""`structlin.nn.jax`: the JAX `Linear` pytree and structure-aware μP for optax, checked
against dense references and Table 2 of "Compute Better Spent"."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import structlin as sl  # noqa: E402
from structlin import pytree, rules  # noqa: E402
from structlin.nn.jax import (  # noqa: E402
    Linear,
    ScaleByMupState,
    mup_lr_multipliers,
    scale_by_mup,
    scale_updates,
)
from structlin.nn.structures import leaf_names  # noqa: E402
from structlin.structure import registered_structures  # noqa: E402

D_IN, D_OUT = 12, 8  # not square, so a transposed W cannot pass
# Every registered structure, as registered at collection.
STRUCTURES = registered_structures()
TOL = 1e-12


@pytest.fixture(autouse=True, scope="module")
def x64() -> Iterator[None]:
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _replace(layer: Linear, **values: Any) -> Linear:
    """`layer` with the named leaves (as in `named_parameters`) replaced."""
    names = list(layer.named_parameters())
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    assert len(leaves) == len(names)
    return jax.tree_util.tree_unflatten(
        treedef, [values.get(n, v) for n, v in zip(names, leaves, strict=True)]
    )


def _expressions() -> dict[str, sl.LinearOperator]:
    rng = _rng(1)
    return {
        "dense@monarch": sl.Dense(rng.standard_normal((D_OUT, D_IN)))
        @ sl.Monarch.random(D_IN, D_IN, nblocks=4, rng=2),
        "2*lowrank+dense": 2
        * sl.LowRank(rng.standard_normal((D_OUT, 3)), rng.standard_normal((3, D_IN)))
        + sl.Dense(rng.standard_normal((D_OUT, D_IN))),
        "btt.T": sl.BTT.random((3, 4), (2, 4), 2, rng=3).T,
    }


CASES = [*STRUCTURES, *_expressions()]


def _layer(case: str, **kwargs: Any) -> tuple[Linear, np.ndarray]:
    """A float64 layer with a random bias, and its dense `W` computed independently."""
    b = _rng(4).standard_normal(D_OUT)
    if case in STRUCTURES:
        layer = Linear.init(jax.random.key(0), D_IN, D_OUT, case, dtype=jnp.float64, **kwargs)
        layer = _replace(layer, bias=jnp.asarray(b))
        # The NumPy reference goes through the operator's NumPy arrays, not the layer.
        op = pytree.tree_map(np.asarray, layer.op)
        return layer, np.asarray(op.to_dense())
    op = _expressions()[case]
    return Linear.from_operator(op, bias=b, **kwargs), np.asarray(op.to_dense())


def _spec_only(*args: Any, **kwargs: Any) -> Linear:
    """`Linear.init(0, *args, **kwargs)` with shapes in place of arrays: nothing is drawn."""
    return jax.eval_shape(lambda: Linear.init(0, *args, **kwargs))


def _x(*lead: int) -> jax.Array:
    return jnp.asarray(_rng(5).standard_normal((*lead, D_IN)))


# -- the forward pass, jit and grad -------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_dense(case: str) -> None:
    layer, W = _layer(case)
    x = _x(2, 3)
    expected = np.asarray(x) @ W.T + np.asarray(layer.bias)
    y = layer(x)
    assert y.shape == (2, 3, D_OUT)
    np.testing.assert_allclose(y, expected, atol=TOL)
    # Under jit (eager JAX compiles every operation for every new shape: slow here).
    forward = jax.jit(lambda lay, x: lay(x))
    np.testing.assert_allclose(forward(layer, x), expected, atol=TOL)
    np.testing.assert_allclose(forward(layer, x[0, 0]), expected[0, 0], atol=TOL)
    W_layer, b_layer = jax.jit(Linear.to_dense)(layer)
    np.testing.assert_allclose(W_layer, W, atol=TOL)
    np.testing.assert_array_equal(b_layer, layer.bias)


@pytest.mark.parametrize("case", CASES)
def test_grad_matches_the_dense_computation(case: str) -> None:
    layer, _ = _layer(case)
    x = _x(2, 3)
    leaves, treedef = pytree.tree_flatten(layer.op)
    names = leaf_names(treedef)

    def loss(layer: Linear, x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(layer(x)))

    def reference(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        # Another route to the same function: densify with rules.to_dense, then multiply.
        op = pytree.tree_unflatten(
            treedef, [params.get(n, v) for n, v in zip(names, leaves, strict=True)]
        )
        return jnp.sum(jnp.sin(x @ rules.to_dense(op).T + params["bias"]))

    grads, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(layer, x)
    expected, ex = jax.jit(jax.grad(reference, argnums=(0, 1)))(layer.named_parameters(), x)
    assert isinstance(grads, Linear)
    got = grads.named_parameters()
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-10, err_msg=name)
    np.testing.assert_allclose(gx, ex, atol=1e-10)


def test_leaves_are_the_named_parameters_in_order() -> None:
    layer = _spec_only(D_IN, D_OUT, "monarch", weight_norm=True)
    assert list(layer.named_parameters()) == [
        "blocks_0",
        "blocks_1",
        "bias",
        "blocks_0_gain",
        "blocks_1_gain",
    ]
    for a, b in zip(
        jax.tree_util.tree_leaves(layer), layer.named_parameters().values(), strict=True
    ):
        assert a is b


def test_static_leaves_are_not_trained_and_jit_does_not_retrace() -> None:
    perm = sl.Permutation(np.array([2, 0, 1, *range(3, D_IN)]))
    op = 2 * (sl.Dense(_rng(0).standard_normal((D_OUT, D_IN))) @ perm)
    layer = Linear.from_operator(op)
    assert list(layer.named_parameters()) == ["op_ops_0_array"]
    assert [leaf.dtype for leaf in jax.tree_util.tree_leaves(layer)] == [jnp.float64]
    traces = []

    @jax.jit
    def f(layer: Linear, x: jax.Array) -> jax.Array:
        traces.append(1)
        return layer(x)

    x = _x(2, 3)
    np.testing.assert_allclose(f(layer, x), np.asarray(x) @ op.to_dense().T, atol=TOL)
    moved = jax.tree_util.tree_map(lambda a: a + 1.0, layer)
    f(moved, x)
    f(Linear.from_operator(op), x)  # equal static data from a fresh build
    assert len(traces) == 1


def test_float32_jitted_init_and_vmap() -> None:
    layer = jax.jit(lambda key: Linear.init(key, D_IN, D_OUT, "btt", rank=2))(jax.random.key(1))
    assert isinstance(layer, Linear)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(layer)} == {jnp.dtype("float32")}
    x = _x(2, 3).astype(jnp.float32)
    y = jax.jit(lambda lay, x: lay(x))(layer, x)
    assert y.dtype == jnp.float32
    W = pytree.tree_map(np.asarray, layer.op).to_dense()
    np.testing.assert_allclose(y, np.asarray(x) @ W.T, rtol=1e-5, atol=1e-6)
    # A stack of layers is a layer of stacked leaves.
    shifted = _replace(layer, bias=layer.bias + 1)
    stack = jax.tree_util.tree_map(lambda *a: np.stack(a), layer, shifted)
    ys = jax.jit(jax.vmap(lambda lay: lay(x)))(stack)
    np.testing.assert_allclose(ys[1], y + 1, rtol=1e-5, atol=1e-6)


# -- μP: initialisation and learning-rate multipliers ---------------------------------
@pytest.mark.parametrize(
    ("structure", "spec"), [("monarch", {"nblocks": 4}), ("lowrank", {}), ("btt", {"rank": 2})]
)
def test_init_std_is_the_mup_scale(structure: str, spec: dict) -> None:
    layer = Linear.init(jax.random.key(2), 1024, 1024, structure, **spec)
    params = {name: np.asarray(v) for name, v in layer.named_parameters().items()}
    assert set(layer.mup) | {"bias"} == set(params)
    for name, info in layer.mup.items():
        std = float(np.std(params[name]))
        assert abs(std / info.init_std - 1) < 0.1, (name, std, info.init_std)
    np.testing.assert_array_equal(params["bias"], 0)
    a, b = (params[n] for n in layer.mup)  # independent draws, even of one shape
    assert a.shape != b.shape or not np.allclose(a, b)


D = 1024
TABLE_2 = [
    ("dense", {}, {"array": 1.0}),
    ("monarch", {"nblocks": 4}, {"blocks_0": 2.0, "blocks_1": 2.0}),
    ("monarch", {"nblocks": 16}, {"blocks_0": 8.0, "blocks_1": 8.0}),
    ("kron", {}, {"factors_0_array": math.sqrt(D) / 2, "factors_1_array": math.sqrt(D) / 2}),
    ("lowrank", {"rank": 8}, {"U": D / (2 * 8), "V": 0.5}),
    ("tt", {"rank": 4}, {"cores_0": math.sqrt(D) / (2 * 4), "cores_1": math.sqrt(D) / 2}),
    ("btt", {"rank": 4}, {"cores_0": math.sqrt(D) / (2 * 4), "cores_1": math.sqrt(D) / 2}),
    ("btt", {"rank": 1}, {"cores_0": math.sqrt(D) / 2, "cores_1": math.sqrt(D) / 2}),
]


@pytest.mark.parametrize(("structure", "spec", "kappas"), TABLE_2)
def test_multipliers_reproduce_table_2(structure: str, spec: dict, kappas: dict) -> None:
    layer = _spec_only(D, D, structure, weight_norm=True, **spec)
    multipliers = mup_lr_multipliers(layer)
    assert isinstance(multipliers, Linear)
    gains = {f"{name}_gain": 1.0 for name in kappas}
    assert multipliers.named_parameters() == {**kappas, "bias": 1.0, **gains}
    assert all(type(m) is float for m in jax.tree_util.tree_leaves(multipliers))


def test_multipliers_of_a_model() -> None:
    a = _spec_only(D_IN, D_OUT, "monarch", nblocks=4)
    b = _spec_only(D_OUT, D_IN, "lowrank", rank=2, bias=False)
    params = {"a": a, "rest": [b, jnp.ones(3)], "none": None}
    multipliers = mup_lr_multipliers(params)
    assert jax.tree_util.tree_structure(multipliers) == jax.tree_util.tree_structure(params)
    assert multipliers["rest"][1] == 1.0
    assert multipliers["none"] is None
    assert multipliers["a"].named_parameters() == {
        name: info.lr_multiplier for name, info in a.mup.items()
    } | {"bias": 1.0}
    assert multipliers["rest"][0].named_parameters() == {"U": 8 / 2 / 2, "V": 8 / 8 / 2}
    sgd = mup_lr_multipliers(params, optimizer="sgd")["rest"][0].named_parameters()
    assert sgd == {name: info.sgd_lr_multiplier for name, info in b.mup.items()}
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        mup_lr_multipliers(params, optimizer="lion")


def test_scale_updates() -> None:
    layer = _spec_only(D_IN, D_OUT, "kron")
    grads = jax.tree_util.tree_map(lambda a: np.ones(a.shape, a.dtype), layer)
    scaled = scale_updates(
        {"layer": grads, "skip": None}, mup_lr_multipliers({"layer": layer, "skip": None})
    )
    assert scaled["skip"] is None
    for name, value in scaled["layer"].named_parameters().items():
        expected = layer.mup[name].lr_multiplier if name in layer.mup else 1.0
        np.testing.assert_array_equal(value, expected)
        assert value.dtype == jnp.float32


def _regression() -> tuple[dict[str, Any], Any]:
    """A Monarch layer and a free scale vector fitting a Monarch teacher: the loss can reach 0."""
    params = {
        "layer": Linear.init(jax.random.key(3), D_IN, D_OUT, "monarch", dtype=jnp.float64),
        "scale": jnp.ones(D_OUT),
    }
    teacher = sl.Monarch.random(D_IN, D_OUT, nblocks=4, rng=7).to_dense()
    x = jnp.asarray(_rng(6).standard_normal((64, D_IN)))
    y = x @ jnp.asarray(teacher).T

    def loss(params: dict[str, Any]) -> jax.Array:
        return jnp.mean((params["scale"] * params["layer"](x) - y) ** 2)

    return params, loss


def test_scale_by_mup_in_a_hand_written_adam() -> None:
    params, loss = _regression()
    tx = scale_by_mup(mup_lr_multipliers(params))
    state = tx.init(params)
    assert state == ScaleByMupState()
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8

    @jax.jit
    def step(params: Any, m: Any, v: Any, t: jax.Array) -> tuple[Any, Any, Any, jax.Array]:
        value, g = jax.value_and_grad(loss)(params)
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        adam = jax.tree_util.tree_map(
            lambda m, v: (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), m, v
        )
        updates, _ = tx.update(adam, state, params)
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
        return params, m, v, value

    first = float(loss(params))
    for t in range(1, 101):
        params, m, v, _ = step(params, m, v, jnp.asarray(t, jnp.float64))
    assert isinstance(params["layer"], Linear)
    assert float(loss(params)) < 0.2 * first


def test_scale_by_mup_in_an_optax_chain() -> None:
    optax = pytest.importorskip("optax")
    params, loss = _regression()
    tx = optax.chain(
        optax.scale_by_adam(), scale_by_mup(mup_lr_multipliers(params)), optax.scale(-1e-2)
    )
    state = tx.init(params)

    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    first = float(loss(params))
    for _ in range(100):
        params, state = step(params, state)
    assert float(loss(params)) < 0.2 * first


# -- weight normalisation and zero initialisation -------------------------------------
def _rms(a: jax.Array) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a))))


def _effective(layer: Linear) -> dict[str, jax.Array]:
    leaves, treedef = pytree.tree_flatten(layer.operator)
    return {n: v for n, v in zip(leaf_names(treedef), leaves, strict=True) if n in layer.mup}


@pytest.mark.parametrize("structure", STRUCTURES)
def test_weight_norm_caps_the_rms_at_gain_times_sigma(structure: str) -> None:
    layer = Linear.init(0, D_IN, D_OUT, structure, weight_norm=True, dtype=jnp.float64)
    assert layer.sigmas == {name: info.init_std for name, info in layer.mup.items()}
    raw, effective = layer.named_parameters(), _effective(layer)
    for name, sigma in layer.sigmas.items():
        # Fresh draws are used as they are, or scaled down to RMS sigma where larger.
        scale = min(1.0, sigma / _rms(raw[name]))
        np.testing.assert_allclose(effective[name], scale * raw[name], rtol=1e-12)
    name, sigma = next(iter(layer.sigmas.items()))
    big = _replace(layer, **{name: 10 * raw[name]})
    assert _rms(_effective(big)[name]) == pytest.approx(sigma, rel=1e-12)
    twice = _replace(big, **{f"{name}_gain": jnp.asarray(2.0)})
    assert _rms(_effective(twice)[name]) == pytest.approx(2 * sigma, rel=1e-12)


def test_weight_norm_from_an_operator_computes_the_operator() -> None:
    op = sl.BTT.random((2, 4), (3, 4), 2, rng=0)
    layer = Linear.from_operator(op, weight_norm=True)
    np.testing.assert_allclose(layer.to_dense()[0], op.to_dense(), atol=TOL)
    loud = Linear.from_operator(sl.BTT(*(100 * c for c in op.cores)), weight_norm=True)
    np.testing.assert_allclose(loud.to_dense()[0], 1e4 * op.to_dense(), rtol=1e-12)
    for name, info in loud.mup.items():
        assert loud.sigmas[name] == pytest.approx(_rms(loud.named_parameters()[name]))
        assert loud.sigmas[name] > info.init_std


@pytest.mark.parametrize("weight_norm", [False, True])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_zero_init_last(structure: str, weight_norm: bool) -> None:
    layer = Linear.init(
        0, D_IN, D_OUT, structure, zero_init_last=True, weight_norm=weight_norm, dtype=jnp.float64
    )
    x = _x(2, 3)
    np.testing.assert_array_equal(jax.jit(lambda lay: lay(x))(layer), 0)
    params = layer.named_parameters()
    target = jnp.asarray(_rng(8).standard_normal((2, 3, D_OUT)))
    grads = jax.jit(jax.grad(lambda lay: jnp.sum(lay(x) * target)))(layer).named_parameters()
    for name, info in layer.mup.items():
        assert bool(jnp.all(params[name] == 0)) == info.component.last, name
        assert bool(jnp.all(jnp.isfinite(grads[name]))), name
        if info.component.last:  # the gradient reaches it through the other components
            assert float(jnp.abs(grads[name]).max()) > 0, name


# -- conversion -------------------------------------------------------------------------
def test_from_operator_bias_round_trip() -> None:
    op = sl.Monarch.random(D_IN, D_OUT, nblocks=4, rng=0)
    b = _rng(9).standard_normal(D_OUT)
    layer = Linear.from_operator(op, bias=b)
    assert layer.structure == "Monarch"
    assert layer.bias.dtype == jnp.float64
    np.testing.assert_array_equal(layer.to_dense()[1], b)
    back = Linear.from_operator(layer.op, bias=layer.bias)
    np.testing.assert_array_equal(back.to_dense()[0], layer.to_dense()[0])
    np.testing.assert_array_equal(back.bias, b)
    assert Linear.from_operator(op).bias is None
    np.testing.assert_array_equal(Linear.from_operator(op, bias=True).bias, np.zeros(D_OUT))
    single = Linear.from_operator(op, bias=b, dtype=jnp.float32)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(single)} == {jnp.dtype("float32")}


def test_pickle_and_copy() -> None:
    layer, _ = _layer("2*lowrank+dense", weight_norm=True)
    x = _x(2, 3)
    for other in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer), copy.copy(layer)):
        assert isinstance(other, Linear)
        assert jax.tree_util.tree_structure(other) == jax.tree_util.tree_structure(layer)
        np.testing.assert_array_equal(other(x), layer(x))


def test_from_a_torch_operator() -> None:
    pytest.importorskip("torch")
    op = sl.Monarch.random(D_IN, D_OUT, nblocks=4, rng=0, backend="torch")
    layer = Linear.from_operator(op)
    assert layer.op.blocks[0].dtype == jnp.float32
    np.testing.assert_allclose(layer.to_dense()[0], op.to_dense().numpy(), atol=1e-6)


def test_module_does_not_import_torch() -> None:
    code = (
        "import sys, jax, structlin.nn.jax as m\n"
        "m.Linear.init(0, 4, 4, 'monarch', nblocks=2)\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- errors -----------------------------------------------------------------------------
def test_bad_inputs() -> None:
    layer = _spec_only(D_IN, D_OUT, "monarch")
    with pytest.raises(
        ValueError, match=r"got an input of shape \(2, 5\); its last axis must have size 12"
    ):
        layer(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="last axis"):
        layer(jnp.asarray(1.0))
    with pytest.raises(ValueError, match="unknown structure 'sparse'"):
        Linear.init(0, D_IN, D_OUT, "sparse")
    with pytest.raises(TypeError, match="takes no option rank"):
        Linear.init(0, D_IN, D_OUT, "monarch", rank=3)
    with pytest.raises(TypeError, match="floating-point dtype"):
        Linear.init(0, D_IN, D_OUT, dtype=jnp.int32)
    op = sl.Dense(np.ones((D_OUT, D_IN)))
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\), got \(3,\)"):
        Linear.from_operator(op, bias=np.ones(3))
    with pytest.raises(TypeError, match="bias must be a bool or an array"):
        Linear.from_operator(op, bias=[1.0] * D_OUT)
    with pytest.raises(TypeError, match="needs a structlin operator"):
        Linear.from_operator(np.ones((D_OUT, D_IN)))
    with pytest.raises(TypeError, match="complex values"):
        Linear.from_operator(sl.Dense(np.ones((2, 2), complex)))
    with pytest.raises(TypeError, match=r"Linear\.init"):
        Linear(D_IN, D_OUT)
    with pytest.raises(AttributeError, match="immutable"):
        layer.bias = None
