"""The PyTorch layer `structlin.nn.Linear` and the JAX layer `structlin.nn.jax.Linear` are one
layer: the same spec built in both, holding the same arrays, computes the same function, has
the same μP roles, multipliers and learning rates, initialises at the same scales, refuses the
same inputs with the same messages, and its state crosses from one framework to the other and
back."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402
from structlin.nn import jax as sjax  # noqa: E402
from structlin.nn.structures import STRUCTURES  # noqa: E402

D_IN, D_OUT = 12, 8  # not square, so a transposed W cannot pass
CASES = [
    pytest.param(
        structure, bias, weight_norm, id=f"{structure}-bias{int(bias)}-wn{int(weight_norm)}"
    )
    for structure in STRUCTURES
    for bias in (False, True)
    for weight_norm in (False, True)
]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _to_jax(state: dict[str, torch.Tensor], like: sjax.Linear) -> sjax.Linear:
    """A JAX layer of `like`'s layout holding the arrays of a PyTorch state dict (the
    gains, `(1,)` there, become 0-d; the `_sigma` buffers are the JAX layer's static σ_i)."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    names = list(like.named_parameters())
    values = [
        jnp.asarray(_numpy(state[n])).reshape(leaf.shape)
        for n, leaf in zip(names, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, values)


def _pair(
    structure: str, bias: bool, weight_norm: bool, seed: int = 0, **kwargs: Any
) -> tuple[snn.Linear, sjax.Linear]:
    """A float32 PyTorch layer with a random bias and gains, and the JAX layer of the same
    spec holding copies of its arrays."""
    torch.manual_seed(seed)
    layer = snn.Linear(D_IN, D_OUT, structure, bias=bias, weight_norm=weight_norm, **kwargs)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "bias" or name.endswith("_gain"):
                p.uniform_(0.5, 2.0)
    like = sjax.Linear.init(0, D_IN, D_OUT, structure, bias=bias, weight_norm=weight_norm, **kwargs)
    return layer, _to_jax(layer.state_dict(), like)


def _x(*lead: int) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((*lead, D_IN)).astype(np.float32)


# -- the same function ------------------------------------------------------------------
@pytest.mark.parametrize(("structure", "bias", "weight_norm"), CASES)
def test_outputs_agree(structure: str, bias: bool, weight_norm: bool) -> None:
    layer, twin = _pair(structure, bias, weight_norm)
    assert (twin.structure, twin.weight_norm, twin.bias is None) == (
        layer.structure,
        layer.weight_norm,
        layer.bias is None,
    )
    x = _x(2, 3)
    expected = _numpy(layer(torch.as_tensor(x)))
    np.testing.assert_allclose(twin(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        jax.jit(lambda lay, x: lay(x))(twin, jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        twin.to_dense()[0], _numpy(sl.to_dense(layer.operator)), rtol=1e-5, atol=1e-6
    )
    if weight_norm:  # components far above their scale: the normalisation is active
        with torch.no_grad():
            for name in layer.mup:
                getattr(layer, name).mul_(10.0)
        twin = _to_jax(layer.state_dict(), twin)
        expected = _numpy(layer(torch.as_tensor(x)))
        np.testing.assert_allclose(twin(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)
        assert twin.sigmas == pytest.approx(
            {n: getattr(layer, n + "_sigma").item() for n in layer.mup}, rel=1e-6
        )


@pytest.mark.parametrize("weight_norm", [False, True])
def test_operator_expressions_agree(weight_norm: bool) -> None:
    rng = np.random.default_rng(0)
    permutation = sl.Permutation(rng.permutation(D_IN))
    op = 0.5 * (sl.Dense(rng.standard_normal((D_OUT, D_IN)).astype(np.float32)) @ permutation)
    b = rng.standard_normal(D_OUT).astype(np.float32)
    layer = snn.Linear.from_operator(op, b, weight_norm=weight_norm, dtype=torch.float32)
    twin = sjax.Linear.from_operator(op, b, weight_norm=weight_norm, dtype=jnp.float32)
    expected = {"op_ops_0_array", "bias"} | ({"op_ops_0_array_gain"} if weight_norm else set())
    assert {n for n, _ in layer.named_parameters()} == expected
    assert sorted(twin.named_parameters()) == sorted(n for n, _ in layer.named_parameters())
    x = _x(4)
    np.testing.assert_allclose(
        twin(jnp.asarray(x)), _numpy(layer(torch.as_tensor(x))), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(twin(jnp.asarray(x)), x @ op.to_dense().T + b, rtol=1e-5, atol=1e-5)


def test_bfloat16_leaves_cross_both_ways() -> None:
    """Each layer takes a bfloat16 operator of the other framework and stays bfloat16."""
    op = sl.Monarch.random(D_IN, D_OUT, nblocks=4, rng=0, backend="torch").to(dtype="bfloat16")
    twin = sjax.Linear.from_operator(op)
    assert {v.dtype for v in twin.named_parameters().values()} == {jnp.dtype("bfloat16")}
    # A NumPy or JAX operator gives parameters of the default dtype unless told otherwise.
    assert snn.Linear.from_operator(twin.op).blocks_0.dtype == torch.get_default_dtype()
    back = snn.Linear.from_operator(twin.op, twin.bias, dtype=torch.bfloat16)
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    for a, b in zip(back.operator.blocks, op.blocks, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # bfloat16 -> float32 -> bfloat16
    bias = jnp.ones(D_OUT, jnp.bfloat16)
    assert snn.Linear.from_operator(op, bias).bias.dtype == torch.bfloat16


# -- μP: roles, multipliers, learning rates, decay ----------------------------------------
@pytest.mark.parametrize(("structure", "bias", "weight_norm"), CASES)
def test_mup_multipliers_and_param_groups_agree(
    structure: str, bias: bool, weight_norm: bool
) -> None:
    layer, twin = _pair(structure, bias, weight_norm)
    assert twin.mup == layer.mup
    for optimizer in ("adam", "sgd"):
        ours = sjax.mup_lr_multipliers(twin, optimizer).named_parameters()
        assert ours == snn.mup_lr_multipliers(layer, optimizer), optimizer
    groups = snn.param_groups(layer, lr=1e-3, weight_decay=0.1)
    lr = {n: g["lr"] for g in groups for n in g["names"]}
    decay = {n: g["weight_decay"] > 0 for g in groups for n in g["names"]}
    kappas = sjax.mup_lr_multipliers(twin).named_parameters()
    assert lr == pytest.approx({n: 1e-3 * k for n, k in kappas.items()})
    assert decay == sjax.decay_mask(twin).named_parameters()


# -- initialisation -----------------------------------------------------------------------
D = 256


@pytest.mark.parametrize("weight_norm", [False, True])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_init_statistics_agree(structure: str, weight_norm: bool) -> None:
    """Each component's entries have the μP std in both frameworks (pooled over seeds), the
    bias is zero, the gains one, the σ_i the μP scales; zero_init_last zeroes the same ones."""
    seeds = range(3)
    torch_draws: dict[str, list[np.ndarray]] = {}
    jax_draws: dict[str, list[np.ndarray]] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        layer = snn.Linear(D, D, structure, weight_norm=weight_norm)
        twin = sjax.Linear.init(seed, D, D, structure, weight_norm=weight_norm)
        assert twin.mup == layer.mup
        for name in layer.mup:
            torch_draws.setdefault(name, []).append(_numpy(getattr(layer, name)).ravel())
            jax_draws.setdefault(name, []).append(np.asarray(twin.named_parameters()[name]).ravel())
        np.testing.assert_array_equal(_numpy(layer.bias), 0)
        np.testing.assert_array_equal(twin.bias, 0)
        if weight_norm:
            for name, info in layer.mup.items():
                assert (
                    getattr(layer, name + "_gain").item()
                    == float(twin.named_parameters()[name + "_gain"])
                    == 1
                )
                assert getattr(layer, name + "_sigma").item() == pytest.approx(info.init_std)
                assert twin.sigmas[name] == pytest.approx(info.init_std)
    for name, info in layer.mup.items():
        for draws in (torch_draws, jax_draws):
            values = np.concatenate(draws[name])
            assert abs(values.mean()) < 0.1 * info.init_std, name
            assert np.std(values) == pytest.approx(info.init_std, rel=0.1), name
    torch_zero = snn.Linear(D_IN, D_OUT, structure, zero_init_last=True, weight_norm=weight_norm)
    jax_zero = sjax.Linear.init(
        0, D_IN, D_OUT, structure, zero_init_last=True, weight_norm=weight_norm
    )
    for name, info in torch_zero.mup.items():
        zeroed = bool(np.all(np.asarray(jax_zero.named_parameters()[name]) == 0))
        assert zeroed == bool(torch.all(getattr(torch_zero, name) == 0)) == info.component.last


# -- state round trips ----------------------------------------------------------------------
@pytest.mark.parametrize(("structure", "bias", "weight_norm"), CASES)
def test_state_round_trips(structure: str, bias: bool, weight_norm: bool) -> None:
    """PyTorch state dict -> JAX layer -> PyTorch state dict (the JAX layer's 0-d gains load
    into the PyTorch layer's `(1,)` ones), and each framework's own save and load."""
    layer, twin = _pair(structure, bias, weight_norm)
    x = _x(3)
    expected = _numpy(layer(torch.as_tensor(x)))
    moved = jax.tree_util.tree_map(lambda a: a + 0.01, twin)  # trained in JAX, then back
    state = {n: torch.as_tensor(np.array(v)) for n, v in moved.named_parameters().items()}
    state |= {n: t for n, t in layer.state_dict().items() if n not in state}  # buffers
    fresh = snn.Linear(D_IN, D_OUT, structure, bias=bias, weight_norm=weight_norm)
    fresh.load_state_dict(state)  # strict: every key has its slot, shapes fit
    if weight_norm:
        assert all(getattr(fresh, n + "_gain").shape == (1,) for n in fresh.mup)
    np.testing.assert_allclose(
        _numpy(fresh(torch.as_tensor(x))), moved(jnp.asarray(x)), rtol=1e-5, atol=1e-5
    )
    assert (
        _to_jax(fresh.state_dict(), twin).named_parameters().keys()
        == twin.named_parameters().keys()
    )
    # Each framework's own save and load.
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    np.testing.assert_array_equal(_numpy(fresh(torch.as_tensor(x))), expected)
    again = pickle.loads(pickle.dumps(twin))
    np.testing.assert_array_equal(again(jnp.asarray(x)), twin(jnp.asarray(x)))


# -- the same checks and messages -------------------------------------------------------------
def _message(f: Any) -> str:
    with pytest.raises((TypeError, ValueError)) as info:
        f()
    return str(info.value)


def test_errors_are_the_same() -> None:
    layer, twin = _pair("monarch", True, False)
    for shape in [(2, 5), ()]:
        x = np.ones(shape, np.float32)
        assert _message(lambda x=x: layer(torch.as_tensor(x))) == _message(lambda x=x: twin(x))
    for bad in (np.ones(3), [1.0] * D_OUT):
        assert _message(
            lambda b=bad: snn.Linear.from_operator(sl.Dense(np.ones((D_OUT, D_IN))), b)
        ) == (
            _message(lambda b=bad: sjax.Linear.from_operator(sl.Dense(np.ones((D_OUT, D_IN))), b))
        )
    for op in (np.ones((2, 2)), sl.Dense(np.ones((2, 2), complex))):
        assert _message(lambda op=op: snn.Linear.from_operator(op)) == _message(
            lambda op=op: sjax.Linear.from_operator(op)
        )
    complex_x = np.ones((2, D_IN), np.complex64)
    torch_complex = _message(lambda: layer(torch.as_tensor(complex_x)))
    jax_complex = _message(lambda: twin(jnp.asarray(complex_x)))
    assert torch_complex.replace("torch.", "") == jax_complex
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        sjax.mup_lr_multipliers(twin, "lion")
