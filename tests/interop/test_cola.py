"""`sl.to_cola` and `sl.from_cola`: round trips for every operator type, and CoLA's algorithms.

Skipped where CoLA (cola-ml) is not installed; CI runs the whole suite a second time in
an environment that has it (and so CoLA's fork of plum).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import structlin as sl
from conformance import BACKENDS, to_backend, to_numpy
from structlin.interop.cola import CoLAOperator
from structlin.rules import dispatch

# NumPy and PyTorch in float32, float64 and complex128; JAX, which compiles every operator
# anew (15 s per dtype here), in float64.
CASES = [(b, d) for b in BACKENDS if b != "jax" for d in ("float32", "float64", "complex128")]
CASES += [(b, "float64") for b in BACKENDS if b == "jax"]
TOL = {"float32": 2e-4, "float64": 1e-10, "complex128": 1e-10}


class Circulant(sl.LinearOperator):
    """A user-defined operator with only a `matmat` rule: `A[i, j] = c[(i - j) % n]`."""

    _children = ("c",)

    def __init__(self, c: Any):
        self._set(c=c)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.c.shape[0], self.c.shape[0])


@dispatch
def matmat(A: Circulant, X: object) -> Any:
    n = A.shape[0]
    index = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
    b = A.backend
    matrix = b.reshape(b.take(A.c, b.asarray(index.reshape(-1), device=A.device), 0), (n, n))
    return b.matmul(matrix, X)


def operators(backend: str, dtype: str) -> dict[str, sl.LinearOperator]:
    """One operator of every structlin type (and the shapes that matter: padded, nested)."""
    rng = np.random.default_rng(0)

    def arr(x: Any) -> Any:
        x = np.asarray(x)
        return to_backend(x.astype(dtype) if np.issubdtype(x.dtype, np.inexact) else x, backend)

    def a(*shape: int) -> Any:
        x = rng.standard_normal(shape)
        return arr(x + 1j * rng.standard_normal(shape) if dtype.startswith("complex") else x)

    def well_conditioned(n: int) -> Any:
        return arr(np.eye(n) + 0.2 * rng.standard_normal((n, n)) / np.sqrt(n))

    like = {"dtype": sl.Dense(a(1, 1)).dtype, "backend": backend}
    user = Circulant(a(4))
    M1 = sl.Monarch.random(16, 16, nblocks=4, rng=1, **like)
    M2 = sl.Monarch.random(16, 16, nblocks=4, rng=2, **like)
    return {
        "Dense": sl.Dense(a(4, 3)),
        "Identity": sl.Identity(5),
        "Identity typed": sl.Identity(5, **like),
        "Diagonal": sl.Diagonal(a(4)),
        "Permutation": sl.Permutation(arr(rng.permutation(5))),
        "StridePermutation": sl.Permutation.stride(2, 3),
        "BlockDiag": sl.BlockDiag(a(3, 2, 4)),
        "BlockDiagonal": sl.BlockDiag([a(2, 3), sl.Diagonal(a(2))]),
        "Sparse": sl.Sparse.from_coo(
            a(3), arr(np.array([0, 2, 2])), arr(np.array([1, 0, 1])), (3, 2)
        ),
        "Triangular": sl.Triangular(a(3, 3), lower=False),
        "Kron": sl.Kron(a(2, 3), sl.Diagonal(a(3)), sl.Identity(2)),
        "LowRank": sl.LowRank(a(5, 2), a(2, 4)),
        "Monarch": M1,
        "Monarch padded": sl.Monarch.random(10, 13, nblocks=4, rng=3, **like),
        "GeneralizedMonarch": M1 @ M2,
        "TT": sl.TT.random((2, 3), (3, 2), 2, rng=4, **like),
        "BTT": sl.BTT.random((2, 4), (4, 2), 2, rng=5, **like),
        "Product": sl.Dense(a(4, 3)) @ sl.Permutation(arr(rng.permutation(3))),
        "Sum": sl.Dense(a(4, 4)) + sl.Diagonal(a(4)) + sl.Identity(4),
        "ScalarMul": 2.5 * sl.Kron(a(2, 2), a(2, 2)),
        "ScalarMul of an array": arr(np.asarray(-0.5)) * sl.Dense(a(3, 3)),
        "Transpose": sl.Transpose(user),
        "Adjoint": sl.Adjoint(user),
        "Inverse": sl.Inverse(sl.Dense(well_conditioned(4)) + sl.Diagonal(arr(np.ones(4)))),
        "PseudoInverse": sl.PseudoInverse(sl.Dense(a(4, 3)) + sl.Dense(a(4, 3))),
        "user operator": user,
        # Annotations and eigendecompositions travel as structlin operators (for now).
        "PSD": sl.PSD(sl.Diagonal(arr(np.ones(4)))),
        "Symmetric": sl.Symmetric(sl.Diagonal(a(4))),
        "Spectral": sl.Spectral(sl.Identity(3, **like), arr(np.arange(1.0, 4.0))),
        # Operators through Monarch DFTs travel as structlin operators too.
        "Circulant": sl.circulant(a(4)),
        "Toeplitz": sl.toeplitz(a(3), a(4)),
        "Convolution": sl.convolution(a(3), 5, mode="same"),
    }


def test_every_operator_type_has_a_case() -> None:
    public = {
        obj
        for name in sl.__all__
        if isinstance(obj := getattr(sl, name), type) and issubclass(obj, sl.LinearOperator)
    }
    covered = {type(op) for op in operators("numpy", "float64").values()}
    assert public - {sl.LinearOperator} <= covered, public - covered


# CoLA operator each type converts to (None: a StructlinOperator around the operator itself).
COLA_TYPES = {
    "Dense": "Dense",
    "Identity": "Identity",
    "Identity typed": "Identity",
    "Diagonal": "Diagonal",
    "Permutation": "Permutation",
    "StridePermutation": "Permutation",
    "BlockDiag": "BlockDiag",
    "Kron": "Kronecker",
    "Product": "Product",
    "Sum": "Sum",
    "ScalarMul": "Product",
    "ScalarMul of an array": "Product",
    "Transpose": "Transpose",
    "Adjoint": "Adjoint",
}


@pytest.mark.parametrize(("backend", "dtype"), CASES)
def test_round_trip_keeps_the_matrix(backend: str, dtype: str) -> None:
    cola = pytest.importorskip("cola")
    rng = np.random.default_rng(1)
    tol = TOL[dtype]
    for name, op in operators(backend, dtype).items():
        D = to_numpy(op.to_dense()).astype(np.complex128)
        m, n = D.shape
        C = sl.to_cola(op)
        assert isinstance(C, cola.ops.LinearOperator)
        assert tuple(C.shape) == (m, n), name
        expected = COLA_TYPES.get(name)
        if expected is None:
            assert type(C).__name__ == "StructlinOperator", name
            assert C.operator is op
        else:
            assert isinstance(C, getattr(cola.ops, expected)), (name, type(C))
        # Value-free operators (a bare Identity) have no backend: CoLA gets NumPy ones.
        home = backend if op.backend is not None else "numpy"
        X = rng.standard_normal((n, 3)).astype(dtype)
        Y = rng.standard_normal((2, m)).astype(dtype)
        if dtype.startswith("complex"):
            X, Y = X + 1j * rng.standard_normal(X.shape), Y + 1j * rng.standard_normal(Y.shape)
        np.testing.assert_allclose(
            to_numpy(C @ to_backend(X, home)), D @ X, rtol=tol, atol=tol, err_msg=name
        )
        try:
            YC = to_backend(Y, home) @ C
        except NotImplementedError:
            # CoLA's NumPy functions have no linear_transpose, which its Kronecker, BlockDiag,
            # Permutation and ScalarMul need for X @ A; structlin's wrappers do not.
            assert home == "numpy", name
            assert expected is not None, name
        else:
            np.testing.assert_allclose(to_numpy(YC), Y @ D, rtol=tol, atol=tol, err_msg=name)
        np.testing.assert_allclose(to_numpy(C.to_dense()), D, rtol=tol, atol=tol, err_msg=name)

        back = sl.from_cola(C)
        if expected is None:
            assert back is op, name  # the wrapped operator itself
        else:
            assert not isinstance(back, CoLAOperator), name
        assert back.shape == (m, n)
        assert back.backend is not None, name
        assert back.backend.name == home, name
        np.testing.assert_allclose(
            to_numpy(back.to_dense()), D, rtol=tol, atol=tol, err_msg=f"{name} round trip"
        )


def test_round_trip_keeps_the_structure() -> None:
    pytest.importorskip("cola")
    ops = operators("numpy", "float64")
    for name, cls in [
        ("Dense", sl.Dense),
        ("Diagonal", sl.Diagonal),
        ("Identity typed", sl.Identity),
        ("Permutation", sl.Permutation),
        ("BlockDiag", sl.BlockDiag),
        ("Kron", sl.Kron),
        ("Product", sl.Product),
        ("Sum", sl.Sum),
        ("ScalarMul", sl.ScalarMul),
    ]:
        assert type(sl.from_cola(sl.to_cola(ops[name]))) is cls, name
    kron = sl.from_cola(sl.to_cola(ops["Kron"]))
    assert [type(f) for f in kron.factors] == [sl.Dense, sl.Diagonal, sl.Identity]
    scaled = sl.from_cola(sl.to_cola(ops["ScalarMul"]))
    assert float(scaled.scalar) == 2.5
    assert type(scaled.op) is sl.Kron
    # The arrays are shared, not copied.
    assert sl.from_cola(sl.to_cola(ops["Dense"])).array is ops["Dense"].array


def _spd_monarch(backend: str, n: int = 64) -> sl.LinearOperator:
    M = sl.Monarch.random(n, n, nblocks=8, rng=0, backend=backend, dtype=np.float64)
    return M @ M.T + sl.Identity(n)  # a Sum of a Monarch^2 and the identity


@pytest.mark.parametrize("backend", BACKENDS)
def test_cola_cg_on_a_monarch_system(backend: str) -> None:
    cola = pytest.importorskip("cola")
    S = _spd_monarch(backend)
    D = to_numpy(S.to_dense())
    b = np.random.default_rng(2).standard_normal(64)
    A = cola.PSD(sl.to_cola(S))
    x = cola.inv(A, alg=cola.CG(tol=1e-12, max_iters=500)) @ to_backend(b, backend)
    np.testing.assert_allclose(to_numpy(x), np.linalg.solve(D, b), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cola_lanczos_on_a_btt_operator(backend: str) -> None:
    cola = pytest.importorskip("cola")
    B = sl.BTT.random((4, 8), (8, 4), 2, rng=3, backend=backend, dtype=np.float64)
    S = B.T @ B  # symmetric positive semi-definite, 32 x 32
    D = to_numpy(S.to_dense())
    start = to_backend(np.random.default_rng(4).standard_normal(32), backend)
    values, _ = cola.eig(
        cola.SelfAdjoint(sl.to_cola(S)),
        k=3,
        which="LM",
        alg=cola.Lanczos(start_vector=start, max_iters=32, tol=1e-12),
    )
    np.testing.assert_allclose(
        np.sort(to_numpy(values).real), np.linalg.eigvalsh(D)[-3:], rtol=1e-6
    )


def test_cola_cg_gradients_reach_the_structlin_parameters() -> None:
    cola = pytest.importorskip("cola")
    torch = pytest.importorskip("torch")
    M = sl.Monarch.random(16, 16, nblocks=4, rng=0, backend="torch", dtype=torch.float64)
    b1 = M.blkdiag1.clone().requires_grad_()
    S = sl.Monarch(b1, M.blkdiag2) @ sl.Monarch(b1, M.blkdiag2).T + sl.Identity(16)
    b = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = cola.inv(cola.PSD(sl.to_cola(S)), alg=cola.CG(tol=1e-13, max_iters=200)) @ b
    (grad,) = torch.autograd.grad(x.square().sum(), b1)
    b1_ref = M.blkdiag1.clone().requires_grad_()
    S_ref = sl.Monarch(b1_ref, M.blkdiag2) @ sl.Monarch(b1_ref, M.blkdiag2).T + sl.Identity(16)
    (expected,) = torch.autograd.grad(
        torch.linalg.solve(S_ref.to_dense(), b).square().sum(), b1_ref
    )
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)


def test_cola_dispatch_sees_the_structure() -> None:
    cola = pytest.importorskip("cola")
    rng = np.random.default_rng(5)
    A, B = np.eye(3) + 0.1 * rng.standard_normal((3, 3)), np.diag([1.0, 2.0])
    C = sl.to_cola(sl.Kron(A, B))
    inverse = cola.inv(C)
    assert isinstance(inverse, cola.ops.Kronecker)  # CoLA's Kronecker rule, not a dense solve
    np.testing.assert_allclose(inverse.to_dense(), np.linalg.inv(np.kron(A, B)), rtol=1e-10)


def test_arrays_of_another_library() -> None:
    pytest.importorskip("cola")
    jnp = pytest.importorskip("jax.numpy")
    pytest.importorskip("torch")
    M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
    x = np.arange(16.0)
    # CoLA's JAX functions may hand a NumPy operator JAX arrays: computed in NumPy, given back.
    y = sl.to_cola(M) @ jnp.asarray(x)
    assert isinstance(y, type(jnp.zeros(1)))
    np.testing.assert_allclose(np.asarray(y), M @ x, rtol=1e-12)
    with pytest.raises(TypeError, match=r"torch operator Monarch.*op.to\(backend='numpy'\)"):
        sl.to_cola(M.to(backend="torch")) @ x


# -- CoLA operators structlin has no counterpart for -----------------------------------------------
def test_from_cola_wraps_what_structlin_has_no_structure_for() -> None:
    cola = pytest.importorskip("cola")
    rng = np.random.default_rng(6)
    lower, diag, upper = rng.standard_normal(5), 4 + rng.standard_normal(6), rng.standard_normal(5)
    C = cola.ops.Tridiagonal(lower, diag, upper)
    D = np.diag(diag) + np.diag(lower, -1) + np.diag(upper, 1)
    A = sl.from_cola(C)
    assert isinstance(A, CoLAOperator)
    assert (A.shape, A.backend.name, A.dtype) == ((6, 6), "numpy", np.float64)
    x, Y = rng.standard_normal(6), rng.standard_normal((2, 6))
    np.testing.assert_allclose(A @ x, D @ x, rtol=1e-12)
    np.testing.assert_allclose(A.to_dense(), D, rtol=1e-12)
    np.testing.assert_allclose(sl.solve(A, x), np.linalg.solve(D, x), rtol=1e-10)
    np.testing.assert_allclose(sl.logdet(A @ A.T), np.linalg.slogdet(D @ D.T)[1], rtol=1e-10)
    assert isinstance(A.T, CoLAOperator)
    # Inside structlin expressions, and back out again.
    K = sl.Kron(A, np.eye(2))
    np.testing.assert_allclose(K.to_dense(), np.kron(D, np.eye(2)), rtol=1e-12)
    assert sl.to_cola(A) is C
    assert A.to(device=None) is A
    with pytest.raises(TypeError, match=r"cannot change backend or dtype"):
        A.to(dtype=np.float32)
    del Y


def test_from_cola_block_diagonals() -> None:
    cola = pytest.importorskip("cola")
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    equal = cola.ops.BlockDiag(cola.ops.Dense(a), cola.ops.Dense(b), multiplicities=[2, 1])
    B = sl.from_cola(equal)
    assert isinstance(B, sl.BlockDiag)
    assert B.blocks.shape == (3, 2, 3)
    np.testing.assert_allclose(B.to_dense(), equal.to_dense(), rtol=1e-12)
    unequal = cola.ops.BlockDiag(cola.ops.Dense(a), cola.ops.Dense(np.eye(2)))
    U = sl.from_cola(unequal)
    assert isinstance(U, CoLAOperator)
    np.testing.assert_allclose(U.to_dense(), unequal.to_dense(), rtol=1e-12)


def test_from_cola_structured_transposes_and_scalars() -> None:
    cola = pytest.importorskip("cola")
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 2))
    K = cola.ops.Kronecker(cola.ops.Dense(a), cola.ops.Dense(b))
    T = sl.from_cola(K.T)
    assert isinstance(T, sl.Kron)  # (A ⊗ B)^T = A^T ⊗ B^T, not a lazy transpose
    np.testing.assert_allclose(T.to_dense(), np.kron(a, b).T, rtol=1e-12)
    scaled = sl.from_cola(3.0 * cola.ops.Dense(a))
    assert isinstance(scaled, sl.ScalarMul)
    np.testing.assert_allclose(scaled.to_dense(), 3 * a, rtol=1e-12)
    alone = sl.from_cola(cola.ops.ScalarMul(2.0, (3, 3), np.float64))
    np.testing.assert_allclose(alone.to_dense(), 2 * np.eye(3), rtol=1e-12)


# -- errors ---------------------------------------------------------------------------------------
def test_wrong_arguments() -> None:
    pytest.importorskip("cola")
    with pytest.raises(TypeError, match=r"to_cola needs a structlin operator, got ndarray"):
        sl.to_cola(np.eye(2))
    with pytest.raises(TypeError, match=r"from_cola needs a CoLA LinearOperator, got structlin"):
        sl.from_cola(sl.Dense(np.eye(2)))


@pytest.mark.parametrize("convert", [sl.to_cola, sl.from_cola], ids=["to_cola", "from_cola"])
def test_missing_cola_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, convert: Callable[[Any], Any]
) -> None:
    monkeypatch.setitem(sys.modules, "cola", None)  # `import cola` fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'structlin\[cola\]'"):
        convert(sl.Dense(np.eye(2)))
