"""Hardening of the algorithms and rules (issue 18): every operator of every backend
pickles and copies; value-free members; non-finite and low-precision input to the
factorisations; complex scalars on PyTorch; the conjugate bit; arithmetic with arrays
and `sum`; keyword typos; `logdet` of a negative determinant; huge dense sizes;
Monarch with more blocks than rows or columns."""

from __future__ import annotations

import copy
import importlib.util
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import structlin as sl
from conformance import BACKENDS, to_backend, to_numpy

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None


def _catalogue(backend: str) -> dict[str, sl.LinearOperator]:
    """One operator of every kind on `backend`, float64."""
    rng = np.random.default_rng(0)

    def arr(*shape: int) -> Any:
        return to_backend(rng.standard_normal(shape), backend)

    def well(n: int) -> Any:
        return to_backend(np.eye(n) + 0.2 * rng.standard_normal((n, n)), backend)

    W = arr(8, 8)
    D = sl.Dense(well(4))
    ops: dict[str, sl.LinearOperator] = {
        "Dense": D,
        "Identity": sl.Identity(4),
        "Identity(dtype)": sl.Identity(4, np.float64),
        "Diagonal": sl.Diagonal(arr(4)),
        "Permutation": sl.Permutation(to_backend(np.array([2, 0, 3, 1]), backend)),
        "StridePermutation": sl.StridePermutation(2, 3),
        "BlockDiag": sl.BlockDiag(arr(2, 2, 2)),
        "Kron": sl.Kron(well(2), well(2)),
        "LowRank": sl.LowRank(arr(4, 2), arr(2, 4)),
        "Monarch": sl.project(W, sl.Monarch, nblocks=2),
        "GeneralizedMonarch": sl.GeneralizedMonarch(
            [arr(2, 3, 3), arr(2, 3, 3)], [None, (2, 3), None]
        ),
        "TT": sl.project(W, sl.TT, ms=(2, 4), ns=(4, 2), ranks=2),
        "BTT": sl.project(W, sl.BTT, ms=(2, 4), ns=(4, 2), ranks=1),
        "Sum": D + sl.Dense(well(4)),
        "Product": D @ sl.Dense(well(4)),
        "ScalarMul": 2.0 * D,
        "Transpose": sl.Transpose(D),
        "Adjoint": sl.Adjoint(D),
        "Inverse": sl.Inverse(D),
        "Kron(Identity)": sl.Kron(sl.Identity(2), well(2)),
    }
    if backend != "numpy":
        ops["Identity(backend)"] = sl.Identity(4, D.dtype, backend, D.device)
    return ops


def _dense(A: sl.LinearOperator) -> np.ndarray:
    return to_numpy(A.to_dense())


# -- pickling and copying ---------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_operator_pickles_and_deep_copies(backend: str) -> None:
    for name, A in _catalogue(backend).items():
        _ = (A.backend, A.device, A.dtype)  # fill the cached values (a JAX device among them)
        expected = _dense(A)
        for how, clone in (
            ("pickle", lambda A: pickle.loads(pickle.dumps(A))),
            ("deepcopy", copy.deepcopy),
            ("copy", copy.copy),
        ):
            B = clone(A)
            assert type(B) is type(A), (name, how)
            assert B.backend is A.backend, (name, how)  # the registered singleton
            assert B.shape == A.shape, (name, how)
            assert B.dtype == A.dtype, (name, how)
            np.testing.assert_allclose(_dense(B), expected, err_msg=f"{name} {how}")


@pytest.mark.skipif(not HAS_JAX, reason="needs JAX")
def test_jax_identity_with_a_device_pickles() -> None:
    import jax

    device = jax.devices()[0]
    A = sl.Identity(3, np.float64, "jax", device)
    B = pickle.loads(pickle.dumps(A))
    assert B.device == device
    assert B.backend is A.backend


# -- value-free members -------------------------------------------------------------------
def _identity_dtypes() -> list[Any]:
    out: list[Any] = [None, np.float64, np.float32, "float32"]
    if HAS_TORCH:
        import torch

        out.append(torch.float32)
    return out


@pytest.mark.parametrize("dtype", _identity_dtypes(), ids=str)
@pytest.mark.parametrize(
    "build",
    [
        lambda eye: sl.Kron(eye(2), eye(3)),
        lambda eye: eye(6) + eye(6),
        lambda eye: sl.Product(eye(6), eye(6)),
        lambda eye: 2j * eye(6),
        lambda eye: sl.Transpose(eye(6)),
        lambda eye: sl.Inverse(eye(6)),
        lambda eye: sl.Kron(eye(2), eye(3)) @ sl.Kron(eye(2), eye(3)),
    ],
    ids=["Kron", "Sum", "Product", "ScalarMul", "Transpose", "Inverse", "Kron@Kron"],
)
def test_composites_of_value_free_identities(build: Callable, dtype: Any) -> None:
    A = build(lambda n: sl.Identity(n, dtype=dtype))
    scale = 2j if isinstance(A, sl.ScalarMul) else 2 if isinstance(A, sl.Sum) else 1
    reference = scale * np.eye(6)
    np.testing.assert_allclose(_dense(A), reference)
    np.testing.assert_allclose(to_numpy(A @ np.ones(6)), reference @ np.ones(6))
    np.testing.assert_allclose(to_numpy(sl.diag(A)), np.diag(reference))
    _, logabsdet = sl.slogdet(A)
    np.testing.assert_allclose(
        float(np.real(to_numpy(logabsdet))), 6 * np.log(abs(scale)), atol=1e-6
    )
    np.testing.assert_allclose(_dense(A.inv()), np.linalg.inv(reference), atol=1e-6)
    if HAS_TORCH:
        import torch

        y = A @ torch.ones(6, dtype=torch.float64)
        np.testing.assert_allclose(to_numpy(y), reference @ np.ones(6))


# -- complex scalars times real operators; the conjugate bit (PyTorch) -------------------
def _square_ops(backend: str, dtype: str) -> dict[str, sl.LinearOperator]:
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((4, 4)) + 3 * np.eye(4)).astype(dtype)
    A = to_backend(a, backend)
    return {
        "Dense": sl.Dense(A),
        "Kron": sl.Kron(A[:2, :2], A[2:, 2:]),
        "Diagonal": sl.Diagonal(A[0]),
        "BlockDiag": sl.BlockDiag(to_backend(np.stack([a[:2, :2], a[2:, 2:]]), backend)),
        "Monarch": sl.project(A, sl.Monarch, nblocks=2),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_complex_scalar_times_real_operator(backend: str, dtype: str) -> None:
    rtol = 1e-4 if dtype == "float32" else 1e-10
    b = to_backend(np.arange(1.0, 5.0) + 1j, backend)
    x = to_backend(np.arange(1.0, 5.0).astype(dtype), backend)
    scalars = [
        1j,
        2 - 1j,
        to_backend(np.array(2 + 1j), backend),
        to_backend(np.array(2.0), backend),
    ]
    for name, op in _square_ops(backend, dtype).items():
        for c in scalars:
            S = c * op
            c_ = complex(to_numpy(c)) if not isinstance(c, complex) else c
            ref = c_ * _dense(op)
            what = f"{name} {c!r}"
            np.testing.assert_allclose(_dense(S), ref, rtol=rtol, err_msg=what)
            np.testing.assert_allclose(
                to_numpy(sl.solve(S, b)), np.linalg.solve(ref, to_numpy(b)), rtol=rtol, err_msg=what
            )
            np.testing.assert_allclose(
                to_numpy(sl.solve(S, x)), np.linalg.solve(ref, to_numpy(x)), rtol=rtol, err_msg=what
            )
            np.testing.assert_allclose(to_numpy(S @ x), ref @ to_numpy(x), rtol=rtol, err_msg=what)
            np.testing.assert_allclose(to_numpy(x @ S), to_numpy(x) @ ref, rtol=rtol, err_msg=what)
            np.testing.assert_allclose(
                _dense(S.inv()), np.linalg.inv(ref), rtol=10 * rtol, err_msg=what
            )
            sign, logabsdet = sl.slogdet(S)
            ref_sign, ref_logabsdet = np.linalg.slogdet(ref)
            np.testing.assert_allclose(
                complex(to_numpy(sign)), ref_sign, rtol=10 * rtol, err_msg=what
            )
            np.testing.assert_allclose(
                float(to_numpy(logabsdet)), ref_logabsdet, rtol=10 * rtol, err_msg=what
            )
            np.testing.assert_allclose(_dense(S.H), ref.conj().T, rtol=rtol, err_msg=what)


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_torch_results_carry_no_conjugate_bit() -> None:
    import torch

    for name, op in _square_ops("torch", "float64").items():
        C = 1j * op + op
        x = torch.ones(4, dtype=torch.complex128)
        for what, result in (
            ("H.to_dense", C.H.to_dense()),
            ("H @ x", C.H @ x),
            ("x @ H", x @ C.H),
            ("H.H", C.H.H.to_dense()),
            ("inv(H)", C.H.inv().to_dense()),
            ("diag(H)", sl.diag(C.H)),
            ("solve(H)", sl.solve(C.H, x)),
        ):
            assert not result.is_conj(), (name, what)
            assert not result.is_neg(), (name, what)
            result.numpy()  # refuses a tensor with the conjugate bit
    A = torch.tensor([[1 + 2j, 0], [3, 4j]])
    np.testing.assert_array_equal(sl.Dense(A).H.to_dense().numpy(), A.numpy().conj().T)
