"""`structlin.nn.MonarchMixer`: the Monarch-DFT convolution against torch.fft, causality, training plumbing."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import structlin as sl  # noqa: E402
import structlin.nn as snn  # noqa: E402
from structlin.nn import _monarch_conv  # noqa: E402


def fft_reference(u: torch.Tensor, k_fwd: torch.Tensor, k_rev: torch.Tensor | None) -> torch.Tensor:
    """The linear convolution of `u` `(B, N, d)` with lags `0..N-1` (and `-1..-(N-1)`) by
    `torch.fft`, zero-padded to `2N`, in float64."""
    u = u.double()
    _, N, d = u.shape
    n = 2 * N
    k = torch.zeros(n, d, dtype=torch.float64)
    k[:N] = k_fwd.double()
    if k_rev is not None:
        k[n - N + 1 :] = k_rev.double().flip(0)
    spectrum = torch.fft.rfft(u, n=n, dim=1) * torch.fft.rfft(k, n=n, dim=0)
    return torch.fft.irfft(spectrum, n=n, dim=1)[:, :N]


def direct_reference(u: torch.Tensor, k_fwd: torch.Tensor, k_rev: torch.Tensor | None):
    """`y[:, t] = sum_s k[s] u[:, t - s]` term by term (small sizes)."""
    _, N, _ = u.shape
    y = torch.zeros_like(u, dtype=torch.float64)
    for t in range(N):
        for s in range(N):  # input position s, lag t - s
            lag = t - s
            if lag >= 0:
                y[:, t] += k_fwd[lag].double() * u[:, s].double()
            elif k_rev is not None:
                y[:, t] += k_rev[-lag - 1].double() * u[:, s].double()
    return y


def conv_layer(
    d: int, max_len: int, causal: bool, dtype: torch.dtype, seed: int = 0, order: int = 2
):
    """A layer whose kernels span every lag at unit scale (no decay), to test the
    convolution over its whole length."""
    torch.manual_seed(seed)
    layer = snn.MonarchMixer(d, max_len, causal=causal, structure="dense", dtype=dtype, order=order)
    with torch.no_grad():
        layer.decay.zero_()
        layer.kernel.normal_(0, 1 / math.sqrt(max_len))
        if layer.kernel_reverse is not None:
            layer.kernel_reverse.normal_(0, 1 / math.sqrt(max_len))
    return layer


def random_block(d: int = 8, max_len: int = 40, dtype=torch.float64, seed: int = 0, **kw):
    """A block whose residual branches are not zero (every parameter random)."""
    torch.manual_seed(seed)
    block = snn.MonarchMixer(d, max_len, zero_init_residual=False, nblocks=2, dtype=dtype, **kw)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return block


# -- the transform and the convolution ------------------------------------------------
@pytest.mark.parametrize("seq_len", [1, 2, 3, 5, 8, 12, 100, 256, 1009])
def test_monarch_dft_blocks_give_numpy_fft(seq_len):
    """The plan's blocks are `sl.dft`'s, and `_dft` in its `[f_a, f_b]` order is `np.fft.fft`
    of the zero-padded input."""
    plan = _monarch_conv.plan(seq_len, torch.float64, torch.device("cpu"))
    n, a, b = plan.n, plan.a, plan.b
    assert (n, a, b) == _monarch_conv.conv_size(seq_len) == snn.MonarchMixer.dft_size(seq_len)
    assert n >= 2 * seq_len
    assert a * b == n
    F = sl.dft(n, factors=(a, b))
    # F_a is sl.dft's first block; the twiddles moved into the second factor's blocks.
    w1, w2 = plan.w1.numpy(), plan.w2.numpy()
    np.testing.assert_allclose(w1[:a] + 1j * w1[a:], F.blkdiag1[0], atol=1e-12)
    twiddle = F.blkdiag1[:, :, 0].T  # [f_a, t_b]
    second = w2[0] + 1j * w2[1]
    np.testing.assert_allclose(second, F.blkdiag2 * twiddle[:, None, :], atol=1e-12)
    x = np.random.default_rng(seq_len).standard_normal((seq_len, 3))
    zr, zi = _monarch_conv._dft(torch.as_tensor(x), plan)
    # [f_a, f_b] is frequency f_b a + f_a.
    z = (zr + 1j * zi).numpy().transpose(1, 0, 2).reshape(n, 3)
    np.testing.assert_allclose(z, np.fft.fft(x, n=n, axis=0), atol=1e-9 * n)


def test_dft_sizes_are_sub_quadratic_for_every_length():
    for seq_len in range(1, 2100):
        n, a, b = _monarch_conv.conv_size(seq_len)
        assert a * b == n
        assert 2 * seq_len <= n <= 2 * seq_len + 16, seq_len
        assert 4 * a + 16 * b <= 24 * math.sqrt(n), seq_len
    assert _monarch_conv.conv_size(4096) == (8192, 128, 64)
    with pytest.raises(ValueError, match="must be a positive integer"):
        _monarch_conv.conv_size(0)
    with pytest.raises(TypeError, match="must be an integer"):
        _monarch_conv.conv_size(8.0)


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq_len", [64, 1000, 2048])
def test_conv_equals_the_fft_reference_in_float32(causal, seq_len, order):
    """The acceptance criterion: 1e-5 against a torch.fft convolution, float32, long sequences."""
    layer = conv_layer(4, seq_len, causal, torch.float32, order=order)
    u = torch.randn(2, seq_len, 4)
    y = layer.long_conv(u)
    assert y.dtype == torch.float32
    assert y.shape == u.shape
    k_fwd, k_rev = layer.kernels(seq_len)
    reference = fft_reference(u, k_fwd, k_rev)
    torch.testing.assert_close(y.double(), reference, rtol=1e-5, atol=1e-5)


@given(
    seq_len=st.integers(1, 40),
    d=st.integers(1, 4),
    batch=st.integers(1, 3),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
    order=st.integers(2, 4),
)
def test_conv_equals_the_direct_sum_in_float64(seq_len, d, batch, causal, seed, order):
    """Every length (powers of two, primes, padded DFT sizes) and order against the definition."""
    layer = conv_layer(d, 40, causal, torch.float64, seed, order=order)
    u = torch.randn(batch, seq_len, d, dtype=torch.float64)
    k_fwd, k_rev = layer.kernels(seq_len)
    want = direct_reference(u, k_fwd, k_rev)
    torch.testing.assert_close(layer.long_conv(u), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fft_reference(u, k_fwd, k_rev), want, rtol=1e-10, atol=1e-10)


def test_kernels_decay_and_shapes():
    layer = snn.MonarchMixer(16, 32, causal=False, dtype=torch.float64)
    k_fwd, k_rev = layer.kernels(10)
    assert k_fwd.shape == (10, 16)
    assert k_rev.shape == (9, 16)
    lags = torch.arange(10, dtype=torch.float64)[:, None]
    torch.testing.assert_close(k_fwd, layer.kernel[:10] * torch.exp(-lags * layer.decay))
    torch.testing.assert_close(k_rev, layer.kernel_reverse[:9] * torch.exp(-lags[1:] * layer.decay))
    # Half-lives from 1 to max_len positions.
    half_lives = math.log(2) / layer.decay
    assert half_lives[0].item() == pytest.approx(1.0)
    assert half_lives[-1].item() == pytest.approx(32.0)
    assert snn.MonarchMixer(16, 32).kernels(10)[1] is None


# -- causality ------------------------------------------------------------------------
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("seq_len", [37, 64])
def test_causal_block_outputs_never_depend_on_later_inputs(seq_len, order):
    block = random_block(max_len=64, order=order)
    x = torch.randn(2, seq_len, 8, dtype=torch.float64)
    y = block(x)
    for t in [0, 1, 7, seq_len // 2, seq_len - 1]:
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 8, dtype=torch.float64)
        delta = (block(x2) - y).abs()
        if t:
            assert delta[:, :t].max().item() <= 1e-12, t
        assert delta[:, t].max().item() > 1e-3, t  # ... but do depend on the present one
    # Outputs on a prefix are those of the prefix alone (another DFT length, the same values).
    for t in [1, 10, seq_len - 3]:
        torch.testing.assert_close(block(x[:, :t]), y[:, :t], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", [2, 3])
def test_causal_gradients_vanish_for_later_inputs(order):
    block = random_block(max_len=24, order=order)
    x = torch.randn(1, 24, 8, dtype=torch.float64, requires_grad=True)
    for t in [0, 5, 23]:
        (grad,) = torch.autograd.grad(block(x)[0, t].sum(), x)
        if t < 23:
            assert grad[0, t + 1 :].abs().max().item() <= 1e-12, t
        assert grad[0, t].abs().max().item() > 1e-3, t


@pytest.mark.parametrize("order", [2, 3])
def test_bidirectional_block_depends_on_later_inputs(order):
    block = random_block(max_len=64, causal=False, order=order)
    x = torch.randn(2, 50, 8, dtype=torch.float64)
    y = block(x)
    for t in [1, 25, 49]:
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 8, dtype=torch.float64)  # not a constant: LayerNorm removes it
        delta = (block(x2) - y).abs()
        assert delta[:, :t].amax(dim=(0, 2)).min().item() > 1e-8, t  # every earlier position moves
        assert delta[:, :t].max().item() > 1e-3, t


# -- the layer ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("structure", "nblocks"), [("monarch", 4), ("blockdiag", 2), ("dense", 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_shapes_dtypes_and_identity_at_init(dtype, structure, nblocks, causal):
    block = snn.MonarchMixer(
        16, 50, causal=causal, structure=structure, nblocks=nblocks, dtype=dtype
    )
    assert all(t.dtype == dtype for t in (*block.parameters(), *block.buffers()))
    assert all(k is None or k.dtype == dtype for k in block.kernels(7))
    for seq_len in (1, 13, 50):
        x = torch.randn(3, seq_len, 16, dtype=dtype)
        y = block(x)
        assert y.shape == x.shape
        assert y.dtype == dtype
        # The residual branches start at zero (zero_init_residual).
        torch.testing.assert_close(y, x, rtol=0, atol=0)
        assert block.sequence_mixing(x).shape == x.shape
        assert block.dimension_mixing(x).shape == x.shape
    assert f"structure={structure!r}" in repr(block)


def test_random_block_values_are_float32_float64_consistent():
    block64 = random_block(max_len=32)
    block32 = copy.deepcopy(block64).float()
    x = torch.randn(2, 32, 8, dtype=torch.float64)
    torch.testing.assert_close(block32(x.float()).double(), block64(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_in_float64(causal, order):
    torch.manual_seed(0)
    block = random_block(d=4, max_len=7, causal=causal, order=order)
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
    # ... and in the convolution's own parameters.
    names = ["kernel", "short_filter"] + ([] if causal else ["kernel_reverse"])
    params = {name: getattr(block, name).detach().clone().requires_grad_() for name in names}

    def of_params(*values):
        return torch.func.functional_call(block, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(of_params, tuple(params.values()))


def test_every_parameter_gets_a_gradient():
    block = random_block()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    (block(x) * torch.randn_like(x)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 0, name
    # Lags beyond the sequence get none.
    assert block.kernel.grad[20:].abs().max() == 0


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    block = random_block(max_len=32, dtype=torch.float32)
    x = torch.randn(2, 32, 8)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), block(x))
    # Another length: one eager call builds its DFT blocks, then it compiles too.
    short = torch.randn(2, 20, 8)
    block(short)
    torch.testing.assert_close(compiled(short), block(short))
    (compiled(x) ** 2).sum().backward()
    assert block.kernel.grad is not None


def test_autocast_bfloat16_keeps_the_convolution_in_float32():
    block = random_block(max_len=64, dtype=torch.float32)
    x = torch.randn(2, 64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    torch.testing.assert_close(y.float(), block(x), rtol=0.1, atol=0.1)


def test_mup_metadata_and_param_groups():
    block = snn.MonarchMixer(64, 16, nblocks=4)
    model = torch.nn.Sequential(block, torch.nn.Linear(64, 10))
    for layer in (block.in_proj, block.out_proj, block.up, block.down):
        assert isinstance(layer, snn.Linear)
        assert set(layer.mup) == {"blocks_0", "blocks_1"}
        assert all(hasattr(getattr(layer, name), "mup") for name in layer.mup)
    multipliers = snn.mup_lr_multipliers(model)
    assert multipliers["0.in_proj.blocks_0"] == block.in_proj.mup["blocks_0"].lr_multiplier != 1.0
    assert (
        multipliers["0.kernel"] == multipliers["0.short_filter"] == multipliers["1.weight"] == 1.0
    )
    groups = snn.param_groups(model, lr=1e-3, weight_decay=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["0.up.blocks_1"]["lr"] == pytest.approx(
        1e-3 * block.up.mup["blocks_1"].lr_multiplier
    )
    assert by_name["0.norm1.weight"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.AdamW(groups).step()


def test_bad_inputs_and_arguments():
    block = snn.MonarchMixer(16, 32)
    with pytest.raises(ValueError, match=r"sequence length 33 exceeds max_len = 32.*max_len >= 33"):
        block(torch.randn(2, 33, 16))
    with pytest.raises(ValueError, match="empty sequence"):
        block(torch.randn(2, 0, 16))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len, 16\), got \(2, 8, 15\)"):
        block(torch.randn(2, 8, 15))
    with pytest.raises(ValueError, match="got \\(8, 16\\)"):
        block.sequence_mixing(torch.randn(8, 16))
    with pytest.raises(TypeError, match=r"torch.float32 parameters but got a torch.float64"):
        block(torch.randn(2, 8, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="structure must be one of"):
        snn.MonarchMixer(16, 32, structure="btt")
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        snn.MonarchMixer(16, 0)
    with pytest.raises(TypeError, match=r"d_model must be an integer, got float 16\.0"):
        snn.MonarchMixer(16.0, 32)
    with pytest.raises(ValueError, match="divisible by 3"):
        snn.MonarchMixer(16, 32, structure="blockdiag", nblocks=3)


def test_reset_parameters_restores_the_identity():
    block = random_block()
    block.zero_init_residual = True
    block.reset_parameters()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    block = random_block(max_len=64, dtype=torch.float32)
    gpu = copy.deepcopy(block).cuda()
    x = torch.randn(2, 64, 8)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), block(x), rtol=1e-4, atol=1e-4)
    (gpu(x.cuda()) ** 2).sum().backward()
    assert gpu.kernel.grad.is_cuda


def test_order_p_dft_sizes_and_repr():
    assert snn.MonarchMixer.dft_size(512, order=3) == (1024, 8, 8, 16)
    assert snn.MonarchMixer.dft_size(100) == snn.MonarchMixer.dft_size(100, order=2)
    for seq_len in [1, 7, 97, 1000, 4097]:
        for order in (3, 4):
            n, *factors = snn.MonarchMixer.dft_size(seq_len, order=order)
            assert n >= 2 * seq_len
            assert math.prod(factors) == n
            assert len(factors) == order
            assert sum(factors) <= 1.5 * order * n ** (1 / order) + 1e-9
    block = snn.MonarchMixer(8, 16, order=3)
    assert "order=3" in repr(block)
    with pytest.raises(ValueError, match="order must be at least 2"):
        snn.MonarchMixer(8, 16, order=1)


def test_order_p_plan_is_the_order_p_monarch_dft():
    """The plan's factors are those of `sl.dft(n, factors=...)`: its F x in digit order."""
    plan = _monarch_conv.plan_order(20, 3, torch.float64, torch.device("cpu"))
    F = sl.dft(plan.n, factors=plan.factors)
    assert F.nfactors == 3
    x = torch.randn(plan.n, 1, dtype=torch.float64)
    z = _monarch_conv._dft_order(x, plan)  # (n_1, n_2, n_3, 1), frequency f_1 + n_1 f_2 + ...
    want = np.fft.fft(x[:, 0].numpy())
    got = z[..., 0].numpy().transpose(2, 1, 0).reshape(-1)  # to the natural order
    np.testing.assert_allclose(got, want, atol=1e-10)
