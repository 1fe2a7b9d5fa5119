"""`structlin.nn.nnx.Linear` against the pytree layer, μP multipliers and the decay mask
in `nnx.Optimizer`, the mask against PyTorch's `param_groups`, and the pytree layer as
an equinox field."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

import structlin as sl  # noqa: E402
import structlin.nn.jax as sjax  # noqa: E402
import structlin.nn.nnx as snnx  # noqa: E402
from structlin import pytree  # noqa: E402
from structlin.nn.structures import template  # noqa: E402
from structlin.structure import registered_structures  # noqa: E402

D_IN, D_OUT = 12, 8  # not square, so a transposed W cannot pass
# Every registered structure, as registered at collection.
STRUCTURES = registered_structures()
LR, WD = 1e-2, 0.1


def _x(*lead: int, dtype: Any = jnp.float64) -> jax.Array:
    return jax.random.normal(jax.random.key(7), (*lead, D_IN), dtype)


def _paths(tree: Any) -> dict[str, Any]:
    """The leaves of an nnx state (of variables or plain values) by `/`-joined path."""
    flat = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda v: isinstance(v, nnx.Variable))
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
        for path, leaf in flat
    }


# -- the layer ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_forward_equals_the_pytree_layer(structure: str, dtype: Any) -> None:
    # Random NumPy weights rather than Linear.init: on a small CPU, compiling the
    # random draws for every shape would dominate this test's time.
    rng = np.random.default_rng(0)
    op = pytree.tree_map(
        lambda a: rng.standard_normal(a.shape) / 3, template(structure, D_IN, D_OUT)
    )
    bias, weight_norm = rng.standard_normal(D_OUT), structure in ("btt", "lowrank")
    layer = sjax.Linear.from_operator(op, bias, weight_norm=weight_norm, dtype=dtype)
    module = snnx.Linear.from_operator(op, bias, weight_norm=weight_norm, dtype=dtype)
    x = _x(3, 2, dtype=dtype)
    y = nnx.jit(lambda m, x: m(x))(module, x)
    assert y.dtype == dtype
    assert y.shape == (3, 2, D_OUT)
    # The same operations on the same values, compiled the same way: exactly equal.
    np.testing.assert_array_equal(y, jax.jit(lambda layer, x: layer(x))(layer, x))
    assert module.in_features == D_IN
    assert module.out_features == D_OUT
    assert module.weight_norm == weight_norm


@pytest.mark.parametrize("structure", ["monarch", "lowrank"])
def test_constructor_draws_what_the_pytree_layer_draws(structure: str) -> None:
    # The shapes of _MLP below, so the random draws compile once for both tests.
    options = {"nblocks": 4} if structure == "monarch" else {"rank": 2, "weight_norm": True}
    d_in, d_out = (D_IN, 16) if structure == "monarch" else (16, D_OUT)
    module = snnx.Linear(d_in, d_out, structure, rngs=nnx.Rngs(3), **options)
    layer = sjax.Linear.init(nnx.Rngs(3).params(), d_in, d_out, structure, **options)
    got, want = module.to_layer().named_parameters(), layer.named_parameters()
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert module.structure == structure
    assert module.bias[...].dtype == jnp.float32


def test_parameters_are_named_params_with_mup_metadata() -> None:
    module = snnx.Linear(D_IN, 16, "monarch", nblocks=4, weight_norm=True, rngs=nnx.Rngs(0))
    layer = module.to_layer()
    params = nnx.state(module, nnx.Param)
    assert sorted(params) == sorted(layer.named_parameters())
    assert not jax.tree_util.tree_leaves(nnx.state(module, nnx.Not(nnx.Param)))
    for name, info in layer.mup.items():
        assert getattr(module, name).mup == info == module.mup[name]
    assert not hasattr(module.bias, "mup")
    assert module.blocks_0_gain[...].shape == ()


def test_names_match_the_pytorch_layer() -> None:
    pytest.importorskip("torch")
    import structlin.nn as snn

    for structure in STRUCTURES:
        # eval_shape: names and shapes without drawing (or compiling) anything.
        module = nnx.eval_shape(
            lambda s=structure: snnx.Linear(D_IN, D_OUT, s, weight_norm=True, rngs=nnx.Rngs(0))
        )
        torch_layer = snn.Linear(D_IN, D_OUT, structure, weight_norm=True)
        assert sorted(nnx.state(module, nnx.Param)) == sorted(
            name for name, _ in torch_layer.named_parameters()
        )


def test_from_operator_keeps_integer_leaves_static() -> None:
    rng = np.random.default_rng(0)
    perm = sl.Permutation(np.array([3, 1, 0, 2, 11, 5, 6, 7, 8, 9, 10, 4]))
    op = 2.0 * (sl.Dense(rng.standard_normal((D_OUT, D_IN))) @ perm)
    module = snnx.Linear.from_operator(op, bias=np.ones(D_OUT))
    params = nnx.state(module, nnx.Param)
    assert sorted(params) == ["bias", "op_ops_0_array"]  # no perm, no scalar
    assert all(jnp.issubdtype(v.dtype, jnp.floating) for v in jax.tree_util.tree_leaves(params))
    x = _x(4)
    np.testing.assert_allclose(module(x), x @ np.asarray(op.to_dense()).T + 1.0, atol=1e-12)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) ** 2)))(module)
    assert sorted(grads) == ["bias", "op_ops_0_array"]
    same = snnx.Linear.from_layer(module.to_layer())
    np.testing.assert_array_equal(same(x), module(x))


def test_no_bias() -> None:
    module = snnx.Linear(D_IN, D_OUT, "lowrank", bias=False, rngs=nnx.Rngs(0))
    assert module.bias is None
    assert sorted(nnx.state(module, nnx.Param)) == ["U", "V"]
    W, b = module.to_dense()
    assert b is None
    np.testing.assert_allclose(module(_x(2)), _x(2) @ W.T, atol=1e-6)


def test_bad_inputs() -> None:
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="unknown structure 'sparse'"):
        snnx.Linear(D_IN, D_OUT, "sparse", rngs=rngs)
    with pytest.raises(TypeError, match="takes no option rank"):
        snnx.Linear(D_IN, D_OUT, "monarch", rank=3, rngs=rngs)
    with pytest.raises(ValueError, match="nblocks=5 needs d_in and d_out divisible"):
        snnx.Linear(D_IN, D_OUT, "blockdiag", nblocks=5, rngs=rngs)
    with pytest.raises(TypeError, match="floating-point dtype"):
        snnx.Linear(D_IN, D_OUT, dtype=jnp.int32, rngs=rngs)
    with pytest.raises(TypeError, match=r"needs rngs=nnx.Rngs\(seed\), got int"):
        snnx.Linear(D_IN, D_OUT, rngs=0)
    module = snnx.Linear(D_IN, D_OUT, rngs=rngs)
    with pytest.raises(ValueError, match="its last axis must have size 12"):
        module(jnp.ones((2, 5)))
    with pytest.raises(TypeError, match=r"needs a structlin\.nn\.jax\.Linear, got Linear"):
        snnx.Linear.from_layer(module)
    with pytest.raises(TypeError, match=r"wrap an array with structlin\.Dense"):
        snnx.Linear.from_operator(np.ones((D_OUT, D_IN)))
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        snnx.Linear.from_operator(sl.Dense(np.ones((D_OUT, D_IN))), bias=np.ones(3))


# -- training in nnx ----------------------------------------------------------------------
class _MLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.up = snnx.Linear(D_IN, 16, "monarch", nblocks=4, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.down = snnx.Linear(16, D_OUT, "lowrank", rank=2, weight_norm=True, rngs=rngs)
        self.head = nnx.Linear(D_OUT, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.down(jax.nn.gelu(self.norm(self.up(x)))))


def test_trains_with_nnx_optimizer() -> None:
    model = _MLP(rngs=nnx.Rngs(0))
    x = _x(32, dtype=jnp.float32)
    y = jnp.sin(x[:, :3]) + x[:, 3:6]
    tx = optax.chain(
        optax.scale_by_adam(),
        optax.add_decayed_weights(1e-3, mask=sjax.decay_mask),
        sjax.scale_by_mup(sjax.mup_lr_multipliers(model)),
        optax.scale(-LR),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss_fn(model: _MLP) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def step(model: _MLP, optimizer: nnx.Optimizer) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_mup_updates_are_adam_times_kappa() -> None:
    model = _MLP(rngs=nnx.Rngs(0))
    x = _x(8, dtype=jnp.float32)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) ** 2)))(model)
    kappa = sjax.mup_lr_multipliers(model)
    plain = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    scaled = nnx.Optimizer(
        model, optax.chain(optax.adam(LR), sjax.scale_by_mup(kappa)), wrt=nnx.Param
    )
    # update() also applies the step; both start from the same parameters.
    start = nnx.clone(model)
    update = nnx.jit(lambda o, m, g: o.update(m, g))  # one compilation, not one per small op
    u_plain = _paths(update(plain, model, grads))
    u_scaled = _paths(update(scaled, start, grads))
    variables = _paths(nnx.state(model, nnx.Param))
    assert u_plain.keys() == u_scaled.keys() == variables.keys()
    seen = set()
    for path, variable in variables.items():
        info = variable.get_metadata().get("mup")
        expected = 1.0 if info is None else info.lr_multiplier
        np.testing.assert_allclose(u_scaled[path], expected * u_plain[path], rtol=1e-6)
        seen.add(expected)
    assert seen == {1.0, 2.0, 4.0, 0.5}, seen  # Monarch, 4 blocks: 2, 2; low rank: 4, 1/2
    # The nnx multipliers are those of the pytree layer, for Adam and for SGD.
    for optimizer in ("adam", "sgd"):
        got = _paths(sjax.mup_lr_multipliers(model, optimizer))
        want = sjax.mup_lr_multipliers(model.down.to_layer(), optimizer).named_parameters()
        assert {k.removeprefix("down/"): v for k, v in got.items() if k.startswith("down/")} == want
        assert got["head/kernel"] == got["norm/scale"] == 1.0


def test_mup_multipliers_refuse_a_pure_state() -> None:
    model = _MLP(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="lost the μP metadata"):
        sjax.mup_lr_multipliers(nnx.as_pure(nnx.state(model, nnx.Param)))
    bad = nnx.Param(jnp.ones((2, 2)), mup=3.0)
    with pytest.raises(TypeError, match=r"must be a structlin\.mup\.MupInfo, got float"):
        sjax.mup_lr_multipliers({"w": bad})
    assert sjax.mup_lr_multipliers(nnx.state(model, nnx.Param)) == sjax.mup_lr_multipliers(model)


@pytest.mark.parametrize("form", ["function", "tree"])
def test_adamw_mask_decays_matrices_only(form: str) -> None:
    model = _MLP(rngs=nnx.Rngs(0))
    # Copied out: the optimizer updates the variables in place.
    before = {path: v[...] for path, v in _paths(nnx.state(model, nnx.Param)).items()}
    mask = sjax.decay_mask if form == "function" else sjax.decay_mask(model)
    optimizer = nnx.Optimizer(model, optax.adamw(LR, weight_decay=WD, mask=mask), wrt=nnx.Param)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, nnx.state(model, nnx.Param))
    # Adam's step is 0 for zero gradients, so only the decay moves the parameters.
    updates = _paths(nnx.jit(lambda o, m, g: o.update(m, g))(optimizer, model, zeros))
    decayed = set()
    for path, p in before.items():
        if p.ndim >= 2:
            np.testing.assert_allclose(updates[path], -LR * WD * p, rtol=1e-6)
            decayed.add(path)
        else:
            np.testing.assert_array_equal(updates[path], 0.0)
    assert decayed == {"up/blocks_0", "up/blocks_1", "down/U", "down/V", "head/kernel"}


# -- the decay mask against PyTorch's param_groups ----------------------------------------
def test_decay_mask_matches_param_groups() -> None:
    torch = pytest.importorskip("torch")
    import structlin.nn as snn

    torch_model = torch.nn.Sequential(
        snn.Linear(D_IN, 16, "monarch", nblocks=4),
        torch.nn.LayerNorm(16),
        snn.Linear(16, D_OUT, "lowrank", rank=2, weight_norm=True),
        torch.nn.Linear(D_OUT, 3),
    )
    groups = snn.param_groups(torch_model, lr=1e-3, weight_decay=WD)
    want = {name: g["weight_decay"] > 0 for g in groups for name in g["names"]}

    # flax calls a dense weight `kernel` and a norm's weight `scale`.
    torch_names = {
        "up": "0",
        "norm": "1",
        "down": "2",
        "head": "3",
        "kernel": "weight",
        "scale": "weight",
    }
    got = {
        ".".join(torch_names.get(part, part) for part in path.split("/")): decay
        for path, decay in _paths(sjax.decay_mask(_MLP(rngs=nnx.Rngs(0)))).items()
    }
    assert got == want

    # The same model as pytree layers and plain arrays.
    k1, k2 = jax.random.split(jax.random.key(0))
    params = [
        sjax.Linear.init(k1, D_IN, 16, "monarch", nblocks=4),
        {"weight": jnp.ones(16), "bias": jnp.zeros(16)},
        sjax.Linear.init(k2, 16, D_OUT, "lowrank", rank=2, weight_norm=True),
        {"weight": jnp.ones((3, D_OUT)), "bias": jnp.zeros(3)},
    ]
    mask = sjax.decay_mask(params)
    got = {}
    for i, part in enumerate(mask):
        named = part.named_parameters() if isinstance(part, sjax.Linear) else part
        got.update({f"{i}.{name}": decay for name, decay in named.items()})
    assert got == want
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)


def test_decay_mask_in_an_optax_chain_on_pytree_layers() -> None:
    layer = sjax.Linear.init(0, D_IN, D_OUT, "lowrank", rank=2, weight_norm=True)
    tx = optax.add_decayed_weights(WD, mask=sjax.decay_mask)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, layer)
    updates = tx.update(zeros, tx.init(layer), layer)[0].named_parameters()
    params = layer.named_parameters()
    for name in ("U", "V"):
        np.testing.assert_allclose(updates[name], WD * params[name])
    for name in ("bias", "U_gain", "V_gain"):
        np.testing.assert_array_equal(updates[name], 0.0)


# -- the pytree layer in equinox ----------------------------------------------------------
def test_pytree_layer_as_an_equinox_field() -> None:
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        layer: sjax.Linear
        head: jax.Array
        name: str = eqx.field(static=True, default="mlp")

        def __call__(self, x: jax.Array) -> jax.Array:
            return jnp.tanh(self.layer(x)) @ self.head

    k1, k2 = jax.random.split(jax.random.key(0))
    model = Model(
        sjax.Linear.init(k1, D_IN, 16, "monarch", nblocks=4, weight_norm=True),
        jax.random.normal(k2, (16, 2)) / 4,
    )
    x = _x(32)
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=-1)
    tx = optax.chain(
        optax.scale_by_adam(), sjax.scale_by_mup(sjax.mup_lr_multipliers(model)), optax.scale(-LR)
    )
    state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model: Model, state: Any) -> tuple[Model, Any, jax.Array]:
        loss, grads = eqx.filter_value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    losses = []
    for _ in range(30):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    assert isinstance(model.layer, sjax.Linear)
    assert model.layer.mup["blocks_0"].lr_multiplier == 2.0


# -- optional dependency ------------------------------------------------------------------
def test_structlin_nn_jax_works_without_flax() -> None:
    code = (
        "import sys\n"
        "sys.modules['flax'] = None  # makes `import flax` fail\n"
        "import jax.numpy as jnp, structlin as sl, structlin.nn.jax as m\n"
        "layer = m.Linear.from_operator(sl.Monarch.random(4, 4, nblocks=2, rng=0), bias=True)\n"
        "assert m.decay_mask(layer).named_parameters()['bias'] is False\n"
        "assert m.mup_lr_multipliers({'w': jnp.ones(2)}) == {'w': 1.0}\n"
        "assert 'flax.nnx' not in sys.modules\n"
        "try:\n"
        "    import structlin.nn.nnx\n"
        "except ImportError as e:\n"
        "    assert \"pip install 'structlin[flax]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('imported without flax')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
