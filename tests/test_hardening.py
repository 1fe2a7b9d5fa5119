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
        assert isinstance(y, torch.Tensor)  # not a NumPy array through __array_wrap__
        assert isinstance(torch.ones(2, 6) @ A, torch.Tensor)
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


# -- non-finite input to the factorisations ------------------------------------------------
PROJECTIONS = [
    (sl.LowRank, {"rank": 2}),
    (sl.Kron, {"factor_shapes": ((2, 4), (4, 2))}),
    (sl.Monarch, {"nblocks": 2}),
    (sl.BTT, {"ms": (2, 4), "ns": (4, 2), "ranks": 1}),
    (sl.TT, {"ms": (2, 4), "ns": (4, 2), "ranks": 2}),
    (sl.BlockDiag, {"nblocks": 2}),
    (sl.Diagonal, {}),
    (sl.Dense, {}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_project_refuses_non_finite_input(backend: str, bad: float) -> None:
    w = np.random.default_rng(0).standard_normal((8, 8))
    w[1, 2] = bad
    w[3, 3] = np.nan
    W = to_backend(w, backend)
    for structure, spec in PROJECTIONS:
        with pytest.raises(ValueError, match=r"project: W has 2 non-finite entries") as info:
            sl.project(W, structure, **spec)
        assert "nan_to_num" in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_factorisations_refuse_non_finite_matrices(backend: str) -> None:
    a = np.eye(4) + 0.1 * np.random.default_rng(0).standard_normal((4, 4))
    a[0, 1] = np.inf
    A = to_backend(a, backend)
    b = to_backend(np.ones(4), backend)
    blocks = to_backend(np.stack([a[:2, :2], np.eye(2)]), backend)
    for name, op in {
        "Dense": sl.Dense(A),
        "Kron": sl.Kron(A[:2, :2], A[2:, 2:]),
        "BlockDiag": sl.BlockDiag(blocks),
        "Monarch": sl.Monarch(blocks, blocks),
        "Sum": sl.Dense(A) + sl.Identity(4),
    }.items():
        for call in (
            lambda op=op: sl.inv(op).to_dense(),
            lambda op=op: sl.solve(op, b),
            lambda op=op: sl.slogdet(op),
        ):
            with pytest.raises(ValueError, match=r"non-finite entries \(1 inf, 0 nan\)"):
                call()
        # no factorisation: non-finite values propagate
        with np.errstate(invalid="ignore"):
            assert not np.isfinite(to_numpy(op @ b)).all(), name


@pytest.mark.skipif(not HAS_JAX, reason="needs JAX")
def test_jit_projection_of_non_finite_input_returns_nan() -> None:
    import jax
    import jax.numpy as jnp

    w = np.random.default_rng(0).standard_normal((8, 8))
    w[1, 2] = np.inf
    f = jax.jit(lambda W: sl.project(W, sl.LowRank, rank=2).to_dense())
    assert np.isnan(np.asarray(f(jnp.asarray(w)))).all()
    good = np.asarray(f(jnp.asarray(np.nan_to_num(w, posinf=0.0))))
    assert np.isfinite(good).all()


# -- half precision ----------------------------------------------------------------------
def _half_dtypes() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("numpy", np.float16)]
    if HAS_TORCH:
        import torch

        out += [("torch", torch.float16), ("torch", torch.bfloat16)]
    if HAS_JAX:
        import jax.numpy as jnp

        out += [("jax", jnp.float16), ("jax", jnp.bfloat16)]
    return out


def _f64(x: Any) -> np.ndarray:
    """`x` as float64 NumPy (through PyTorch's float64 for bfloat16, which NumPy lacks)."""
    if hasattr(x, "detach"):
        x = x.detach().double()
    return np.asarray(to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize(("backend", "dtype"), _half_dtypes(), ids=str)
def test_half_precision_factorisations_upcast(backend: str, dtype: Any) -> None:
    rng = np.random.default_rng(0)
    a = np.eye(4) * 2 + 0.3 * rng.standard_normal((4, 4))
    A = to_backend(a, backend)
    A = A.to(dtype) if backend == "torch" else A.astype(dtype)
    b = A[:, 0]
    tol = {"rtol": 0.05, "atol": 0.05}
    for name, op in {
        "Dense": sl.Dense(A),
        "Kron": sl.Kron(A[:2, :2], A[2:, 2:]),
        "BlockDiag": sl.BlockDiag(A.reshape(2, 2, 4)[:, :, :2]),
    }.items():
        R = _f64(op.to_dense())  # exactly the values held
        inv = op.inv().to_dense()
        assert inv.dtype == A.dtype, name
        np.testing.assert_allclose(_f64(inv), np.linalg.inv(R), **tol)
        x = sl.solve(op, b)
        assert x.dtype == A.dtype, name
        np.testing.assert_allclose(_f64(x), np.linalg.solve(R, _f64(b)), **tol)
        sign, logabsdet = sl.slogdet(op)
        assert logabsdet.dtype == A.dtype, name
        np.testing.assert_allclose(float(_f64(logabsdet)), np.linalg.slogdet(R)[1], **tol)
        assert float(_f64(sign)) == np.linalg.slogdet(R)[0]
    W = sl.Kron(A, A).to_dense()[:8, :8]
    for structure, spec in PROJECTIONS:
        P = sl.project(W, structure, **spec)
        assert P.dtype == A.dtype, structure
        assert np.isfinite(_f64(P.to_dense())).all(), structure
    np.testing.assert_allclose(_f64(sl.project(A, sl.LowRank, rank=4).to_dense()), _f64(A), **tol)


# -- arithmetic with arrays, numbers and sum() -------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_sum_and_zero(backend: str) -> None:
    ops = list(_square_ops(backend, "float64").values())
    total = sum(ops)
    np.testing.assert_allclose(_dense(total), sum(_dense(op) for op in ops))
    A = ops[0]
    assert 0 + A is A
    assert A + 0 is A
    assert A - 0.0 is A
    assert np.float64(0) + A is A
    np.testing.assert_allclose(_dense(0 - A), -_dense(A))


@pytest.mark.parametrize("backend", BACKENDS)
def test_arrays_and_numbers_do_not_add_to_operators(backend: str) -> None:
    A = _square_ops(backend, "float64")["Kron"]
    x = to_backend(np.eye(4), backend)
    for expr, call in {
        "x + A": lambda: x + A,
        "A + x": lambda: A + x,
        "x - A": lambda: x - A,
        "A - x": lambda: A - x,
    }.items():
        with pytest.raises(TypeError, match=r"combine two operators.*sl\.Dense\(x\)") as info:
            call()
        assert str(info.value).startswith(expr), info.value
    with pytest.raises(TypeError, match=r"c \* sl\.Identity\(4\)"):
        A + 1.5
    with pytest.raises(TypeError, match=r"c \* sl\.Identity\(4\)"):
        2 - A
    with pytest.raises(TypeError, match="takes a scalar"):
        x * A
    y = x @ A  # `array @ op` is a product
    np.testing.assert_allclose(to_numpy(y), _dense(A))
    if backend == "numpy":
        with pytest.raises(TypeError, match="combine two operators"):
            np.float64(1.0) + A


# -- keyword typos ----------------------------------------------------------------------
def test_project_names_an_unknown_option_and_the_valid_ones() -> None:
    W = np.ones((8, 8))
    cases = [
        (
            sl.Monarch,
            {"nblock": 4},
            "project(W, Monarch) takes no option nblock (did you mean nblocks?); its options: nblocks, blocks",
        ),
        (
            sl.LowRank,
            {"rnak": 2},
            "project(W, LowRank) takes no option rnak (did you mean rank?); its options: rank",
        ),
        (
            sl.Kron,
            {"factors": ((2, 2), (4, 4))},
            "project(W, Kron) takes no option factors (did you mean factor_shapes?)",
        ),
        (
            sl.TT,
            {"ms": (2, 4), "ns": (4, 2), "rank": 2},
            "project(W, TT) takes no option rank (did you mean ranks?); its options: ms, ns, ranks",
        ),
        (sl.Diagonal, {"k": 1}, "project(W, Diagonal) takes no option k; its options: none"),
        (
            sl.BlockDiag,
            {},
            "project(W, BlockDiag) needs the option nblocks=...; its options: nblocks",
        ),
        (sl.BTT, {"ms": (2, 4), "ns": (4, 2)}, "project(W, BTT) needs the option ranks=..."),
    ]
    for structure, spec, message in cases:
        with pytest.raises(TypeError) as info:
            sl.project(W, structure, **spec)
        assert str(info.value).startswith(message), info.value


def test_layer_structure_options_suggest_the_nearest() -> None:
    from structlin.nn.structures import template

    with pytest.raises(
        TypeError, match=r"takes no option nblock \(did you mean nblocks\?\); its options: nblocks"
    ):
        template("monarch", 8, 8, nblock=2)


# -- logdet of a negative determinant ------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_logdet_of_a_negative_determinant_points_to_slogdet(backend: str) -> None:
    D = sl.Diagonal(to_backend(np.array([-1.0, 2.0]), backend))
    with pytest.raises(
        ValueError,
        match=r"logdet: Diagonal of shape \(2, 2\) has a negative determinant.*sl\.slogdet",
    ):
        sl.logdet(D)
    with pytest.raises(ValueError, match="negative determinant"):
        sl.logdet(sl.Dense(D.to_dense()))
    with np.errstate(all="raise"):  # no NumPy warning either
        singular = sl.logdet(sl.Diagonal(to_backend(np.array([0.0, 2.0]), backend)))
        assert float(to_numpy(singular)) == -np.inf
        both = sl.Diagonal(to_backend(np.array([-1.0, -2.0]), backend))
        np.testing.assert_allclose(float(to_numpy(sl.logdet(both))), np.log(2))
        complex_D = sl.Diagonal(to_backend(np.array([-1.0 + 0j, 2.0]), backend))
        np.testing.assert_allclose(complex(to_numpy(sl.logdet(complex_D))), np.log(2) + 1j * np.pi)


@pytest.mark.skipif(not HAS_JAX, reason="needs JAX")
def test_logdet_under_jit_gives_nan_for_a_negative_determinant() -> None:
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda d: sl.logdet(sl.Diagonal(d)))
    assert np.isnan(float(f(jnp.array([-1.0, 2.0]))))
    np.testing.assert_allclose(float(f(jnp.array([1.0, 2.0]))), np.log(2))


# -- block_shardings' arguments ------------------------------------------------------------
@pytest.mark.skipif(not HAS_JAX, reason="needs JAX")
def test_block_shardings_checks_mesh_and_axis() -> None:
    import jax
    import jax.numpy as jnp

    op = sl.BlockDiag(jnp.ones((2, 2, 2)))
    mesh = jax.make_mesh((1,), ("blocks",))
    for bad in (None, "blocks", jax.devices()):
        with pytest.raises(TypeError, match=r"block_shardings: mesh must be a jax\.sharding\.Mesh"):
            sl.block_shardings(op, bad)
    for bad in (None, 0, ("blocks", 1)):
        with pytest.raises(TypeError, match=r"block_shardings: axis must be a mesh axis name"):
            sl.block_shardings(op, mesh, bad)
    assert sl.block_shardings(op, mesh, ["blocks"]) is not None


# -- huge sizes ---------------------------------------------------------------------------
def test_huge_dense_matrices_are_refused_before_allocating() -> None:
    huge = 2**40
    big = sl.Diagonal(np.ones(2**20))  # 8 MiB of values, an 8 TiB dense matrix
    cases = {
        "Identity": lambda: sl.Identity(huge).to_dense(),
        "Identity(dtype)": lambda: sl.to_dense(sl.Identity(huge, np.float32)),
        "Diagonal": lambda: big.to_dense(),
        "Kron": lambda: sl.Kron(big, big).to_dense(),
        # (Without alg=, a solve this large runs GMRES: no dense matrix.)
        "Sum.solve": lambda: sl.solve(
            big + sl.Dense(np.ones((2**20, 1))) @ sl.Dense(np.ones((1, 2**20))),
            np.ones(2**20),
            alg=sl.LU(),
        ),
        "diag fallback": lambda: sl.diag(
            sl.Dense(np.ones((2**20, 1))) @ sl.Dense(np.ones((1, 2**20)))
        ),
    }
    for name, call in cases.items():
        with pytest.raises(
            ValueError,
            match=r"would take [\d.]+ [PT]iB \(\d+ bytes\), more than the .* of memory of the host",
        ) as info:
            call()
        assert "STRUCTLIN_MAX_DENSE_BYTES" in str(info.value), name
    for call in (
        lambda: sl.dft(huge),
        lambda: sl.hadamard(huge),
        lambda: sl.Monarch.random(huge, huge),
    ):
        with pytest.raises(ValueError, match=r"would take .* bytes\), more than"):
            call()
    # Structured rules need no dense matrix.
    assert sl.diag(sl.Identity(2**24)).shape == (2**24,)
    assert float(sl.trace(sl.Kron(sl.Identity(2**20), sl.Identity(2**20)))) == 2.0**40


def test_the_dense_limit_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    A = sl.Kron(np.eye(2**6), np.eye(2**6))  # a 128 MiB dense matrix
    monkeypatch.setenv("STRUCTLIN_MAX_DENSE_BYTES", str(2**26))
    with pytest.raises(
        ValueError, match=r"128\.0 MiB \(134217728 bytes\), more than the 64\.0 MiB"
    ):
        A.to_dense()
    with pytest.raises(ValueError, match=r"more than the 64\.0 MiB"):
        sl.dft(2**16)
    monkeypatch.setenv("STRUCTLIN_MAX_DENSE_BYTES", str(2**27))
    assert A.to_dense().shape == (2**12, 2**12)


@pytest.mark.skipif(not HAS_TORCH, reason="needs PyTorch")
def test_meta_tensors_pass_the_value_checks() -> None:
    """A meta tensor has no values to check: shapes flow through the factorisations."""
    import torch

    A = sl.Dense(torch.empty(4, 4, device="meta"))
    assert sl.inv(A).to_dense().device.type == "meta"
    assert sl.solve(A, torch.empty(4, device="meta")).shape == (4,)
    assert sl.project(torch.empty(8, 8, device="meta"), sl.LowRank, rank=2).U.shape == (8, 2)
