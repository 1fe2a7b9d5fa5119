"""`structlin.nn.Linear` and its helpers, checked against dense references."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402
from structlin import pytree, rules  # noqa: E402
from structlin.structure import registered_structures  # noqa: E402

# Every registered structure, as registered at collection.
STRUCTURES = registered_structures()
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _dense(layer: snn.Linear) -> torch.Tensor:
    return rules.to_dense(layer.operator)


@st.composite
def layers(draw: st.DrawFn) -> tuple[str, int, int, dict]:
    structure = draw(st.sampled_from(STRUCTURES))
    d_in, d_out = draw(st.integers(2, 40)), draw(st.integers(2, 40))
    spec: dict = {}
    if structure == "lowrank":
        spec["rank"] = draw(st.integers(1, 6))
    elif structure == "monarch":
        spec["nblocks"] = draw(st.integers(1, min(d_in, d_out)))
    elif structure == "blockdiag":
        g = math.gcd(d_in, d_out)
        spec["nblocks"] = draw(st.sampled_from([b for b in range(1, g + 1) if g % b == 0]))
    elif structure in ("tt", "btt"):
        spec["rank"] = draw(st.integers(1, 3))
        spec["ncores"] = draw(st.integers(1, 3))
    return structure, d_in, d_out, spec


@given(layers(), st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**31))
def test_forward_and_gradients_match_dense(case, dtype, seed):
    """`layer(x) = x W^T + b` for leading axes; gradients equal those through the dense W."""
    structure, d_in, d_out, spec = case
    torch.manual_seed(seed)
    layer = snn.Linear(d_in, d_out, structure, dtype=dtype, **spec)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, d_in, dtype=dtype, requires_grad=True)
    g = torch.randn(2, 3, d_out, dtype=dtype)
    y = layer(x)
    W = _dense(layer)
    reference = x @ W.T + layer.bias
    scale = reference.abs().max().item() + 1
    assert y.shape == (2, 3, d_out)
    assert y.dtype == dtype
    torch.testing.assert_close(y, reference, atol=TOL[dtype] * scale, rtol=TOL[dtype])

    params = [p for _, p in layer.named_parameters()]
    got = torch.autograd.grad((y * g).sum(), [x, *params])
    want = torch.autograd.grad((reference * g).sum(), [x, *params])
    for name, a, b in zip(["x", *dict(layer.named_parameters())], got, want, strict=True):
        torch.testing.assert_close(
            a, b, atol=10 * TOL[dtype] * scale, rtol=10 * TOL[dtype], msg=name
        )


# Table 2 of "Compute Better Spent" at d = 1024 (sqrt(d) = 32).
TABLE_2 = [
    ("dense", {}, {"array": 1.0}),
    ("monarch", {"nblocks": 4}, {"blocks_0": 2.0, "blocks_1": 2.0}),
    ("monarch", {"nblocks": 32}, {"blocks_0": 16.0, "blocks_1": 16.0}),
    ("kron", {}, {"factors_0_array": 16.0, "factors_1_array": 16.0}),
    ("lowrank", {"rank": 8}, {"U": 1024 / 16, "V": 0.5}),
    ("lowrank", {"rank": 32}, {"U": 1024 / 64, "V": 0.5}),
    ("tt", {"rank": 1}, {"cores_0": 16.0, "cores_1": 16.0}),
    ("tt", {"rank": 4}, {"cores_0": 32 / 8, "cores_1": 16.0}),
    ("btt", {"rank": 1}, {"cores_0": 16.0, "cores_1": 16.0}),
    ("btt", {"rank": 4}, {"cores_0": 32 / 8, "cores_1": 16.0}),
]


@pytest.mark.parametrize(("structure", "spec", "expected"), TABLE_2)
def test_mup_multipliers_reproduce_table_2(structure, spec, expected):
    layer = snn.Linear(1024, 1024, structure, **spec)
    assert snn.mup_lr_multipliers(layer) == {**expected, "bias": 1.0}


def test_mup_metadata_on_parameters_and_sgd_rule():
    layer = snn.Linear(256, 64, "lowrank", rank=8, bias=False)
    U, V = layer.U, layer.V
    assert (U.mup.component.fan_in, U.mup.component.fan_out) == (8, 64)
    assert (V.mup.component.fan_in, V.mup.component.fan_out) == (256, 8)
    assert U.mup.n_components == 2
    assert U.mup.layer_fan_in == 256
    assert U.mup.init_std == pytest.approx(math.sqrt(8) / 8)
    # Appendix H: ((d_out^i / d_in^i) / (d_out / d_in)) / k
    sgd = snn.mup_lr_multipliers(layer, optimizer="sgd")
    assert sgd["U"] == pytest.approx((64 / 8) / (64 / 256) / 2)
    assert sgd["V"] == pytest.approx((8 / 256) / (64 / 256) / 2)


def test_initialisation_scale_follows_the_components():
    torch.manual_seed(0)
    for structure, spec in [("monarch", {"nblocks": 8}), ("btt", {"rank": 2}), ("lowrank", {})]:
        layer = snn.Linear(1024, 1024, structure, **spec)
        for name, info in layer.mup.items():
            std = getattr(layer, name).std().item()
            assert std == pytest.approx(info.init_std, rel=0.1), (structure, name)


def test_param_groups_learning_rates_and_decay():
    model = torch.nn.Sequential(
        snn.Linear(256, 256, "monarch", nblocks=16),
        torch.nn.LayerNorm(256),
        torch.nn.Linear(256, 10),
    )
    groups = snn.param_groups(model, lr=1e-3, weight_decay=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["0.blocks_0"]["lr"] == pytest.approx(8e-3)
    assert by_name["0.blocks_0"]["weight_decay"] == 0.1
    assert by_name["0.bias"]["lr"] == 1e-3
    assert by_name["0.bias"]["weight_decay"] == 0.0
    assert by_name["1.weight"]["weight_decay"] == 0.0  # a norm's gain is a vector
    assert by_name["2.weight"]["lr"] == 1e-3
    assert by_name["2.weight"]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups).step()  # accepted as is

    wide = snn.param_groups(model, lr=1e-3, base_fan_in=64)
    by_name = {n: g for g in wide for n in g["names"]}
    assert by_name["0.blocks_0"]["lr"] == pytest.approx(8e-3 * 64 / 256)
    assert by_name["2.weight"]["lr"] == pytest.approx(1e-3 * 64 / 256)
    assert by_name["0.bias"]["lr"] == 1e-3

    model[2].weight.requires_grad_(False)
    assert "2.weight" not in {n for g in snn.param_groups(model, 1e-3) for n in g["names"]}
    with pytest.raises(ValueError, match="'adam'"):
        snn.param_groups(model, 1e-3, optimizer="lion")
    sgd = {
        n: g
        for g in snn.param_groups(model, 1e-3, base_fan_in=64, optimizer="sgd")
        for n in g["names"]
    }
    assert sgd["1.weight"]["lr"] == pytest.approx(1e-3 * 256 / 64)  # SGD: a norm gain n / d_0


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = snn.Linear(48, 40, "btt", rank=2, weight_norm=True)
    b = snn.Linear(48, 40, "btt", rank=2, weight_norm=True)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    x = torch.randn(7, 48)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert set(a.state_dict()) == {
        "cores_0",
        "cores_0_gain",
        "cores_0_sigma",
        "cores_1",
        "cores_1_gain",
        "cores_1_sigma",
        "bias",
    }


def test_weight_norm_gains_are_1d_and_old_scalar_gains_load():
    # FSDP2's fully_shard takes no 0-d parameters, so the gains have shape (1,).
    layer = snn.Linear(16, 16, "monarch", nblocks=4, weight_norm=True)
    assert layer.blocks_0_gain.shape == (1,)
    state = layer.state_dict()
    state["blocks_0_gain"] = torch.tensor(2.0)  # as written before the gains were 1-D
    state["blocks_1_gain"] = torch.tensor(0.5)
    layer.load_state_dict(state)
    assert layer.blocks_0_gain.tolist() == [2.0]
    assert layer.blocks_1_gain.tolist() == [0.5]


def test_zero_init_last_starts_at_zero_and_still_learns():
    for structure, spec in [("monarch", {}), ("lowrank", {"rank": 4}), ("btt", {}), ("kron", {})]:
        layer = snn.Linear(64, 64, structure, zero_init_last=True, **spec)
        x = torch.randn(5, 64)
        y = layer(x)
        assert torch.count_nonzero(y) == 0, structure
        (y * torch.randn(5, 64)).sum().backward()
        zeroed = [n for n, i in layer.mup.items() if i.component.last]
        assert len(zeroed) == 1, structure
        assert getattr(layer, zeroed[0]).grad.abs().sum() > 0, structure


def test_weight_norm_bounds_the_components():
    torch.manual_seed(0)
    layer = snn.Linear(64, 64, "btt", rank=2, weight_norm=True)
    with torch.no_grad():
        layer.cores_0.mul_(10)  # far above its scale: clipped back to it
        layer.cores_1.mul_(0.5 * layer.mup["cores_1"].init_std / _rms(layer.cores_1))  # below: kept
        layer.cores_1_gain.fill_(3.0)
    effective = pytree.tree_flatten(layer.operator)[0]
    assert _rms(effective[0]) == pytest.approx(layer.mup["cores_0"].init_std, rel=1e-5)
    torch.testing.assert_close(effective[1], 3 * layer.cores_1)
    # The layer computes with the normalised components.
    plain = snn.Linear.from_operator(layer.operator, layer.bias)
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), plain(x))
    # The gains are learnable scalars, never weight-decayed.
    groups = snn.param_groups(layer, 1e-3, weight_decay=0.1)
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert decay["cores_0_gain"] == 0.0
    assert decay["cores_0"] == 0.1
    # Zero components do not make the normalisation's gradient NaN.
    zero = snn.Linear(16, 16, "monarch", weight_norm=True, zero_init_last=True)
    (zero(torch.randn(2, 16)) * torch.randn(2, 16)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in zero.parameters())


def test_from_operator_keeps_the_function_of_any_expression():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((24, 32))
    M = sl.Monarch.random(32, 32, 4, rng=1)
    P = sl.Permutation(rng.permutation(32))
    expressions = [
        sl.Dense(A) @ M,
        2.0 * sl.LowRank(rng.standard_normal((24, 3)), rng.standard_normal((3, 32))) + sl.Dense(A),
        sl.BTT.random((4, 6), (4, 8), 2, rng=2).T.T,
        (M @ P).T,
        sl.Kron(rng.standard_normal((4, 8)), rng.standard_normal((6, 4))),
    ]
    for op in expressions:
        layer = snn.Linear.from_operator(op, dtype=torch.float64, weight_norm=True)
        x = rng.standard_normal((5, op.shape[1]))
        torch.testing.assert_close(
            layer(torch.as_tensor(x)), torch.as_tensor(x @ op.to_dense().T), rtol=1e-10, atol=1e-10
        )
    layer = snn.Linear.from_operator((M @ P).T)
    assert layer.ops_0_perm.dtype == torch.int64
    assert "ops_0_perm" not in dict(layer.named_parameters())
    assert layer.ops_1_blocks_0.dtype == torch.get_default_dtype()


def test_replace_linear_with_projection_keeps_a_structured_model_exactly():
    torch.manual_seed(0)
    d, h = 64, 128
    model = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d))
    with torch.no_grad():
        model[0].weight.copy_(torch.as_tensor(sl.Monarch.random(d, h, 4, rng=0).to_dense()))
        model[2].weight.copy_(torch.as_tensor(sl.Monarch.random(h, d, 4, rng=1).to_dense()))
    x = torch.randn(16, d)
    before = model(x)
    snn.replace_linear(model, "monarch", nblocks=4, project=True)
    assert all(isinstance(model[i], snn.Linear) for i in (0, 2))
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    # ... and back: each layer densifies to an equal nn.Linear.
    dense = torch.nn.Sequential(model[0].to_dense_linear(), model[1], model[2].to_dense_linear())
    assert type(dense[0]) is torch.nn.Linear
    torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("structure", "spec", "make"),
    [
        (
            "lowrank",
            {"rank": 3},
            lambda: sl.LowRank(np.ones((48, 3)), np.arange(96.0).reshape(3, 32)),
        ),
        ("kron", {}, lambda: sl.Kron(np.arange(24.0).reshape(6, 4), np.ones((8, 8)) + np.eye(8))),
        ("blockdiag", {"nblocks": 4}, lambda: sl.BlockDiag(np.arange(384.0).reshape(4, 12, 8))),
        ("btt", {"rank": 2}, lambda: sl.BTT.random((6, 8), (4, 8), 2, rng=0)),
    ],
)
def test_projection_of_structured_weights_is_exact(structure, spec, make):
    W = torch.as_tensor(make().to_dense(), dtype=torch.float64)
    linear = torch.nn.Linear(32, 48, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(W)
    layer = snn.Linear.from_linear(linear, structure, **spec)
    x = torch.randn(4, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-9, atol=1e-9)


def test_replace_linear_filter_fresh_init_and_errors():
    model = torch.nn.Sequential(torch.nn.Linear(32, 30), torch.nn.Linear(30, 32, bias=False))
    snn.replace_linear(model, "lowrank", rank=4, filter=lambda name, m: name == "1")
    assert type(model[0]) is torch.nn.Linear
    assert isinstance(model[1], snn.Linear)
    assert model[1].bias is None
    assert model[1].U.shape == (32, 4)
    # A layer the structure cannot take: nothing is replaced.
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 30))
    with pytest.raises(ValueError, match="divisible by 4"):
        snn.replace_linear(model, "blockdiag", nblocks=4)
    assert all(type(m) is torch.nn.Linear for m in model)
    with pytest.raises(ValueError, match="model itself"):
        snn.replace_linear(torch.nn.Linear(4, 4), "dense")


def test_bad_input_errors():
    layer = snn.Linear(16, 8, "monarch")
    with pytest.raises(ValueError, match=r"last axis must have size 16"):
        layer(torch.randn(3, 15))
    with pytest.raises(ValueError, match="unknown structure 'butterfly'"):
        snn.Linear(16, 8, "butterfly")
    with pytest.raises(TypeError, match="takes no option rank"):
        snn.Linear(16, 8, "monarch", rank=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        snn.Linear.from_operator(sl.Dense(np.ones((8, 16))), np.ones(7))
    with pytest.raises(TypeError, match="needs a structlin operator"):
        snn.Linear.from_operator(np.ones((8, 16)))
    with pytest.raises(TypeError, match="complex"):
        snn.Linear.from_operator(sl.Dense(np.ones((8, 16), complex)))
    with pytest.raises(TypeError, match=r"needs an nn\.Linear"):
        snn.Linear.from_linear(layer, "monarch")
    with pytest.raises(ValueError, match="kron factors"):
        snn.Linear(16, 8, "kron", factors=((2, 2), (2, 2)))
    with pytest.raises(ValueError, match="positive integers"):
        snn.Linear(16, 8, "kron", factors=((2, 4), (4, 4), (1, 1)))


def test_replace_linear_leaves_linear_subclasses_alone():
    attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    model = torch.nn.ModuleDict({"attn": attention, "mlp": torch.nn.Linear(32, 32)})
    snn.replace_linear(model, "monarch")
    assert isinstance(model["mlp"], snn.Linear)
    assert not isinstance(attention.out_proj, snn.Linear)
    x = torch.randn(2, 5, 32)
    assert attention(x, x, x)[0].shape == (2, 5, 32)


def _rms(t: torch.Tensor) -> float:
    return t.pow(2).mean().sqrt().item()


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        snn.Linear(64, 256, "monarch", nblocks=4),
        torch.nn.GELU(),
        snn.Linear(256, 64, "monarch", nblocks=4, weight_norm=True),
    )


def test_two_layer_monarch_mlp_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = _mlp()
    x = torch.randn(8, 64)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), model(x))


def test_autocast_bfloat16():
    torch.manual_seed(0)
    model = _mlp()
    x = torch.randn(8, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), model(x), rtol=5e-2, atol=5e-2)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = _mlp()
    x = torch.randn(8, 64)
    gpu = _mlp().cuda()
    gpu.load_state_dict(model.state_dict())
    torch.testing.assert_close(gpu(x.cuda()).cpu(), model(x), rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert gpu(x.cuda()).dtype == torch.bfloat16
    layer = snn.Linear(64, 32, "btt", device="cuda")
    assert all(p.is_cuda for p in layer.parameters())


# -- checkpoints of the original Monarch code ----------------------------------------------------
def original_block_shapes(in_features: int, out_features: int, nblocks: int):
    """`blkdiag1`, `blkdiag2` shapes of the original `MonarchLinear(in_features, out_features, nblocks)`.

    Written from its published layout: block sizes `ceil(d / nblocks)`; the smaller padded
    side sets the middle size.
    """
    in_blk, out_blk = -(-in_features // nblocks), -(-out_features // nblocks)
    if in_blk * nblocks < out_blk * nblocks:
        return (nblocks, in_blk, in_blk), (nblocks, out_blk, in_blk)
    return (nblocks, out_blk, in_blk), (nblocks, out_blk, out_blk)


def original_monarch_forward(x, blkdiag1, blkdiag2, bias, out_features):
    """The original `MonarchLinear` forward pass, written from its published layout.

    Pad the input to `k p`; the dense block-diagonal of `blkdiag1`; the intermediate
    `(r l) -> (l r)`; the dense block-diagonal of `blkdiag2`; the output `(l s) -> (s l)`;
    keep the first `out_features`; add the bias.
    """
    k, _, p = blkdiag1.shape
    nb2, s, r = blkdiag2.shape  # (l, s, r)
    x = torch.nn.functional.pad(x, (0, k * p - x.shape[-1]))
    out1 = x @ torch.block_diag(*blkdiag1.unbind(0)).T
    out1 = out1.reshape(-1, r, nb2).transpose(1, 2).reshape(-1, nb2 * r)
    out2 = out1 @ torch.block_diag(*blkdiag2.unbind(0)).T
    out2 = out2.reshape(-1, nb2, s).transpose(1, 2).reshape(-1, s * nb2)
    y = out2[:, :out_features]
    return y if bias is None else y + bias


MONARCH_SIZES = [(16, 16, 4), (10, 13, 4), (20, 6, 2), (7, 7, 3), (5, 17, 2), (64, 24, 8)]


def _checkpoint(in_features, out_features, nblocks, dtype, seed=0, bias=True):
    generator = torch.Generator().manual_seed(seed)
    shape1, shape2 = original_block_shapes(in_features, out_features, nblocks)
    state = {
        "blkdiag1": torch.randn(shape1, generator=generator, dtype=dtype),
        "blkdiag2": torch.randn(shape2, generator=generator, dtype=dtype),
    }
    if bias:
        state["bias"] = torch.randn(out_features, generator=generator, dtype=dtype)
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("in_features", "out_features", "nblocks"), MONARCH_SIZES)
def test_monarch_checkpoint_gives_the_original_outputs_and_gradients(
    in_features, out_features, nblocks, dtype
):
    state = _checkpoint(in_features, out_features, nblocks, dtype)
    layer = snn.Linear.from_monarch_state_dict(state, in_features, out_features)
    assert (layer.in_features, layer.out_features, layer.structure) == (
        in_features,
        out_features,
        "monarch",
    )
    assert {n: p.dtype for n, p in layer.named_parameters()} == dict.fromkeys(
        ("blocks_0", "blocks_1", "bias"), dtype
    )
    x = torch.randn(6, in_features, dtype=dtype, requires_grad=True)
    g = torch.randn(6, out_features, dtype=dtype)
    reference = {name: t.clone().requires_grad_() for name, t in state.items()}
    x_ref = x.detach().clone().requires_grad_()
    expected = original_monarch_forward(
        x_ref, reference["blkdiag1"], reference["blkdiag2"], reference["bias"], out_features
    )
    y = layer(x)
    tol = TOL[dtype]
    torch.testing.assert_close(y, expected, rtol=tol, atol=tol)
    (y * g).sum().backward()
    (expected * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=tol, atol=tol)
    for ours, theirs in (("blocks_0", "blkdiag1"), ("blocks_1", "blkdiag2"), ("bias", "bias")):
        torch.testing.assert_close(
            getattr(layer, ours).grad, reference[theirs].grad, rtol=tol, atol=tol
        )
    # The checkpoint's tensors are copied, not shared.
    assert layer.blocks_0.data_ptr() != state["blkdiag1"].data_ptr()


def test_monarch_checkpoint_of_a_model_without_bias():
    inner = _checkpoint(10, 13, 4, torch.float64, bias=False)
    model_state = {"embed.weight": torch.ones(3, 3)}
    model_state |= {f"blocks.0.mlp.fc1.{name}": t for name, t in inner.items()}
    with pytest.raises(KeyError, match=r"no 'blkdiag1', 'blkdiag2'.*prefix='mlp.fc1.'"):
        snn.Linear.from_monarch_state_dict(model_state, 10, 13)
    layer = snn.Linear.from_monarch_state_dict(
        model_state, 10, 13, prefix="blocks.0.mlp.fc1.", dtype=torch.float32
    )
    assert layer.bias is None
    assert layer.blocks_0.dtype == torch.float32
    x = torch.randn(4, 10)
    expected = original_monarch_forward(
        x.double(), inner["blkdiag1"], inner["blkdiag2"], None, 13
    ).float()
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("in_features", "out_features", "nblocks"), MONARCH_SIZES[:3])
def test_monarch_state_dict_round_trip(in_features, out_features, nblocks):
    torch.manual_seed(0)
    layer = snn.Linear(in_features, out_features, "monarch", nblocks=nblocks, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.normal_()
    state = layer.to_monarch_state_dict()
    assert set(state) == {"blkdiag1", "blkdiag2", "bias"}
    shapes = original_block_shapes(in_features, out_features, nblocks)
    assert (tuple(state["blkdiag1"].shape), tuple(state["blkdiag2"].shape)) == shapes
    x = torch.randn(3, in_features, dtype=torch.float64)
    expected = original_monarch_forward(x, *state.values(), out_features)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    again = snn.Linear.from_monarch_state_dict(state, in_features, out_features)
    torch.testing.assert_close(again(x), layer(x), rtol=0, atol=0)
    # The original code's optimiser state can continue: the multipliers are the layer's.
    assert snn.mup_lr_multipliers(again) == snn.mup_lr_multipliers(layer)


def test_monarch_checkpoint_errors():
    state = _checkpoint(10, 13, 4, torch.float64)
    with pytest.raises(ValueError, match=r"take 12 inputs and give 16 outputs.*at most 12 and 16"):
        snn.Linear.from_monarch_state_dict(state, 13, 13)
    with pytest.raises(ValueError, match=r"must be 3-D"):
        snn.Linear.from_monarch_state_dict({**state, "blkdiag1": torch.ones(12, 12)}, 10, 13)
    with pytest.raises(ValueError, match=r"l \* r == k \* q"):
        snn.Linear.from_monarch_state_dict({**state, "blkdiag2": torch.ones(4, 4, 2)}, 10, 13)
    with pytest.raises(ValueError, match=r"bias must have shape \(13,\)"):
        snn.Linear.from_monarch_state_dict({**state, "bias": torch.ones(16)}, 10, 13)
    with pytest.raises(TypeError, match=r"needs a Monarch layer, but this layer holds BTT"):
        snn.Linear(16, 16, "btt").to_monarch_state_dict()
    transposed = snn.Linear.from_operator(sl.Monarch.random(16, 16, 4, rng=0).T)
    with pytest.raises(TypeError, match=r"needs the original layout"):
        transposed.to_monarch_state_dict()


@pytest.mark.parametrize(("d_in", "d_out", "nblocks"), [(16, 8, 32), (3, 16, 4), (5, 7, 9)])
def test_monarch_with_more_blocks_than_features(d_in, d_out, nblocks):
    """As the original MonarchLinear: blocks of width 1, the input or output padded."""
    torch.manual_seed(0)
    layer = snn.Linear(d_in, d_out, "monarch", nblocks=nblocks).double()
    first, second = sl.Monarch.layout(d_in, d_out, nblocks)
    assert layer.operator.blkdiag1.shape == first
    assert layer.operator.blkdiag2.shape == second
    x = torch.randn(4, d_in, dtype=torch.float64)
    dense = layer.operator.to_dense()
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, rtol=1e-12, atol=1e-12)
    linear = torch.nn.Linear(d_in, d_out, dtype=torch.float64)
    projected = snn.Linear.from_linear(linear, "monarch", nblocks=nblocks)
    W = projected.operator.to_dense()
    P = sl.project(linear.weight.detach(), sl.Monarch, nblocks=nblocks).to_dense()
    torch.testing.assert_close(W, P)
