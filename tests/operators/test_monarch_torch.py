"""The PyTorch Monarch kernel: values and gradients against the original code's multiply."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import structlin as sl  # noqa: E402
from structlin.operators import _monarch_torch  # noqa: E402

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def original(x, w1, w2):
    """The original code's `blockdiag_butterfly_multiply_reference` (version 2), in PyTorch."""
    k, _, p = w1.shape
    l, s, r = w2.shape
    batch = x.shape[0]
    out1 = torch.einsum("kqp,bkp->bkq", w1, x.reshape(batch, k, p)).reshape(batch, r, l)
    out2 = torch.einsum("lsr,blr->bsl", w2, out1.transpose(1, 2))
    return out2.reshape(batch, s * l)


@st.composite
def block_shapes(draw):
    """`(k, q, p), (l, s, r)` with `l r == k q`: any chaining sizes, not only square ones."""
    k, q, p = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    l = draw(st.sampled_from(divisors(k * q)))
    return (k, q, p), (l, draw(st.integers(1, 5)), k * q // l)


def counting_kernel(monkeypatch) -> list[int]:
    """Count the calls of the two entry points the operators' rules take."""
    calls = [0]
    for name in ("rows_times_monarch_t", "monarch_times_cols"):
        function = getattr(_monarch_torch, name)

        def counted(*args, function=function):
            calls[0] += 1
            return function(*args)

        monkeypatch.setattr(_monarch_torch, name, counted)
    return calls


# Every way to `X M^T`: the autograd kernel and the few-rows path whatever the number of rows,
# the entry point (which picks one by the number of rows) and the columns product `M X^T`.
PATHS = {
    "kernel": lambda x, w1, w2: _monarch_torch._RowsTimesMonarchT.apply(x, w1, w2)[0],
    "few rows": _monarch_torch._few_rows_times_monarch_t,
    "entry": _monarch_torch.rows_times_monarch_t,
    "columns": lambda x, w1, w2: _monarch_torch.monarch_times_cols(x.t(), w1, w2).t(),
}
# Both sides of the switch between the few-rows path and the kernel.
ROWS = st.sampled_from([1, 2, 5, _monarch_torch.SMALL - 1, _monarch_torch.SMALL, 40])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=15, deadline=None)
@given(shapes=block_shapes(), rows=ROWS, seed=st.integers(0, 2**16))
def test_values_and_gradients_match_the_original_multiply(path, dtype, shapes, rows, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    (k, q, p), (l, s, r) = shapes
    w1 = torch.randn(k, q, p, generator=gen, dtype=dtype, requires_grad=True)
    w2 = torch.randn(l, s, r, generator=gen, dtype=dtype, requires_grad=True)
    x = torch.randn(rows, k * p, generator=gen, dtype=dtype, requires_grad=True)
    y = PATHS[path](x, w1, w2)
    expected = original(x, w1, w2)
    torch.testing.assert_close(y, expected, rtol=TOL[dtype], atol=TOL[dtype])
    g = torch.randn(y.shape, generator=gen, dtype=dtype)
    got = torch.autograd.grad(y, (x, w1, w2), g)
    want = torch.autograd.grad(expected, (x, w1, w2), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])


def test_operator_products_use_the_kernel(monkeypatch) -> None:
    calls = counting_kernel(monkeypatch)
    M = sl.Monarch.random(10, 13, 4, rng=0, backend="torch", dtype=torch.float64)  # padded
    dense = torch.as_tensor(sl.Monarch.random(10, 13, 4, rng=0).to_dense())
    for rows in (1, 5, 20):
        x = torch.randn(rows, 10, dtype=torch.float64)
        torch.testing.assert_close(x @ M.T, x @ dense.T)  # rows times M^T: the layers' path
        torch.testing.assert_close(M @ x.T, dense @ x.T)  # columns
    torch.testing.assert_close(M @ x[0], dense @ x[0])  # a vector
    assert calls[0] == 7


def test_other_layouts_and_complex_take_the_generic_path(monkeypatch) -> None:
    calls = counting_kernel(monkeypatch)
    b = torch.randn(2, 3, 3, dtype=torch.float64)
    G = sl.GeneralizedMonarch([b, b], [(2, 3), (3, 2), None])
    x = torch.randn(4, 6, dtype=torch.float64)
    np.testing.assert_allclose(x @ G.T, x.numpy() @ G.to(backend="numpy").to_dense().T)
    C = sl.Monarch(b.to(torch.complex128), b.to(torch.complex128))
    C @ x.to(torch.complex128).T
    assert calls[0] == 0


def test_only_the_needed_gradients_are_computed() -> None:
    w1 = torch.randn(4, 4, 4, requires_grad=True)
    w2 = torch.randn(4, 4, 4)
    x = torch.randn(3, 16)
    (grad,) = torch.autograd.grad(_monarch_torch.rows_times_monarch_t(x, w1, w2).sum(), (w1,))
    torch.testing.assert_close(grad, torch.autograd.grad(original(x, w1, w2).sum(), (w1,))[0])


@pytest.mark.parametrize("path", PATHS)
def test_first_and_second_derivatives_by_finite_differences(path) -> None:
    gen = torch.Generator().manual_seed(0)
    args = [
        torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        for shape in [(3, 6), (2, 3, 3), (3, 2, 2)]
    ]
    assert torch.autograd.gradcheck(PATHS[path], args)
    assert torch.autograd.gradgradcheck(PATHS[path], args)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows", [3, 20])
def test_non_contiguous_rows(path, rows) -> None:
    w1, w2 = torch.randn(3, 2, 4), torch.randn(2, 5, 3)
    x = torch.randn(12, rows).t()  # (rows, 12) with column-major strides
    torch.testing.assert_close(PATHS[path](x, w1, w2), original(x, w1, w2))


def test_two_core_btt_products_use_the_kernel(monkeypatch) -> None:
    calls = counting_kernel(monkeypatch)
    A = sl.BTT.random(ms=(3, 4), ns=(4, 2), ranks=2, rng=0, backend="torch", dtype=torch.float64)
    dense = A.to_dense()
    x = torch.randn(20, 8, dtype=torch.float64)
    torch.testing.assert_close(x @ A.T, x @ dense.T)
    torch.testing.assert_close(A @ x.T, dense @ x.T)
    z = torch.randn(20, 12, dtype=torch.float64)
    torch.testing.assert_close(z @ A, z @ dense)  # X W: the generic path
    assert calls[0] == 2


@pytest.mark.parametrize("path", PATHS)
def test_autocast_forward_and_backward(path) -> None:
    gen = torch.Generator().manual_seed(0)
    args = [
        torch.randn(s, generator=gen, requires_grad=True) for s in [(8, 16), (4, 4, 4), (4, 4, 4)]
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = PATHS[path](*args)
    assert y.dtype == torch.bfloat16
    low = torch.autograd.grad(y.float().square().sum(), args)
    full = torch.autograd.grad(original(*args).square().sum(), args)
    for a, b in zip(low, full, strict=True):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 3e-2 * b.norm()
